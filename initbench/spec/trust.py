"""The trust model: what a suite file may make initbench import, read and write.

A suite or a method plugin is code: running a stranger's is like running their script
(README, "Trust model").  These checks keep an honest suite from reaching outside its
lane by accident and make a hostile one visible; they are not a sandbox.

- **Names** (suite, task, method) become path components of results and caches, so each
  must be one safe component: not empty, no ``/`` or ``\\``, not ``.`` or ``..``, no
  control characters (:func:`name_problem`).
- **Generators and formatters** (``data.generator: module:function``; a split source's
  ``formatter`` that is not a built-in name) are imported only from the suites' own package
  ``initbench_tasks`` or from a module the user allow-lists in ``$INITBENCH_ALLOW_MODULES``
  (comma-separated module names; a listed module allows its submodules too)
  (:func:`generator_problem`, :func:`load_function`).
- **lm-eval task files** (``lm_eval_task``, a bare name) come only from ``tasks/lm_eval``,
  from the suite's own ``lm_eval_include_path`` folder when that folder is trusted, or from
  folders the user names in ``$INITBENCH_LM_EVAL_PATH`` (``os.pathsep``-separated; a named
  folder trusts its subfolders) (:func:`lm_eval_task_path`, :func:`suite_lm_eval_dir`); their
  ``!function`` and ``include`` entries are trusted because the folder is.
- **Contributed results** (``initbench validate --contributed``) are checked against
  built-in suites only, with no user allow-list in force (:func:`contributed_problems`).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initbench.spec.suite_base import SuiteError, beside_suite, builtin_suite_dir

if TYPE_CHECKING:
    from initbench.spec.suite import Suite

ENV_ALLOW_MODULES = "INITBENCH_ALLOW_MODULES"
ENV_LM_EVAL_PATH = "INITBENCH_LM_EVAL_PATH"
OWN_PACKAGE = "initbench_tasks"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def name_problem(value: str) -> str:
    """Why ``value`` is not a safe single path component ("" if it is)."""
    if not value or not value.strip():
        return "is empty"
    if value in (".", ".."):
        return f"is {value!r}"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if _CONTROL.search(value):
        return "contains a control character"
    if len(value.encode()) > 200:
        return "is longer than 200 bytes"
    return ""


def check_name(value: str, where: str, key: str) -> None:
    """Raise ``SuiteError`` naming ``where`` and ``key`` unless ``value`` is a safe name."""
    problem = name_problem(value)
    if problem:
        raise SuiteError(
            f"{where}: key '{key}' ({value!r}) {problem}; names become folder names, so use "
            "letters, digits, '-', '_' or '.' (not a path)"
        )


def allowed_modules() -> list[str]:
    """The generator modules the user allow-lists in ``$INITBENCH_ALLOW_MODULES``."""
    return [m.strip() for m in os.environ.get(ENV_ALLOW_MODULES, "").split(",") if m.strip()]


def generator_problem(generator: str, *, allow: list[str] | None = None) -> str:
    """Why ``module:function`` may not be imported ("" if it may).  ``allow``: the extra modules
    trusted (default: ``$INITBENCH_ALLOW_MODULES``; ``[]`` trusts ``initbench_tasks`` alone)."""
    module, sep, function = generator.partition(":")
    if not sep or not _MODULE.match(module) or not _FUNCTION.match(function):
        return "must be 'module:function' (a dotted module name and a function name)"
    trusted = [OWN_PACKAGE, *(allowed_modules() if allow is None else allow)]
    if any(module == t or module.startswith(t + ".") for t in trusted):
        return ""
    return (
        f"imports {module!r}, outside the suites' own package {OWN_PACKAGE!r}; a generator runs as code, "
        f"so allow-list its module to run it: {ENV_ALLOW_MODULES}={module}"
    )


def load_function(target: str, what: str) -> Callable[..., Any]:
    """The function ``module:function`` names, imported only if trusted (:func:`generator_problem`);
    a ``SuiteError`` starting with ``what`` (the file and key that named it) otherwise."""
    problem = generator_problem(target)
    if problem:
        raise SuiteError(f"{what} ({target!r}) {problem}")
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except Exception as err:  # ImportError, AttributeError, or whatever the module raises on import
        raise SuiteError(f"{what}: cannot import {target!r}: {type(err).__name__}: {err}") from None
    if not callable(function):
        raise SuiteError(f"{what}: {target!r} is not a function")
    return function


def lm_eval_dirs(*, user: bool = True, suite_folder: Path | None = None) -> list[Path]:
    """Where lm-eval task YAMLs are looked up, in order: ``tasks/lm_eval``, the suite's own folder
    (``suite_folder``, :func:`suite_lm_eval_dir`), then ``$INITBENCH_LM_EVAL_PATH``."""
    dirs = [builtin_suite_dir() / "lm_eval"] + ([suite_folder] if suite_folder is not None else [])
    if user:
        dirs += [Path(p).expanduser() for p in os.environ.get(ENV_LM_EVAL_PATH, "").split(os.pathsep) if p.strip()]
    return dirs


def lm_eval_folder_problem(folder: Path, *, user: bool = True) -> str:
    """Why initbench may not load task YAMLs from ``folder`` ("" if it may): it must be inside the suites'
    own folder ``tasks/`` or inside a folder of ``$INITBENCH_LM_EVAL_PATH`` (``user``; a listed folder
    trusts its subfolders, as a listed module does its submodules)."""
    folder = folder.resolve()
    trusted = [builtin_suite_dir()] + lm_eval_dirs(user=user)[1:]
    if any(folder == t or t in folder.parents for t in (d.resolve() for d in trusted)):
        return ""
    fix = f"trust it: {ENV_LM_EVAL_PATH}={folder}" if user else "only tasks/ is trusted for contributed results"
    return (
        f"is {folder}, a folder initbench does not trust: a task YAML runs code (`!function`), so it is loaded "
        f"only from tasks/ or a folder you name in {ENV_LM_EVAL_PATH}; {fix}"
    )


def suite_lm_eval_dir(suite: Suite, *, user: bool = True) -> Path | None:
    """The suite's own folder of lm-eval task YAMLs (its ``lm_eval_include_path``, relative to the suite
    file, like lm-eval's ``--include_path``), or None if it names none; a ``SuiteError`` naming the file,
    the key and the fix unless that folder is trusted (:func:`lm_eval_folder_problem`)."""
    if not suite.lm_eval_include_path:
        return None
    folder = beside_suite(suite.lm_eval_include_path, suite.path).resolve()
    problem = lm_eval_folder_problem(folder, user=user)
    if problem:
        raise SuiteError(f"{suite.path}: key 'lm_eval_include_path' ({suite.lm_eval_include_path!r}) {problem}")
    return folder


def lm_eval_task_path(name: str, *, user: bool = True, suite_folder: Path | None = None) -> Path:
    """The task YAML ``<name>.yaml`` in the first trusted folder holding it (:func:`lm_eval_dirs`);
    ``SuiteError`` otherwise, or if the suite's own folder holds a task of a built-in task's name."""
    problem = name_problem(name)
    if problem:
        raise SuiteError(
            f"lm-eval task {name!r} {problem}; give the bare task name (the YAML's file name "
            f"without .yaml) and put the file in tasks/lm_eval or a folder in {ENV_LM_EVAL_PATH}"
        )
    dirs = lm_eval_dirs(user=user, suite_folder=suite_folder)
    found = [folder / f"{name}.yaml" for folder in dirs if (folder / f"{name}.yaml").is_file()]
    builtin = dirs[0] / f"{name}.yaml"
    own = suite_folder / f"{name}.yaml" if suite_folder is not None else None
    if own in found and builtin in found:
        raise SuiteError(
            f"lm-eval task {name!r} is both built in ({builtin}) and in the suite's own folder ({own}); "
            "a name must mean one task, so rename yours (its file and its task: key)"
        )
    if found:
        return found[0]
    raise SuiteError(
        f"no lm-eval task YAML {name}.yaml in {', '.join(map(str, dirs))}; add it to tasks/lm_eval, "
        f"the suite's lm_eval_include_path folder, or a folder named in {ENV_LM_EVAL_PATH}"
    )


def contributed_problems(suite: Suite) -> list[str]:
    """What ``validate --contributed`` refuses in a suite: unsafe names, a generator outside
    ``initbench_tasks``, an lm-eval task outside ``tasks/lm_eval`` or a task folder outside ``tasks/``
    (no user allow-list applies)."""
    problems = []
    named = [("name", suite.name)] + [(f"tasks[{i}].name", t.name) for i, t in enumerate(suite.tasks)]
    problems += [f"{suite.path}: key '{key}' ({value!r}) {p}" for key, value in named if (p := name_problem(value))]
    try:
        own = suite_lm_eval_dir(suite, user=False)
    except SuiteError as err:
        problems.append(str(err))
        own = None
    for i, task in enumerate(suite.tasks):
        if task.data.generator and (p := generator_problem(task.data.generator, allow=[])):
            problems.append(f"{suite.path}: key 'tasks[{i}].data.generator' ({task.data.generator!r}) {p}")
        try:
            lm_eval_task_path(task.lm_eval_task, user=False, suite_folder=own)
        except SuiteError as err:
            problems.append(f"{suite.path}: key 'tasks[{i}].lm_eval_task': {err}")
    return problems
