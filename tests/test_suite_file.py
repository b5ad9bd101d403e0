"""Issue 18, finding 6: the suite reader is bounded (alias bomb, size, encoding, duplicate keys)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from initbench.spec.suite import SuiteError, builtin_suite_dir, load_suite
from initbench.spec.suite_file import MAX_BYTES

SMOKE = (builtin_suite_dir() / "smoke.yaml").read_text()

BOMB = SMOKE.replace(
    "args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}",
    textwrap.dedent("""\
    args:
            a: &a [x, x, x, x, x, x, x, x, x]
            b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
            c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
            d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
            e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
            f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
            g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
            h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
            i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]""").rstrip(),
    1,
)


def _load_in_child(path, timeout: float = 30) -> str:
    """``load_suite(path).spec_hash`` in a child process capped at 1.5 GB of address space and
    ``timeout`` seconds, so a loader that hangs or explodes fails the test instead of the machine.
    Returns the SuiteError's message ("" if it loaded)."""
    probe = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
        from initbench.spec.suite import SuiteError, load_suite
        try:
            load_suite({str(path)!r}).spec_hash
        except SuiteError as err:
            print(err)
    """)
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} did not return within {timeout} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_an_alias_bomb_is_refused_fast_and_small(tmp_path):
    # 9^9 leaves from ~1 KB: today's loader hangs in spec_hash (GBs of RSS).
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 2048
    message = _load_in_child(bomb)
    assert str(bomb) in message and "expands to more than" in message


def test_a_long_chain_of_anchors_is_refused_without_exhausting_the_stack(tmp_path):
    chain = "".join(f"\n        a{i}: &a{i} [*a{i - 1}]" for i in range(1, 5000))
    path = tmp_path / "chain.yaml"
    path.write_text(
        SMOKE.replace(
            "args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}", "args:\n        a0: &a0 [1]" + chain, 1
        )
    )
    message = _load_in_child(path)
    assert str(path) in message and "expands to more than" in message


def test_modest_anchors_and_aliases_still_load(tmp_path):
    path = tmp_path / "anchored.yaml"
    path.write_text(
        SMOKE.replace(
            "args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}",
            "args: &args {digits: 1, n_train: 40, n_validation: 8, n_test: 8}",
            1,
        ).replace("args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}", "args: *args", 1)
    )
    assert load_suite(str(path)).spec_hash == load_suite("smoke").spec_hash


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(
        SMOKE.replace(
            "args: {digits: 1, n_train: 40, n_validation: 8, n_test: 8}", "args: &loop {digits: 1, more: [*loop]}", 1
        )
    )
    with pytest.raises(SuiteError, match="refers to a node that contains it"):
        _ = load_suite(str(path)).spec_hash


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("[" * 200_000 + "]" * 200_000, "nested deeper than 64 levels"),  # a RecursionError traceback today
        ("[" + "1," * 200_000 + "1]", "more than 100,000 YAML nodes"),  # 400 KB, seconds to compose
    ],
    ids=["deep", "huge"],
)
def test_deep_or_huge_yaml_is_refused_before_nodes_are_built(tmp_path, body, fragment):
    path = tmp_path / "deep.yaml"
    path.write_text(f"name: deep\nargs: {body}\n")
    message = _load_in_child(path)  # a child: libyaml's composer, recursing per level, would overflow the C stack
    assert str(path) in message and fragment in message


def test_an_oversized_suite_file_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(SMOKE + "# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(SuiteError) as err:
        load_suite(str(big))
    assert str(big) in str(err.value) and "1 MiB" in str(err.value)


def test_a_non_utf8_file_is_a_clear_error(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(SMOKE.replace("Tiny random Llama", "Tiny random Llama caf\xe9").encode("latin-1"))
    with pytest.raises(SuiteError) as err:
        load_suite(str(latin))
    assert str(latin) in str(err.value) and "not UTF-8" in str(err.value) and "0xe9" in str(err.value)


@pytest.mark.parametrize(
    "old, new, key, line",
    [
        ("  steps: 6\n", "  steps: 6\n  steps: 600000\n", "steps", 15),  # block mapping: last would win
        ("eval:\n  batch_size: 8\n", "eval:\n  batch_size: 8\n  batch_size: 2\n", "batch_size", 22),
        ("{name: adamw, lr: 0.01}", "{name: adamw, lr: 0.01, lr: 10}", "lr", 17),  # one flow mapping, one line
    ],
)
def test_a_duplicate_key_is_refused_with_key_and_line(tmp_path, old, new, key, line):
    assert old in SMOKE
    path = tmp_path / "dup.yaml"
    path.write_text(SMOKE.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert str(path) in str(err.value) and f"duplicate key {key!r}" in str(err.value)
    assert f"line {line}" in str(err.value)
