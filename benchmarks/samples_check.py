"""Per-sample records and the chat template on a suite's base model (issue 16, item 5).

For every task of ``--suite`` (the base model as loaded, no training), evaluates the test split
the way a final run does (``initbench.inputs.evaluation.evaluate``, the suite's batch size, limit and a
seed) in the variants asked for:

* ``plain``: samples off (what every run did before issue 16);
* ``samples``: samples kept; its scores must equal ``plain``'s bit for bit, and its sidecar
  (``initbench.store.samples.write_samples``) is written to a temporary folder to report its size;
* ``template``: samples kept, prompts through the model's chat template
  (``eval.chat_template: true``); reports its scores and, for generation tasks, how many
  documents got an empty generation (the model ended its turn at once) against ``samples``.

    OMP_NUM_THREADS=1 python benchmarks/samples_check.py --suite mini
    OMP_NUM_THREADS=1 python benchmarks/samples_check.py --suite math-mini --data-dir ../shared/data \\
        --limit 30 --variants samples,template
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from initbench.inputs import data as task_data
from initbench.inputs.datasets_io import use_data_dir
from initbench.inputs.evaluation import evaluate, task_primary_metric
from initbench.inputs.models import load_model
from initbench.spec.suite import load_suite
from initbench.store.samples import record, samples_path, write_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mini")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="test documents per task (default: the suite's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="plain,samples", help="comma-separated: plain, samples, template")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.data_dir:
        use_data_dir(args.data_dir)
    suite = load_suite(args.suite)
    limit = args.limit if args.limit is not None else suite.eval.limit
    loaded = load_model(suite.model, torch.device("cpu"))
    folder = Path(tempfile.mkdtemp(prefix="initbench-samples-"))
    print(
        f"suite {suite.name} ({loaded.label}), limit {limit}, seed {args.seed}, torch threads "
        f"{torch.get_num_threads()}\n"
    )
    for task in suite.tasks:
        data = task_data.run_data(task, suite.path, "test")
        primary = task_primary_metric(task, suite.path)[0]
        found = {}
        for variant in variants:
            kept: list[dict] = []
            start = time.perf_counter()
            scores, _ = evaluate(
                loaded.model,
                loaded.tokenizer,
                task.lm_eval_task,
                data,
                batch_size=suite.eval.batch_size,
                limit=limit,
                seed=args.seed,
                chat_template=variant == "template",
                keep_samples=None if variant == "plain" else kept.extend,
            )
            rows = [record(s) for s in kept]
            found[variant] = (scores, rows, time.perf_counter() - start)
        print(f"## {task.name} ({task.lm_eval_task}), primary {primary}")
        for variant, (scores, rows, seconds) in found.items():
            value = next((s.value for s in scores if s.metric == primary), None)
            line = f"- {variant}: {primary} = {value!r}, {seconds:.0f} s"
            if rows:
                path = write_samples(samples_path(folder / f"{task.name}-{variant}"), "check", rows)
                docs = len({r["doc_id"] for r in rows})
                line += (
                    f"; sidecar {path.stat().st_size:,} bytes for {docs} documents ({len(rows)} rows), "
                    f"{path.stat().st_size / docs:.0f} bytes per document"
                )
                generated = [r for r in rows if r["output"] is not None and not r["continuations"]]
                if generated:
                    empty = len({r["doc_id"] for r in generated if not r["output"].strip()})
                    line += f"; empty generations: {empty} of {docs}"
            print(line)
        if {"plain", "samples"} <= set(found):
            same = found["plain"][0] == found["samples"][0]
            print(f"- samples kept vs not: every score and stderr {'identical' if same else 'DIFFERENT'}")
        print()


if __name__ == "__main__":
    main()
