"""Reading results never imports torch (issue 15 item 4): `status`, `leaderboard` and `validate`
answer in a second on a machine, or a CI job, that has no use for a deep-learning stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._trees import fixed_tree


def _torch_loaded_after(code: str) -> bool:
    probe = f"{code}\nimport sys\nprint('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return out.stdout.strip().splitlines()[-1] == "True"


def test_reading_modules_do_not_import_torch():
    assert not _torch_loaded_after(
        "import initbench.board.stats, initbench.store.results, initbench.selection.status, initbench.board.leaderboard"
    )


def test_status_leaderboard_and_validate_do_not_import_torch(tmp_path):
    tree = fixed_tree(tmp_path / "runs")
    for command in (["status", str(tree)], ["leaderboard", str(tree)], ["validate", str(tree)]):
        assert not _torch_loaded_after(f"from initbench.cli import main\nmain({command!r})"), command


def test_the_plugin_api_is_still_importable_from_the_package():
    assert _torch_loaded_after("from initbench import InitMethod, LayerwiseInit")


def _imports(lazy: bool) -> dict[str, set[str]]:
    """initbench module -> the initbench modules it imports (``lazy``: inside functions too; never
    the ``if TYPE_CHECKING:`` blocks, which do not run)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "initbench"
    facade = package / "api.py"  # initbench.api re-exports initbench.method.api: the node "api" is the latter
    paths = {p.stem: p for p in package.rglob("*.py") if p.stem not in ("__init__", "__main__") and p != facade}
    graph: dict[str, set[str]] = {}

    def visit(node: ast.AST, in_function: bool, found: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and (lazy or not in_function):
                parts = child.module.split(".")
                if parts[0] == "initbench" and parts[-1] in paths:  # from initbench.<stage>.<module> import name
                    found.add(parts[-1])
                elif parts[0] == "initbench":  # from initbench[.<stage>] import <module>
                    found.update(a.name for a in child.names if a.name in paths)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)), found)

    for stem, path in paths.items():
        found: set[str] = set()
        visit(ast.parse(path.read_text()), False, found)
        graph[stem] = found - {stem}
    return graph


def test_module_level_imports_have_no_cycle():
    graph, done, active = _imports(lazy=False), set(), []

    def walk(module: str) -> None:
        assert module not in active, f"import cycle: {' -> '.join(active[active.index(module) :] + [module])}"
        if module in done:
            return
        active.append(module)
        for imported in sorted(graph[module]):
            walk(imported)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        walk(module)


def test_the_four_named_cycles_are_gone_even_through_lazy_imports():
    graph = _imports(lazy=True)
    for a, b in (("adapters", "api"), ("api", "calibration"), ("datasets_io", "suite"), ("executors", "sweep")):
        assert not (b in graph[a] and a in graph[b]), f"{a} and {b} import each other"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), list(graph[start])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(graph[current])
    return seen


def test_a_run_and_the_protocol_import_one_way_even_through_lazy_imports():
    """Issue 15 item 3: the modules of a run (harness and the steps it calls) and of the protocol
    import only modules before them, lazy imports included: none of them can reach itself."""
    graph = _imports(lazy=True)
    run = (
        "harness",
        "lending",
        "attach",
        "fingerprints",
        "run_record",
        "execution",
        "provenance",
        "train",
        "init_cache",
        "train_cache",
        "forgetting",
        "export",
        "samples",
        "results",
        "curvature_table",
    )
    protocol = ("protocol", "counted", "contributed", "tuning_grid", "lr_prior", "status", "sweep")
    for module in run + protocol:
        back = sorted(d for d in graph[module] if module in _reachable(graph, d))
        assert not back, f"{module} imports {back}, which import {module} back"


def test_the_suite_loader_its_reader_and_the_trust_model_form_no_cycle_even_lazily():
    graph = _imports(lazy=True)
    for module in ("suite_file", "trust", "suite_base"):
        assert "suite" not in _reachable(graph, module), (
            f"{module} imports initbench.spec.suite back (directly or through others)"
        )
