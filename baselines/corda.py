"""CorDA: context-oriented decomposition adaptation, in its two modes.

Paper: Yang et al., "CorDA: Context-Oriented Decomposition Adaptation of Large Language Models for
Task-Aware Parameter-Efficient Fine-tuning", NeurIPS 2024, arXiv:2406.05223.
Code: https://github.com/iboing/CorDA; used here through peft's ``preprocess_corda`` (with
``CordaConfig(corda_method=...)``) and ``LoraLayer.corda_init``.

Formula (peft ``collect_eigens_for_layer`` / ``corda_init``), per layer W of shape (out, in):
    C = (1/N) sum_samples X_s^T X_s,  X_s = a sample's layer inputs divided by max(X_s)  (one sample per pass)
    C' = C + d * mean(diag C) * I   (d = 0.01, doubled until ||C' C'^-1 - I|| < 0.05)
    U, S, Vh = svd(W C');   V = (Vh C'^-1)^T
    ipm: the r largest triplets;  kpm: the r smallest
    A = diag(sqrt(S_r / s)) V_r^T,  B = U_r diag(sqrt(S_r / s)),  W <- W - s B A   (s = alpha / r)
The reference and peft's example set lora_alpha = r (s = 1): this method's ``default_alpha``.

Calibration amount: the reference collects 256 samples in both modes (``build_corda.py`` lines
121-123: ``--calib_loader_size`` default 256); each mode declares it (``reference_calibration_examples``) and runs
min(256, ``budget.calibration.examples``), every sample charged to the run's calibration spend.

* ``corda-ipm`` (instruction-previewed): C from the task's calibration examples
  (``ctx.calibration.batches()``), every example run alone without padding, as the reference does.
* ``corda-kpm`` (knowledge-preserving): C from general-knowledge questions *outside* the task, so
  the adapter takes the directions least used by world knowledge and the frozen residual keeps the
  rest.  The reference (commit baffb03: ``cordalib/datautils.py: get_calib_data("nqopen")``, lines
  149-151 and 237-241; ``tools/build_KPA.sh``) joins every question of NQ-open's train split with ``"\n\n"``, then 256 times draws a random
  character offset, tokenizes the text from there (Llama-2's tokenizer: BOS first) and keeps the first
  2048 tokens: 256 windows of BOS + 2047 question tokens.  Here (:func:`knowledge_windows`):
    - the questions: with a data directory (``--data-dir`` / ``$INITBENCH_DATA_DIR``, as the suite's
      own data) the local file ``nq_open/NQ-open.dev.jsonl`` under it (NQ-open's original dev split,
      3,610 questions: the copy available offline); without one, the hub
      (``google-research-datasets/nq_open``, split ``train``, the reference's);
    - the windows: min(256, allowance) of them, each the tokenizer's declared BOS (when it declares
      one: SmolLM2-Instruct's is ``<|im_start|>``, Qwen3's is none) + length - 1 consecutive tokens of the tokenized joined text from a uniformly drawn token
      offset (the run's generator), so none comes out short or starts inside a token;
    - the length: min(2048, ``budget.max_length``).  The allowance counts examples, and a task example
      is at most ``max_length`` tokens, so a window of ``max_length`` tokens costs what the costliest
      task example costs: both modes see the same number of examples, each of at most ``max_length``
      tokens (kpm's exactly that; ``mini``: 32 windows x 32 tokens, ``math``: 256 x 512);
    - each window runs alone (peft's covariance hook takes one sample per pass) and counts as one
      example of its length, charged per ``budget.calibration.batch_size`` windows as corda-ipm's
      (``ctx.calibration.encode``).
  ``method_info`` records the source, the window length and the BOS token.
  Measured on ``mini`` (SmolLM2-135M, 30 layers, rank of C at float32 tolerance, min / median / max
  over layers): the former 32 hand-written prompts (281 tokens, no BOS) gave q_proj 148 / 195 / 223,
  gate_proj 163 / 225 / 229 of 576 and down_proj 2 / 220 / 229 of 1536; the 32 NQ-open windows of 32
  tokens give q_proj 297 / 421 / 484, gate_proj 347 / 546 / 571 and down_proj 1 / 760 / 900.

kpm encodes its windows with the run's tokenizer (``ctx.tokenizer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from initbench.api import InitContext, InitError, InitMethod
from initbench.spec.suite import SuiteError

REFERENCE_WINDOWS = 256
REFERENCE_WINDOW_LENGTH = 2048


def nq_open_questions() -> tuple[list[str], str]:
    """NQ-open's questions (``initbench.inputs.datasets_io.nq_open_questions``; on the hub, the reference's
    ``train`` split) and where they came from; unreadable data is this method's failure."""
    from initbench.inputs.datasets_io import nq_open_questions as read

    try:
        return read("train", "corda-kpm")
    except SuiteError as err:
        raise InitError(str(err)) from None


def knowledge_windows(
    questions: list[str], tokenizer, count: int, length: int, generator: torch.Generator
) -> list[list[int]]:
    """``count`` windows of ``length`` token ids: BOS (if the tokenizer has one), then ``length - 1``
    (or ``length``) consecutive tokens of the questions joined by blank lines, from uniform offsets."""
    ids = tokenizer("\n\n".join(questions), add_special_tokens=False, verbose=False)["input_ids"]
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    body = length - len(bos)
    if body <= 0 or len(ids) < body:
        raise InitError(f"corda-kpm: {len(ids)} question tokens cannot fill windows of {length} tokens")
    starts = torch.randint(0, len(ids) - body + 1, (count,), generator=generator).tolist()
    return [bos + ids[start : start + body] for start in starts]


def one_at_a_time(batches: Iterable[dict[str, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """Each example of each (charged) batch alone, as (1, T) input_ids without its padding."""
    for batch in batches:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            yield ids[mask.bool()][None]


class CorDA(InitMethod):
    """Base of both modes; ``corda_method`` picks which end of the spectrum is adapted."""

    corda_method = "ipm"
    calibration_reference = REFERENCE_WINDOWS  # build_corda.py: --calib_loader_size 256
    paper = "Yang et al. 2024, arXiv:2406.05223"
    code = "https://github.com/iboing/CorDA (via peft preprocess_corda + init_lora_weights='corda')"
    peft_init = True  # CorDA's factors are written in ``initialize`` by peft's corda_init

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def samples(self, model: torch.nn.Module, ctx: InitContext):
        """Yield (1, T) input_ids, one calibration sample at a time, each charged to the budget."""
        return one_at_a_time(ctx.calibration.batches())

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        from peft import LoraConfig
        from peft.tuners.lora.config import CordaConfig
        from peft.tuners.lora.corda import preprocess_corda

        layers = ctx.layers()
        ranks = {layer.rank for layer in layers}
        if len(ranks) != 1:
            raise InitError(f"CorDA here expects one rank for every layer, found {sorted(ranks)}")

        def run_model():
            with torch.no_grad(), model.disable_adapter():
                for ids in self.samples(model, ctx):
                    model(input_ids=ids)

        # Target the frozen nn.Linear inside each attached LoRA layer ("...q_proj.base_layer"), the
        # modules peft's preprocess_corda would have hooked before get_peft_model.
        config = LoraConfig(
            r=ranks.pop(),
            lora_alpha=ctx.lora.alpha,
            target_modules=["base_layer"],
            init_lora_weights="corda",
            corda_config=CordaConfig(corda_method=self.corda_method),
        )
        preprocess_corda(model, config, run_model=run_model)
        for layer in layers:  # peft's own per-layer init: the view's module and adapter are for this
            layer.module.corda_init(layer.adapter, "corda")


class CorDAIPM(CorDA):
    summary = "CorDA instruction-previewed: top-r SVD of W C (C = task-input covariance), residual frozen."
    corda_method = "ipm"


class CorDAKPM(CorDA):
    summary = "CorDA knowledge-preserving: bottom-r SVD of W C (C from NQ-open question windows, as the reference)."
    corda_method = "kpm"

    def samples(self, model: torch.nn.Module, ctx: InitContext):
        calib = ctx.calibration
        if calib.remaining <= 0:
            raise InitError("corda-kpm needs calibration allowance (budget.calibration.examples) for its windows")
        length = min(REFERENCE_WINDOW_LENGTH, ctx.budget.max_length)
        questions, source = nq_open_questions()
        windows = knowledge_windows(questions, ctx.tokenizer, calib.remaining, length, ctx.generator)
        ctx.info.update(corda_kpm_source=source, corda_kpm_window_tokens=length, corda_kpm_bos=ctx.tokenizer.bos_token)
        # charged per calibration batch of windows, as corda-ipm's examples
        yield from one_at_a_time(calib.encode(windows))
