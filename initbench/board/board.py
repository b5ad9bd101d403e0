"""The typed leaderboard: what ``initbench.board.leaderboard.build`` computes, as dataclasses.

A :class:`Board` holds one :class:`SuiteBoard` per (suite, spec hash) and the runs that did not
finish.  A suite holds a :class:`ProtocolBlock` per protocol present (``tuned`` first): its
per-task :class:`Cell` s, the :class:`AggregateRow` s across tasks (best IQM first), the
:class:`Pairwise` comparisons with ``lora`` and the :class:`Normalization` used; and, for its
main protocol, convergence, cost, diagnostics, forgetting, learning rates, tuning trials, the
resolution per task, the tuning-seed check and curvature at init.  Only data lives here: the statistics are computed by
``initbench.board.leaderboard`` (and ``initbench.board.curvature_board``), and turned into text by
``initbench.board.leaderboard_text``, into a page by ``initbench.board.leaderboard_page``.
``dataclasses.asdict(board)`` gives the board as plain data.  A board is computed once and then read:
treat it as read-only (the classes are plain slotted dataclasses, not frozen ones, because a large
board holds 100,000s of cells and a frozen dataclass takes twice as long to build).

Missing values: ``None`` where a statistic is absent (a column not recorded, a test with too few
pairs), ``nan`` for an interval that needs two seeds or more.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field

from initbench.selection.lr_prior import PriorFit


@dataclass(slots=True)
class Cell:
    """One (method, task, metric) of a suite over its evaluation seeds: mean, sample std (ddof=1;
    None with one seed) and the 95% percentile-bootstrap interval of the mean (nan with one seed)."""

    suite: str
    suite_hash: str
    method: str
    is_reference: bool
    task: str
    metric: str
    mean: float | None
    std: float | None
    seeds: int
    ci_low: float
    ci_high: float


def make_cells(columns: Iterable[list]) -> list[Cell]:
    """``Cell`` s from one list per field, in field order, with the cyclic garbage collector paused
    meanwhile (and then put back as it was).  A board holds up to 100,000s of cells, none in a
    reference cycle; with the collector running, making them triggers full collections that traverse
    every cell made so far, which took longer than making them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return list(map(Cell, *columns))
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True)
class Normalization:
    """How a protocol's primary metrics are put on a common scale: per task ``(score - floor) /
    (ceiling - floor)``; ``ceiling`` names the row that set each task's ceiling."""

    floor: str
    ceiling: dict[str, str]
    floor_values: dict[str, float]
    ceiling_values: dict[str, float]
    not_normalizable: list[str]


@dataclass(slots=True)
class AggregateRow:
    """A method across tasks: the IQM of its (normalized) primary scores over seeds x tasks with its
    95% stratified-bootstrap interval, and their plain mean."""

    method: str
    is_reference: bool
    iqm: float
    iqm_low: float
    iqm_high: float
    mean: float
    seeds: int
    tasks: int


@dataclass(slots=True)
class Pairwise:
    """A method against ``lora``: probability of improvement with its interval, and the Wilcoxon
    signed-rank test paired by (seed, task), Holm-adjusted over the suite's methods."""

    method: str
    poi: float
    poi_low: float
    poi_high: float
    pairs: int
    mean_diff: float
    p_wilcoxon: float
    p_t: float
    min_p: float
    p_holm: float
    significant: bool


@dataclass(slots=True)
class ProtocolBlock:
    """One protocol of a suite: its cells, the primary metric per task, the normalization (None:
    raw primary metric, no ``base`` run), the aggregate and the comparison with ``lora``."""

    cells: list[Cell]
    tasks: list[str]
    primary: dict[str, str]
    normalization: Normalization | None
    aggregate: list[AggregateRow]
    pairwise: list[Pairwise]


@dataclass(slots=True)
class ConvergenceRow:
    """A (method, task)'s training-loss curves: mean area under the curve over its runs with a 95%
    percentile-bootstrap interval over seeds (NaN with one run), mean steps until the EMA loss
    reached the target (None: no run did) and how many of its runs did."""

    method: str
    task: str
    auc: float
    auc_low: float
    auc_high: float
    steps_to_target: float | None
    reached: int
    runs: int
    target_loss: float | None


@dataclass(slots=True)
class CostRow:
    """A method's cost per final run (timings: medians over its final runs; peak memory: the max; the
    rest: means), its tuning trials' totals and the FLOPs of both."""

    method: str
    runs: int
    trainable_params: float | None
    init_seconds: float | None
    train_seconds: float | None
    wall_seconds: float | None
    train_tokens: float | None
    calibration_examples: float | None
    flops: float | None
    train_tokens_per_second: float | None
    mfu: float | None
    peak_memory_bytes: int | None
    tuning_trials: int
    tuning_seconds: float
    tuning_flops: float
    total_flops: float


@dataclass(slots=True)
class DiagnosticsRow:
    """A method's rich/lazy diagnostics (``initbench.run.diagnostics``), means over the runs that recorded them."""

    method: str
    runs: int
    trainable_params: float | None
    base_weights_modified: bool
    init_update_erank: float | None
    final_update_erank: float | None
    relative_weight_change: float | None


@dataclass(slots=True)
class ForgettingRow:
    """A (method, task)'s forgetting (``initbench.run.forgetting``): mean KL over seeds with its 95% interval."""

    method: str
    task: str
    held_set: str
    seeds: int
    mean: float
    ci_low: float
    ci_high: float


@dataclass(slots=True)
class TuningRow:
    """One learning rate tried for a (method, task): the validation mean of the primary metric over
    the tuning seeds, and whether tuning chose it."""

    method: str
    task: str
    lr: float
    metric: str | None
    validation_mean: float
    seeds: int
    selected: bool


@dataclass(slots=True)
class CurvatureCell:
    """A (method, task)'s curvature at init (``initbench.board.curvature_board``): lambda_max (mean over the
    measured seeds), the rate lr-prior predicts from it, the rate tuning chose and the grid's edge."""

    method: str
    task: str
    lambda_max: float
    seeds: int
    converged: int
    predicted_lr: float | None
    reference: str
    reference_lr_source: str
    chosen_lr: float | None
    grid: list[float]
    edge: str


@dataclass(slots=True)
class ResolutionRow:
    """A task's seed noise on its primary metric (``initbench.board.resolution``): the s.d. pooled over
    ``methods`` trained methods, ``lora``'s own (None: no lora cell), the usual seed count and the
    minimum detectable difference between two methods at that count."""

    task: str
    metric: str
    methods: int
    pooled_sd: float
    reference_sd: float | None
    seeds: int
    minimum_detectable_difference: float


@dataclass(slots=True)
class SeedGapRow:
    """One comparison of the tuning-seed check (``initbench.board.tuning_seed``): over ``pairs``
    (method, task), the mean of the tuning seeds' finals minus the other seeds' (primary metric),
    its 95% percentile-bootstrap interval over the pairs, and the share of pairs above 0."""

    comparison: str  # "tuned", "fixed" or "tuned - fixed (paired)"
    pairs: int
    mean: float
    ci_low: float
    ci_high: float
    share_positive: float


@dataclass(slots=True)
class TuningSeedCheck:
    """Whether the tuned protocol's choice of rate flatters the seeds it was made on."""

    tuning_seeds: list[int]
    final_seeds: int  # the most final seeds of a (method, task) under the tuned protocol
    rows: list[SeedGapRow]


@dataclass(slots=True)
class SuiteBoard:
    """One (suite, spec hash): a block per protocol present, and for the main protocol (``tuned``
    when present; None: no final runs) the run ids and every per-method table."""

    suite: str
    suite_hash: str
    protocols: dict[str, ProtocolBlock]
    main: str | None = None
    run_ids: list[str] = field(default_factory=list)
    convergence: list[ConvergenceRow] = field(default_factory=list)
    cost: list[CostRow] = field(default_factory=list)
    diagnostics: list[DiagnosticsRow] = field(default_factory=list)
    forgetting: list[ForgettingRow] = field(default_factory=list)
    learning_rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    tuning: list[TuningRow] = field(default_factory=list)
    curvature: list[CurvatureCell] = field(default_factory=list)
    curvature_fits: dict[str, PriorFit | None] = field(default_factory=dict)
    resolution: list[ResolutionRow] = field(default_factory=list)
    tuning_seed: TuningSeedCheck | None = None


@dataclass(slots=True)
class Failure:
    """A run that did not finish ok, with its reason."""

    suite: str
    method: str
    task: str
    seed: int
    status: str
    error: str | None


@dataclass(slots=True)
class Board:
    """The whole leaderboard of a results table."""

    suites: list[SuiteBoard]
    failures: list[Failure]
