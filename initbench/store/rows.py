"""The typed rows of a run: one :class:`ResultRow` per metric, one :class:`CurvePoint` per logged step.

These classes are the schema: ``initbench.store.results`` derives its Arrow schemas from them
(:func:`arrow_schema`), so a column is declared once, with its type, and the code that builds a row
is checked against the same declaration (statically here, and by ``write_run`` at run time, which
refuses a key that is not a column).  A ``Required`` column is never null; every other one may be.
"""

# no `from __future__ import annotations` here: TypedDict must see `Required` in real annotations
from datetime import datetime
from typing import Any, get_args

import pyarrow as pa
from typing_extensions import Required, TypedDict, get_type_hints

#: Python type of a column -> its Arrow type
ARROW_TYPES: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("ms", tz="UTC"),
}


class RunKey(TypedDict):
    """What identifies a run: every row of it, and every point of its curve, carries these."""

    run_id: str
    suite: str
    suite_hash: str
    method: str
    task: str
    seed: int


class ResultRow(RunKey, total=False):
    """One row of a run's results: one metric's value, and everything needed to rerun the run."""

    config_hash: Required[str]
    method_version: str | None
    method_package: str | None
    is_reference: bool | None
    lm_eval_task: str | None
    metric: str | None  # null for a failed run
    value: float | None
    stderr: float | None
    status: Required[str]  # ok | diverged | failed
    error: str | None
    # what was trained
    model: str | None
    model_revision: str | None
    dtype: str | None
    lora_rank: int | None
    lora_alpha: float | None
    lora_scale: float | None
    use_rslora: bool | None
    target_modules: str | None
    learning_rate: float | None
    base_weights_modified: bool | None
    modified_layers: int | None
    data_hash: str | None
    # the budget actually spent
    train_tokens: int | None
    optimizer_steps: int | None
    calibration_examples: int | None
    calibration_forward_passes: int | None
    calibration_backward_passes: int | None
    calibration_tokens: int | None
    flops: float | None
    trainable_params: int | None
    total_params: int | None
    init_seconds: float | None
    train_seconds: float | None
    eval_seconds: float | None
    wall_seconds: float | None
    peak_memory_bytes: int | None
    final_train_loss: float | None
    eval_batch_size: int | None
    eval_limit: int | None
    # what is needed to rerun it
    initbench_version: str | None
    torch_version: str | None
    transformers_version: str | None
    peft_version: str | None
    lm_eval_version: str | None
    python_version: str | None
    device: str | None
    device_name: str | None
    determinism: str | None
    start_time: datetime | None
    # the protocol (schema version 2)
    protocol: str | None  # fixed | tuned
    phase: str | None  # trial (validation split) | final (test split)
    eval_split: str | None  # the split lm-eval scored
    selected_lr: float | None  # tuned finals: the rate chosen on validation
    # optional diagnostics (schema version 3; null unless INITBENCH_DIAGNOSTICS is on)
    init_update_erank: float | None  # mean over layers, erank of scale*B[M]A after init
    final_update_erank: float | None  # ... after training
    relative_weight_change: float | None  # mean over layers, ||W_final - W0||_F / ||W0||_F
    # training throughput (schema version 4)
    train_flops: float | None
    train_tokens_per_second: float | None
    device_peak_flops: float | None
    mfu: float | None
    # how the loop computed (schema version 5; JSON, initbench.run.execution.execution_settings)
    execution: str | None
    # schema version 6 -- issue 14 item 7: what the method recorded at init (JSON, InitContext.info)
    method_info: str | None
    # schema version 6 -- issue 18, finding 12: the task's primary metric (a metric key)
    primary_metric: str | None
    # code identity and init reuse (schema version 6, issue 13 items 1-2; initbench.core.provenance)
    code_commit: str | None  # git commit of the checkout initbench runs from; null: none
    code_dirty: bool | None  # its code differs from that commit
    code_hash: str | None  # SHA-256 (16 hex) of the installed sources
    torch_threads: int | None
    cpu_model: str | None
    cpu_flags: str | None  # kernel-choosing ISA flags, comma-separated
    cpu_capability: str | None  # torch.backends.cpu.get_cpu_capability()
    init_reused: bool | None  # the init came from an earlier trial (initbench.run.init_cache)
    # schema version 7: the training came from an earlier run that trained the same model (initbench.run.train_cache)
    train_reused: bool | None
    # schema version 6 -- issue 13 item 6: forgetting (initbench.run.forgetting), final runs of training methods
    forgetting_kl: float | None  # mean per-token KL(base || trained) on the held set, nats
    forgetting_set: str | None  # which held set (source, count, content hash)


class CurvePoint(RunKey, total=False):
    """One logged training step of a run's loss curve."""

    step: Required[int]
    loss: float | None
    lr: float | None
    tokens: int | None


def arrow_schema(row_type: Any) -> pa.Schema:
    """The Arrow schema of a row class, in declaration order: ``X | None`` is a nullable X; any other
    column is not null, so it must be ``Required`` (a row without it could not be written)."""
    fields = []
    for name, hint in get_type_hints(row_type).items():
        args = get_args(hint)
        nullable = type(None) in args
        types = [t for t in args if t is not type(None)] if nullable else [hint]
        if len(types) != 1 or types[0] not in ARROW_TYPES:
            raise TypeError(
                f"{row_type.__name__}.{name}: {hint} is not one of {sorted(t.__name__ for t in ARROW_TYPES)}"
            )
        if not nullable and name not in row_type.__required_keys__:
            raise TypeError(f"{row_type.__name__}.{name}: a column that is never null must be Required")
        fields.append(pa.field(name, ARROW_TYPES[types[0]], nullable=nullable))
    return pa.schema(fields)
