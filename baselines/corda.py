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

* ``corda-ipm`` (instruction-previewed): C from the task's calibration examples
  (``ctx.calibration.batches()``), every example run alone without padding, as the reference does.
* ``corda-kpm`` (knowledge-preserving): C from general-knowledge questions *outside* the task, so
  the adapter takes the directions least used by world knowledge and the frozen residual keeps the
  rest.  The paper samples TriviaQA / NQ-open questions; this benchmark cannot download them, so
  :data:`KNOWLEDGE_PROMPTS` holds 32 fixed open-domain questions of the same kind (geography,
  science, history, literature, arts), written for this module.  kpm runs the first
  ``min(32, remaining calibration allowance)`` of them and charges them to the run's calibration
  spend like task examples, so both modes see the same number of calibration examples.

kpm encodes its prompts with the run's tokenizer (``ctx.tokenizer``).
"""

from __future__ import annotations

import torch

from initbench.api import InitContext, InitError, InitMethod, active_adapter

KNOWLEDGE_PROMPTS = [
    "What is the capital city of Australia?",
    "Who wrote the play Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "Which planet is known as the Red Planet?",
    "In which year did the Second World War end?",
    "What is the longest river in Africa?",
    "Who painted the Mona Lisa?",
    "What gas do plants absorb from the air for photosynthesis?",
    "Which ocean lies between Africa and Australia?",
    "Who developed the theory of general relativity?",
    "What is the largest mammal on Earth?",
    "Which country is home to the city of Kyoto?",
    "What is the boiling point of water at sea level in Celsius?",
    "Who was the first person to walk on the Moon?",
    "What language is mainly spoken in Brazil?",
    "Which organ pumps blood through the human body?",
    "What is the hardest natural substance?",
    "Who composed the Moonlight Sonata?",
    "Which desert is the largest hot desert in the world?",
    "What is the smallest prime number?",
    "Which element has the atomic number 1?",
    "Who wrote the novel Pride and Prejudice?",
    "What is the tallest mountain above sea level?",
    "Which empire built the Colosseum in Rome?",
    "What is the currency of Japan?",
    "Which scientist proposed the laws of motion and universal gravitation?",
    "How many continents are there on Earth?",
    "What is the main ingredient of guacamole?",
    "Which city hosted the first modern Olympic Games?",
    "What part of the cell contains the genetic material?",
    "Who discovered penicillin?",
    "Which river flows through Paris?",
]


class CorDA(InitMethod):
    """Base of both modes; ``corda_method`` picks which end of the spectrum is adapted."""

    corda_method = "ipm"
    paper = "Yang et al. 2024, arXiv:2406.05223"
    code = "https://github.com/iboing/CorDA (via peft preprocess_corda + init_lora_weights='corda')"
    peft_init = True  # CorDA's factors are written in ``initialize`` by peft's corda_init

    def default_alpha(self, rank: int) -> float:
        return float(rank)

    def samples(self, model: torch.nn.Module, ctx: InitContext):
        """Yield (1, T) input_ids, one calibration sample at a time, each charged to the budget."""
        for batch in ctx.calibration.batches():
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                yield ids[mask.bool()][None]

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        from peft import LoraConfig
        from peft.tuners.lora.config import CordaConfig
        from peft.tuners.lora.corda import preprocess_corda

        layers = ctx.lora_layers()
        ranks = {layer.r[active_adapter(layer)] for _, layer in layers}
        if len(ranks) != 1:
            raise InitError(f"CorDA here expects one rank for every layer, found {sorted(ranks)}")

        def run_model():
            with torch.no_grad(), model.disable_adapter():
                for ids in self.samples(model, ctx):
                    model(input_ids=ids)

        # Target the frozen nn.Linear inside each attached LoRA layer ("...q_proj.base_layer"), the
        # modules peft's preprocess_corda would have hooked before get_peft_model.
        config = LoraConfig(r=ranks.pop(), lora_alpha=ctx.lora.alpha, target_modules=["base_layer"],
                            init_lora_weights="corda", corda_config=CordaConfig(corda_method=self.corda_method))
        preprocess_corda(model, config, run_model=run_model)
        for _, layer in layers:
            layer.corda_init(active_adapter(layer), "corda")


class CorDAIPM(CorDA):
    summary = "CorDA instruction-previewed: top-r SVD of W C (C = task-input covariance), residual frozen."
    corda_method = "ipm"


class CorDAKPM(CorDA):
    summary = "CorDA knowledge-preserving: bottom-r SVD of W C (C from 32 general-knowledge prompts)."
    corda_method = "kpm"

    def samples(self, model: torch.nn.Module, ctx: InitContext):
        tokenizer = ctx.tokenizer
        calib = ctx.calibration
        n = min(len(KNOWLEDGE_PROMPTS), calib.remaining)
        if n <= 0:
            raise InitError("corda-kpm needs calibration allowance (budget.calibration.examples) for its prompts")
        device = calib.device
        for start in range(0, n, calib.allowance.batch_size):
            chunk = [tokenizer(p, add_special_tokens=False)["input_ids"]
                     for p in KNOWLEDGE_PROMPTS[start : min(start + calib.allowance.batch_size, n)]]
            calib.spend.add_calibration_batch(len(chunk), sum(map(len, chunk)), calib.base_params, False)
            for ids in chunk:
                yield torch.tensor([ids], device=device)
