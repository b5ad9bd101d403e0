"""The package layout shows the flow: each stage of ``initbench/`` imports only from earlier stages.

Stages in pipeline order (the packages' own docstrings say what each holds); an import anywhere in a
module, at its top or inside a function, counts.  The top-level modules (``api``, ``testing``,
``cli``, ``__main__``) sit above every stage.
"""

import ast
from pathlib import Path

import initbench

STAGES = ["core", "spec", "inputs", "method", "store", "run", "selection", "sweeps", "board"]
ROOT = Path(initbench.__file__).parent


def _imported_stages(path: Path) -> set[str]:
    """The stages a module imports from: ``from initbench.<stage>... import`` and ``import initbench.<stage>...``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            if node.module == "initbench":
                modules = [f"initbench.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "initbench" and len(parts) > 1 and not parts[1].startswith("__"):
                found.add(parts[1])
    return found


def test_every_module_lives_in_a_stage():
    top_level = {p.name for p in ROOT.glob("*.py")}
    assert top_level == {"__init__.py", "__main__.py", "api.py", "cli.py", "testing.py"}, (
        "a new module goes into the package of its stage, not initbench/ itself"
    )
    assert sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(STAGES)


def test_no_stage_imports_a_later_one():
    backwards = []
    for rank, stage in enumerate(STAGES):
        for path in sorted((ROOT / stage).glob("*.py")):
            for target in _imported_stages(path):
                if target not in STAGES:
                    backwards.append(f"{path.relative_to(ROOT)} imports initbench.{target} (top-level)")
                elif STAGES.index(target) > rank:
                    backwards.append(f"{path.relative_to(ROOT)} imports initbench.{target} (a later stage)")
    assert not backwards, "\n".join(backwards)


def test_the_layout_test_sees_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from initbench.board import stats\ndef f():\n    import initbench.sweeps.sweep\n")
    assert _imported_stages(module) == {"board", "sweeps"}


def test_the_wheel_ships_every_stage():
    """setuptools lists packages explicitly (pyproject.toml): a stage missing there is missing from the wheel."""
    import tomllib

    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert {f"initbench.{stage}" for stage in STAGES} <= set(pyproject["tool"]["setuptools"]["packages"])
