"""EVA: explained variance adaptation.

Paper: Paischer et al., "One Initialization to Rule them All: Fine-tuning via Explained Variance
Adaptation", arXiv:2410.07170.  Code: peft ``peft.tuners.lora.eva`` (``get_eva_state_dict``,
``initialize_lora_eva_weights``, ``EvaConfig``).

Formula: for every targeted layer, the inputs x (non-padding tokens; with ``use_label_mask`` only the
tokens whose label is not -100, peft's default) of all calibration batches feed an incremental PCA
(peft's ``IncrementalPCA(n_components=round(rho*r), lowrank=True, lowrank_seed=42)``, the settings of
peft's ``SVDHook``).  A = the top principal components (rows of ``components_``), B = 0, base unchanged.
Rank redistribution (``rho`` > 1, default 2): the total rank budget sum_l r is shared out by the
largest explained-variance ratios over all layers (layers with identical inputs -- q/k/v, gate/up --
share one PCA, as peft's hash check does); a layer's alpha is multiplied by new_r / r so alpha/r is
unchanged (``adjust_scaling_factors``).  The final load is peft's own ``initialize_lora_eva_weights(
model, eva_state_dict=...)``.  Paper/peft example scaling: alpha = 1.

Why the PCA loop is here and not peft's ``get_eva_state_dict``: peft iterates
``itertools.cycle(dataloader)`` until every component's cosine similarity between two steps exceeds
``tau`` (0.99), plus one extra pass to hash inputs.  That loop has no bound on the passes it makes
and replays cached batches without asking the dataloader again, so it can neither be held to the
suite's ``budget.calibration.examples`` nor be charged for its passes.  Here each calibration batch
from ``ctx.calibration.batches()`` (budgeted and counted) is seen exactly once; the convergence test
``tau`` is not applied, and a batch with fewer usable tokens than components is carried over to the
next one instead of skipped.
"""

from __future__ import annotations

from collections import Counter

import torch

from initbench.api import InitContext, InitError, InitMethod, LoraSettings


class EVA(InitMethod):
    summary = "A = top PCA components of each layer's calibration inputs, B = 0; ranks redistributed (rho=2)."
    paper = "Paischer et al. 2024, arXiv:2410.07170"
    code = "https://github.com/huggingface/peft (init_lora_weights='eva', initialize_lora_eva_weights)"
    peft_init = "eva"

    def __init__(self, rho: float = 2.0, use_label_mask: bool = True, whiten: bool = False,
                 adjust_scaling_factors: bool = True, lowrank: bool = True, alpha: float = 1.0):
        self.rho = rho
        self.use_label_mask = use_label_mask
        self.whiten = whiten
        self.adjust_scaling_factors = adjust_scaling_factors
        self.lowrank = lowrank
        self.alpha = alpha

    def default_alpha(self, rank: int) -> float:
        return self.alpha

    def lora_config_kwargs(self, lora: LoraSettings) -> dict:
        from peft import EvaConfig

        config = EvaConfig(rho=self.rho, use_label_mask=self.use_label_mask, whiten=self.whiten,
                           adjust_scaling_factors=self.adjust_scaling_factors)
        return {"init_lora_weights": self.peft_init, "eva_config": config}

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        from peft import initialize_lora_eva_weights

        state = self.eva_state_dict(model, ctx)
        initialize_lora_eva_weights(model, eva_state_dict=state, show_progress_bar=False)

    def eva_state_dict(self, model: torch.nn.Module, ctx: InitContext) -> dict[str, torch.Tensor]:
        """Per LoRA layer, its EVA A matrix (new_rank, in) from one budgeted pass over the calibration data."""
        from peft.utils.incremental_pca import IncrementalPCA

        layers = ctx.lora_layers()
        ranks = {name: layer.r[layer.active_adapters[0]] for name, layer in layers}
        max_components = {name: round(r * self.rho) for name, r in ranks.items()}
        pcas: dict[str, IncrementalPCA] = {}
        buffers: dict[str, list[torch.Tensor]] = {}
        same_as: dict[str, str] = {}  # layer -> the layer whose PCA it shares
        for step, batch in enumerate(ctx.calibration.batches()):
            mask = batch["attention_mask"].bool()
            if self.use_label_mask:
                mask &= batch["labels"] != -100
            captured = _capture_inputs(model, layers, batch, mask)
            if step == 0:
                same_as = _equal_inputs(captured)
                for name, rep in same_as.items():
                    max_components[rep] = max(max_components[rep], max_components[name])
                for name, rep in same_as.items():
                    max_components[name] = max_components[rep]
                pcas = {name: IncrementalPCA(n_components=max_components[name], copy=True, lowrank=self.lowrank,
                                             lowrank_seed=42)
                        for name in captured if name not in same_as}
            for name, pca in pcas.items():
                buffers.setdefault(name, []).append(captured[name])
                states = torch.cat(buffers[name])
                if states.shape[0] >= pca.n_components:
                    pca.partial_fit(states)
                    buffers[name] = []
        missing = [name for name, pca in pcas.items() if not hasattr(pca, "components_")]
        if missing or not pcas:
            raise InitError(f"EVA saw fewer calibration tokens than components for {missing or 'every layer'}; "
                            "raise budget.calibration.examples or lower rho")
        hook_of = {name: same_as.get(name, name) for name in ranks}
        counts = self._rank_distribution(pcas, hook_of, same_as, sum(ranks.values()), max_components)
        state = {}
        for name, rank in counts.items():
            pca = pcas[hook_of[name]]
            u = pca.components_[:rank].clone()
            if self.whiten:
                u /= pca.singular_values_[:rank].sqrt().reshape(-1, 1)
            state[name] = u
        return state

    @staticmethod
    def _rank_distribution(pcas, hook_of, same_as, budget, max_components) -> dict[str, int]:
        """peft's rule: the ``budget`` largest explained-variance ratios over all layers win a rank each."""
        ratios = {name: pca.explained_variance_ratio_[: max_components[name]] for name, pca in pcas.items()}
        owners, values = zip(*[(name, v) for name, hook in hook_of.items() for v in ratios[hook]])
        order = torch.stack(list(values)).argsort(descending=True)
        won = Counter(owners[i] for i in order[:budget].tolist())
        counts = {name: won.get(name, 0) for name in hook_of}
        for name, hook in same_as.items():  # the PCA-owning layer keeps the highest rank of its group
            if counts[hook] < counts[name]:
                counts[hook], counts[name] = counts[name], counts[hook]
        return counts


def _capture_inputs(model, layers, batch, mask) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def capture(_module, args, _output):
            captured[name] = args[0].detach()[mask].to(torch.float32)
        return capture

    handles = [layer.get_base_layer().register_forward_hook(hook(name)) for name, layer in layers]
    try:
        with torch.no_grad(), model.disable_adapter():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _equal_inputs(captured: dict[str, torch.Tensor]) -> dict[str, str]:
    """Map each layer whose input equals an earlier layer's to that earlier layer."""
    same_as: dict[str, str] = {}
    reps: list[str] = []
    for name, x in captured.items():
        for rep in reps:
            if captured[rep].shape == x.shape and torch.equal(captured[rep], x):
                same_as[name] = rep
                break
        else:
            reps.append(name)
    return same_as
