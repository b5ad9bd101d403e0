"""``initbench show RUN``: one run at a glance -- its key columns, its scores, and what the model
said on its first test documents (``initbench.store.samples``)."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from initbench.store.results import RESULTS_SUFFIX, ResultsError, read_file
from initbench.store.samples import format_samples, read_samples, run_file, samples_path

#: the columns ``show`` prints, in order (null ones are left out)
KEY_COLUMNS = (
    "run_id",
    "status",
    "error",
    "method",
    "method_version",
    "task",
    "lm_eval_task",
    "seed",
    "model",
    "protocol",
    "phase",
    "eval_split",
    "learning_rate",
    "selected_lr",
    "lora_rank",
    "lora_alpha",
    "optimizer_steps",
    "train_tokens",
    "final_train_loss",
    "forgetting_kl",
    "init_seconds",
    "train_seconds",
    "eval_seconds",
    "wall_seconds",
    "data_hash",
    "code_commit",
    "start_time",
)


def render_run(run: Path, samples: int = 3) -> str:
    """The run whose results file is ``run`` (or any file of the run, or their common stem): key columns,
    scores (the primary metric marked), and ``samples`` documents of its sidecar (0: none)."""
    path = run_file(Path(run), RESULTS_SUFFIX)
    if Path(run).is_dir():
        raise ResultsError(f"{run}: a folder; show takes one run's results file (`initbench status` lists a folder)")
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file")
    rows = read_file(path).to_pylist()
    first = rows[0]
    keys = [[k, first[k]] for k in KEY_COLUMNS if first.get(k) not in (None, "")]
    parts = [tabulate(keys, tablefmt="plain")]
    scored = [r for r in rows if r["metric"] is not None]
    if scored:
        table = [
            [r["metric"] + (" (primary)" if r["metric"] == first["primary_metric"] else ""), r["value"], r["stderr"]]
            for r in scored
        ]
        parts.append(tabulate(table, ["metric", "value", "stderr"], tablefmt="github", floatfmt=".4f"))
    if samples > 0:
        sidecar = samples_path(path)
        if sidecar.exists():
            found = read_samples(sidecar, run_id=first["run_id"])
            documents = len({r["doc_id"] for r in found})
            parts.append(
                f"samples: {min(samples, documents)} of {documents} documents ({sidecar})\n\n"
                + format_samples(found, samples)
            )
        else:
            parts.append(
                f"samples: none kept ({sidecar} is absent: a tuning trial, a run that did not finish "
                "evaluating, or one made with --no-samples or before samples were kept)"
            )
    return "\n\n".join(parts)
