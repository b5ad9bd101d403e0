"""Fingerprint every registered method's init, to prove a refactor left the numbers where they were.

For each method (``initbench methods``, plus any ``--also module:Class``), seed and task family, the
method is initialized exactly as a run initializes it (``initbench.testing.initialize``: the tiny Llama,
the harness's attach + ``initialize``) and the script records the SHA-256 of every tensor of the
model's state dict (adapters, middle matrices, frozen parts, base weights: native dtype bytes, with
shape and dtype) and their order, which parameters train (in the order the optimizer gets them),
the budget spent (with ``method_info``), the base layers the init changed and the RNG states (python, numpy, torch) it leaves for training.  A method that raises
records its error instead.

    python scripts/init_fingerprint.py --out before.json           # on the starting commit
    python scripts/init_fingerprint.py --out after.json            # on the change
    python scripts/init_fingerprint.py --compare before.json after.json

``--compare`` prints every method whose fingerprint differs and exits 1 if any does.
CorDA-KPM reads NQ-open's questions: set ``INITBENCH_DATA_DIR`` to a folder holding
``nq_open/NQ-open.dev.jsonl`` (as for a run) or it records the missing-data error on both sides.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import torch


def tensor_digest(tensor: torch.Tensor) -> str:
    """``dtype shape sha256`` of a tensor's raw bytes (CPU, contiguous, native dtype)."""
    t = tensor.detach().cpu().contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    return f"{t.dtype} {tuple(t.shape)} {hashlib.sha256(raw.numpy().tobytes()).hexdigest()}"


def fingerprint(name: str, seed: int, family: str) -> dict[str, Any]:
    """The fingerprint of one method's init at ``seed`` on a suite of ``family``."""
    from initbench.core.seeding import rng_states, seed_everything
    from initbench.method.registry import get_method
    from initbench.testing import initialize

    try:
        method = get_method(name)
        seed_everything(seed)  # as the harness does before attaching
        done = initialize(method, seed=seed, family=family)
    except Exception as err:  # a method that cannot init here records why
        return {"error": f"{type(err).__name__}: {err}"}
    states = rng_states()
    return {
        "tensors": {key: tensor_digest(value) for key, value in done.model.state_dict(keep_vars=True).items()},
        "order": hashlib.sha256("\n".join(done.model.state_dict(keep_vars=True)).encode()).hexdigest(),
        "trainable": [key for key, p in done.model.named_parameters() if p.requires_grad],  # the optimizer's order
        "spend": done.spend.columns(),
        "modified": list(done.modified),
        "rng": {
            "torch": tensor_digest(states["torch"]),
            **{key: hashlib.sha256(pickle.dumps(states[key])).hexdigest() for key in ("python", "numpy")},
        },
    }


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every (method, seed, family) whose fingerprint differs between two files, with what differs."""
    problems = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None or new is None:
            problems.append(f"{key}: only in {'after' if old is None else 'before'}")
            continue
        for part in sorted(set(old) | set(new)):
            if old.get(part) != new.get(part):
                if isinstance(old.get(part), dict) and isinstance(new.get(part), dict):
                    changed = sorted(k for k in set(old[part]) | set(new[part]) if old[part].get(k) != new[part].get(k))
                    problems.append(
                        f"{key}: {part} differs ({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''})"
                    )
                else:
                    problems.append(f"{key}: {part} differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the fingerprints (JSON)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--families", default=",commonsense", help="comma-separated task families ('' = none)")
    parser.add_argument("--method", action="append", default=[], help="only these methods (repeatable)")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        help="fingerprint this method too (repeatable), e.g. an unregistered module:Class",
    )
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        problems = compare(before, after)
        print("\n".join(problems) or f"identical: {len(before)} fingerprints")
        return 1 if problems else 0
    if args.out is None:
        parser.error("--out or --compare is required")
    from initbench.core.atomic import write_text
    from initbench.method.registry import method_names

    names = (args.method or method_names()) + args.also
    seeds = [int(s) for s in args.seeds.split(",")]
    families = args.families.split(",")
    result = {}
    for name in names:
        for family in families:
            for seed in seeds:
                key = f"{name} seed={seed} family={family or '-'}"
                result[key] = fingerprint(name, seed, family)
                print(key, result[key].get("error", "ok"), file=sys.stderr, flush=True)
    write_text(args.out, json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
