"""CONTRIBUTING.md's plugin contract against the code: the signatures in its Python code blocks and
the calls it writes inline (`build_optimizer(model, lr, spec)`) must be what the harness calls, so
a plugin written from the docs alone runs."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

import pytest
from conftest import REPO

from initbench.api import InitContext, InitMethod, LayerInit, LayerView, LayerwiseInit, LoraSettings
from initbench.method.calibration import Calibrator
from initbench.spec.budget import OptimizerSpec

CONTRIBUTING = REPO / "CONTRIBUTING.md"
#: the classes a plugin meets, as CONTRIBUTING names them
CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (InitMethod, LayerwiseInit, LayerInit, InitContext, LayerView, Calibrator, LoraSettings, OptimizerSpec)
}
#: classes whose every public method and class attribute must be documented (not just the documented ones exist)
COMPLETE = ("InitMethod", "LayerwiseInit", "LayerInit", "InitContext", "LayerView", "Calibrator")
#: what an inline call's receiver names in CONTRIBUTING's prose (``ctx.set_lora(...)``, ``layer.set_lora(...)``)
RECEIVERS = {"ctx": "InitContext", "layer": "LayerView", "calibration": "Calibrator", "method": "InitMethod"}


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _documented_classes(text: str) -> dict[str, ast.ClassDef]:
    """Every class of ``CLASSES`` that a Python code block of ``text`` defines, by name."""
    found = {}
    for block in _code_blocks(text):
        for node in ast.parse(block).body:
            if isinstance(node, ast.ClassDef) and node.name in CLASSES:
                assert node.name not in found, f"class {node.name} is documented twice"
                found[node.name] = node
    return found


def _norm(annotation: str | ast.expr | None) -> str | None:
    """An annotation as one canonical string (the code's are strings: ``from __future__ import annotations``)."""
    if annotation is None or annotation is inspect.Parameter.empty:
        return None
    return ast.unparse(annotation if isinstance(annotation, ast.expr) else ast.parse(annotation, mode="eval"))


def _documented_signature(node: ast.FunctionDef) -> list[tuple[str, str, str | None, str | None]]:
    """(name, kind, annotation, default) of each parameter, and ("return", "", annotation, None)."""
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
    params = [(a.arg, "positional", _norm(a.annotation), d) for a, d in zip(positional, defaults)]
    params += [
        (a.arg, "keyword", _norm(a.annotation), None if d is None else ast.unparse(d))
        for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    return params + [("return", "", _norm(node.returns), None)]


def _code_signature(function) -> list[tuple[str, str, str | None, str | None]]:
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
    }
    signature = inspect.signature(function)
    params = [
        (
            p.name,
            kinds.get(p.kind, str(p.kind)),
            _norm(p.annotation),
            None if p.default is inspect.Parameter.empty else _norm(repr(p.default)),
        )
        for p in signature.parameters.values()
    ]
    return params + [("return", "", _norm(signature.return_annotation), None)]


def _function(cls: type, name: str, node: ast.FunctionDef):
    """The code's function behind a documented ``def`` (a property's getter, a staticmethod's function)."""
    assert name in vars(cls), f"CONTRIBUTING documents {cls.__name__}.{name}, which {cls.__name__} does not define"
    attr = vars(cls)[name]
    decorators = {ast.unparse(d) for d in node.decorator_list}
    assert isinstance(attr, property) == ("property" in decorators), f"{cls.__name__}.{name}: property or not"
    assert isinstance(attr, staticmethod) == ("staticmethod" in decorators), (
        f"{cls.__name__}.{name}: staticmethod or not"
    )
    return attr.fget if isinstance(attr, property) else attr.__func__ if isinstance(attr, staticmethod) else attr


def _declared_attributes(cls: type) -> dict[str, str | None]:
    """Attribute name -> annotation of every attribute ``cls`` declares: class-level annotations along its MRO
    and ``self.x = ...`` in ``__init__`` (annotation None when the code gives none)."""
    declared: dict[str, str | None] = {}
    for base in reversed(cls.__mro__):
        declared.update({k: _norm(v) for k, v in vars(base).get("__annotations__", {}).items()})
    init = vars(cls).get("__init__")
    if init is not None and not dataclasses.is_dataclass(cls):
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    declared.setdefault(t.attr, _norm(node.annotation) if isinstance(node, ast.AnnAssign) else None)
    return declared


def contract_problems(text: str) -> list[str]:
    """Every way the code blocks of ``text`` (CONTRIBUTING's) differ from the plugin API; [] when they agree."""
    problems = []
    documented = _documented_classes(text)
    for name in COMPLETE:
        if name not in documented:
            problems.append(f"no code block documents class {name}")
    for name, node in documented.items():
        cls = CLASSES[name]
        functions = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        attributes = {n.target.id: n for n in node.body if isinstance(n, ast.AnnAssign)}
        for fname, fnode in functions.items():
            try:
                code = _code_signature(_function(cls, fname, fnode))
            except AssertionError as err:
                problems.append(str(err))
                continue
            if _documented_signature(fnode) != code:
                problems.append(
                    f"{name}.{fname}: documented {ast.unparse(fnode.args)} -> {_norm(fnode.returns)}, "
                    f"the code has {inspect.signature(_function(cls, fname, fnode))}"
                )
        declared = _declared_attributes(cls)
        for aname, anode in attributes.items():
            if aname not in declared:
                problems.append(f"CONTRIBUTING documents {name}.{aname}, which {name} does not have")
                continue
            if declared[aname] is not None and declared[aname] != _norm(anode.annotation):
                problems.append(
                    f"{name}.{aname}: documented as {_norm(anode.annotation)}, the code has {declared[aname]}"
                )
            if anode.value is not None and getattr(cls, aname, None) != ast.literal_eval(anode.value):
                problems.append(
                    f"{name}.{aname}: documented default {ast.unparse(anode.value)}, "
                    f"the code has {getattr(cls, aname, None)!r}"
                )
        if name in COMPLETE:
            public = {k for k, v in vars(cls).items() if not k.startswith("_")}
            for missing in sorted(public - set(functions) - set(attributes)):
                problems.append(f"{name}.{missing} is not in CONTRIBUTING's code block")
    problems += _override_problems(text)
    return problems


def _override_problems(text: str) -> list[str]:
    """A documented example subclass (``class ActivationPCA(LayerwiseInit)``) must override hooks with their
    parameters' names, in order."""
    problems = []
    for block in _code_blocks(text):
        for node in ast.parse(block).body:
            bases = [CLASSES[b.id] for b in getattr(node, "bases", []) if isinstance(b, ast.Name) and b.id in CLASSES]
            if not isinstance(node, ast.ClassDef) or node.name in CLASSES or not bases:
                continue
            for fnode in (n for n in node.body if isinstance(n, ast.FunctionDef)):
                hook = getattr(bases[0], fnode.name, None)
                if hook is None or fnode.name.startswith("_"):
                    continue
                documented = [a.arg for a in fnode.args.posonlyargs + fnode.args.args]
                expected = list(inspect.signature(hook).parameters)
                if documented != expected:
                    problems.append(
                        f"{node.name}.{fnode.name}({', '.join(documented)}): {bases[0].__name__}'s "
                        f"hook takes ({', '.join(expected)})"
                    )
    return problems


def _inline_calls(text: str) -> list[tuple[str, str, list[str]]]:
    """(receiver, name, argument names) of every call written in an inline code span outside code blocks:
    ``ctx.set_lora(name, layer, A, B)`` -> ("ctx", "set_lora", ["name", "layer", "A", "B"]) (the receiver is the
    last name before the dot, "" for none); a ``key=value`` argument gives ``key``."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    calls = []
    for span in re.findall(r"`([^`]+)`", prose.replace("\n", " ")):
        for receiver, name, args in re.findall(r"(?:(\w+)\.)?(\w+)\(([^()]*)\)", span):
            names = [a.split("=")[0].strip() for a in args.split(",") if a.strip()]
            calls.append((receiver, name, names))
    return calls


def _signatures() -> dict[str, dict[str, list[inspect.Parameter]]]:
    """Class name -> public method name -> its parameters (without self), for the ``COMPLETE`` classes."""
    out: dict[str, dict[str, list[inspect.Parameter]]] = {}
    for name in COMPLETE:
        for fname, attr in vars(CLASSES[name]).items():
            function = getattr(attr, "__func__", attr)
            if not fname.startswith("_") and callable(function) and not isinstance(function, type):
                params = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
                out.setdefault(name, {})[fname] = params
    return out


def inline_problems(text: str) -> list[str]:
    """Every inline call of a documented hook or context method whose arguments are not its parameters: each one
    named must be a parameter, in order for positional ones, and every parameter without a default must appear.
    A call on a known receiver (``ctx.``, ``layer.``, ``calibration.``) is held to that class's method; one
    without a receiver to any documented class's method of that name; others (``adapters.freeze``) are not held."""
    signatures = _signatures()
    problems = []
    for receiver, fname, args in _inline_calls(text):
        if receiver and receiver not in RECEIVERS:
            continue
        classes = [RECEIVERS[receiver]] if receiver else list(signatures)
        candidates = [signatures[c][fname] for c in classes if fname in signatures.get(c, {})]
        if not candidates:
            continue

        def fits(params, args):
            names = [p.name for p in params]
            required = [p.name for p in params if p.default is inspect.Parameter.empty]
            return args == names[: len(args)] and set(required) <= set(args)

        if not any(fits(params, args) for params in candidates):
            expected = " or ".join(f"({', '.join(p.name for p in params)})" for params in candidates)
            problems.append(
                f"`{receiver + '.' if receiver else ''}{fname}({', '.join(args)})`: the code's "
                f"parameters are {expected}"
            )
    return problems


def test_contributing_code_blocks_match_the_plugin_api():
    assert contract_problems(CONTRIBUTING.read_text()) == []


@pytest.mark.parametrize("doc", ["CONTRIBUTING.md", "README.md"])
def test_inline_calls_of_hooks_match_the_plugin_api(doc):
    text = (REPO / doc).read_text()
    assert any(name == "initialize" for _, name, _ in _inline_calls(text))  # the check sees the hooks' calls
    assert inline_problems(text) == []


@pytest.mark.parametrize(
    "old, new",
    [
        ("`build_optimizer(model, lr, spec)`", "`build_optimizer(model, lr)`"),  # issue 15: the docs' old signature
        ("self, model: torch.nn.Module, lr: float, spec: OptimizerSpec", "self, model: torch.nn.Module, lr: float"),
        (
            "def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None: ...  # calls init_layer",
            "def initialize(self, model: torch.nn.Module) -> None: ...  # calls init_layer",
        ),
        ("    def charge(self, examples: int, tokens: int, backward: bool = False) -> None: ...\n", ""),
        ("peft_init: ClassVar[bool | str] = True", 'peft_init: ClassVar[bool | str] = "pissa"'),
        ("    statistic: ClassVar[Statistic]", "    stats: ClassVar[Statistic]"),
        ("def init_layer(self, weight, rank, scale, stats, generator):", "def init_layer(self, weight, rank, stats):"),
        # issue 15: the layer view, LayerwiseInit's widening and encode
        ("`layer.set_lora(A, B)`", "`layer.set_lora(name, A, B)`"),
        ("`ctx.set_lora(name, layer, A, B)`", "`ctx.set_lora(A, B)`"),
        ("def set_middle(self, M: torch.Tensor, trainable: bool = True)", "def set_middle(self, M: torch.Tensor)"),
        ('    def freeze(self, part: str) -> None: ...  # "A", "B" or "M"\n', ""),
        (
            'trained_parts: ClassVar[tuple[str, ...]] = ("A", "B", "M")',
            'trained_parts: ClassVar[tuple[str, ...]] = ("A", "B")',
        ),
        ("    seed_torch_rng: ClassVar[bool] = False", "    seed_torch_rng: ClassVar[bool] = True"),
        (
            "    middle: torch.Tensor | None = None  # (rank, rank)",
            "    mid: torch.Tensor | None = None  # (rank, rank)",
        ),
        ("    budget: Budget\n", "    budget: Budget | None\n"),
        ("self, prompts: Sequence[str | list[int]], backward", "self, texts: Sequence[str], backward"),
        ("examples: int | None = None, labels_only: bool = False", "examples: int | None = None, mask: bool = False"),
    ],
)
def test_the_checks_catch_a_drifted_contributing(old, new):
    text = CONTRIBUTING.read_text()
    assert old in text
    drifted = text.replace(old, new)
    assert contract_problems(drifted) + inline_problems(drifted), f"not caught: {new!r}"


def test_baselines_use_the_layer_view_not_peft_internals():
    """Issue 15: no built-in method reads peft's per-adapter dicts or the adapter's name itself (the view has them)."""
    internals = re.compile(r"\.r\[|\.scaling\[|active_adapter|\.lora_A\[|\.lora_B\[")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((REPO / "baselines").glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if internals.search(line)
    ]
    assert found == []
