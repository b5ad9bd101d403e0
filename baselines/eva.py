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

The loop follows peft's ``_get_eva_state_dict`` within the calibration allowance: each batch's layer
inputs come from ``ctx.calibration.layer_inputs(labels_only=use_label_mask)`` (the suite's allowance,
cycling the training split if the allowance is larger, as peft's ``itertools.cycle(dataloader)``; every
pass charged, and none after the loop stops); per layer, a batch with fewer
usable tokens than components is dropped (peft's ``SVDHook``: "skipping SVD"); after each
``partial_fit`` a layer's components count as converged where their cosine similarity with the previous
step's is >= ``tau`` (0.99); a layer whose components needed by the current rank distribution have all
converged stops receiving batches (peft removes its hook) and resumes if the distribution later asks
for more; the rank distribution is recomputed after every batch once every layer has components; the
loop stops as soon as every layer has converged.  Where peft would go on cycling, the allowance ends
the loop: ``method_info`` records ``eva_converged`` (every layer converged), ``eva_batches`` (batches
run) and ``eva_layers_converged`` / ``eva_layers``; the components are used as they are (peft raises
on unconverged components, which it never reaches since it never stops early).
Differences: peft runs the first batch once more without fitting, only to hash layer inputs; here the
first fitted batch also finds the layers with equal inputs (compared exactly, ``torch.equal``), so the
same batches are fitted in the same order with one pass fewer.  EVA's reference has no fixed
calibration amount (it stops at convergence): its allowance is the suite's whole one.
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

    def __init__(
        self,
        rho: float = 2.0,
        use_label_mask: bool = True,
        whiten: bool = False,
        adjust_scaling_factors: bool = True,
        lowrank: bool = True,
        alpha: float = 1.0,
        tau: float = 0.99,
    ):
        self.rho = rho
        self.tau = tau
        self.use_label_mask = use_label_mask
        self.whiten = whiten
        self.adjust_scaling_factors = adjust_scaling_factors
        self.lowrank = lowrank
        self.alpha = alpha

    def default_alpha(self, rank: int) -> float:
        return self.alpha

    def lora_config_kwargs(self, lora: LoraSettings) -> dict:
        from peft import EvaConfig

        config = EvaConfig(
            rho=self.rho,
            tau=self.tau,
            use_label_mask=self.use_label_mask,
            whiten=self.whiten,
            adjust_scaling_factors=self.adjust_scaling_factors,
        )
        return {"init_lora_weights": self.peft_init, "eva_config": config}

    def initialize(self, model: torch.nn.Module, ctx: InitContext) -> None:
        from peft import initialize_lora_eva_weights

        state = self.eva_state_dict(model, ctx)
        initialize_lora_eva_weights(model, eva_state_dict=state, show_progress_bar=False)

    def eva_state_dict(self, model: torch.nn.Module, ctx: InitContext) -> dict[str, torch.Tensor]:
        """Per LoRA layer, its EVA A matrix (new_rank, in): peft's convergence loop over the budgeted
        calibration batches (see the module docstring); records the outcome in ``ctx.info``."""
        from peft.utils.incremental_pca import IncrementalPCA

        ranks = {layer.name: layer.rank for layer in ctx.layers()}
        max_components = {name: round(r * self.rho) for name, r in ranks.items()}
        pcas: dict[str, IncrementalPCA] = {}
        converged: dict[str, torch.Tensor] = {}  # per PCA: which components passed the cosine test
        active: dict[str, bool] = {}  # per PCA: still fitting (peft: its hook is registered)
        same_as: dict[str, str] = {}  # layer -> the layer whose PCA it shares
        hook_of: dict[str, str] = {}
        rank_dist = dict(max_components)
        n_batches = 0
        for captured in ctx.calibration.layer_inputs(labels_only=self.use_label_mask):
            if n_batches == 0:
                same_as = _equal_inputs(captured)
                for name, rep in same_as.items():
                    max_components[rep] = max(max_components[rep], max_components[name])
                for name, rep in same_as.items():
                    max_components[name] = max_components[rep]
                rank_dist = dict(max_components)
                hook_of = {name: same_as.get(name, name) for name in ranks}
                pcas = {
                    name: IncrementalPCA(
                        n_components=max_components[name], copy=True, lowrank=self.lowrank, lowrank_seed=42
                    )
                    for name in captured
                    if name not in same_as
                }
                converged = {name: torch.zeros(pca.n_components, dtype=torch.bool) for name, pca in pcas.items()}
                active = {name: True for name in pcas}
            n_batches += 1
            for name, pca in pcas.items():
                states = captured[name]
                if not active[name] or states.shape[0] < pca.n_components:
                    continue  # converged (peft removed its hook), or too few tokens (peft skips the batch)
                previous = pca.components_.clone() if hasattr(pca, "components_") else None
                pca.partial_fit(states)
                if previous is not None:
                    similarity = torch.nn.functional.cosine_similarity(pca.components_, previous)
                    converged[name] = similarity >= self.tau
            if all(hasattr(pca, "components_") for pca in pcas.values()):
                rank_dist = self._rank_distribution(pcas, hook_of, same_as, sum(ranks.values()), max_components)
            for name in pcas:
                active[name] = not bool(converged[name][: rank_dist[name]].all())
            if not any(active.values()):
                break
        missing = [name for name, pca in pcas.items() if not hasattr(pca, "components_")]
        if missing or not pcas:
            raise InitError(
                f"EVA saw fewer calibration tokens than components for {missing or 'every layer'}; "
                "raise budget.calibration.examples or lower rho"
            )
        done = sum(not flag for flag in active.values())
        ctx.info.update(
            eva_converged=done == len(pcas), eva_batches=n_batches, eva_layers_converged=done, eva_layers=len(pcas)
        )
        state = {}
        for name, rank in rank_dist.items():
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
