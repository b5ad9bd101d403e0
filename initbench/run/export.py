"""Adapters out: a trained run saved so that stock tools load it on the *original* base model.

What a run trains is not always a plain LoRA on the base model it was given: residual-base inits
(PiSSA, MiLoRA, OLoRA, LoRA-GA, CorDA, LoLDU, SVFit, FWSVD) replace the frozen base weight,
middle-matrix and diagonal methods (LoRA-SB, LoRA-XS, NLoRA, SLoRA, LoLDU, SVFit) put a matrix
between B and A (``initbench.method.adapters``), LoftQ replaces the base by a quantized weight.
:func:`save_trained` writes each of them as a plain peft LoRA adapter such that stock
``PeftModel.from_pretrained(base, folder)`` on the *unmodified* base model computes what the
trained model computes.  One rule covers every method: per targeted layer the trained model adds
``(W - W0) + scale B [M] A`` to the original weight W0 (``W`` its current base weight, the second
term peft's ``get_delta_weight``, which folds a middle), and the export writes exactly that:

- ``factors``: a layer whose base weight is still W0, bit for bit, keeps its trained factors,
  ``B`` and ``[M] A`` (a middle folded into A), at the run's rank and scale;
- ``svd``: a layer whose base changed gets the float64 SVD of its whole update, truncated where
  what is left out is at most ``DROP_RTOL`` times the larger of ``||W0||_F`` and ``||W||_F``
  (Frobenius; the float32 rounding of a residual ``W`` alone is about 3e-8 of it, and that is what
  the truncation drops: 2e-8 to 1e-7 in practice), written as ``B' = U sqrt(S)``,
  ``A' = sqrt(S) V^T`` at that layer's rank k, with ``rank_pattern``/``alpha_pattern`` entries
  (its full module name) that make its scale exactly 1 (``alpha = k``, or ``sqrt(k)`` with
  rsLoRA).  For PiSSA-like inits k is at most 2r (the trained ``scale B A`` minus the
  ``scale B0 A0`` taken out of W0, peft's rank-2r conversion found by the SVD); LoftQ's quantized
  base differs from W0 at full rank, so its layers export at (nearly) full rank: exact, but
  larger than the weights they update.

Why not peft's own ``save_pretrained``: for an init peft runs at attach, the saved config makes
``from_pretrained`` redo that init on the base it loads onto (observed for PiSSA: the model comes
back, by changing the base), and an init initbench writes itself (MiLoRA, LoLDU, ...) does not come
back at all (``tests/test_export.py``).

Anything else that differs from the original model (a bias, a norm, an embedding) cannot be
carried by a LoRA adapter and is an ``ExportError``, as are DoRA, LoRA biases and
``modules_to_save``.  Full fine-tuning (no adapters) is saved as a full checkpoint
(``save_pretrained`` of the trained model and its tokenizer).

A saved folder is ``<run stem>.adapter`` beside the run's results file: peft's
``adapter_config.json`` and ``adapter_model.safetensors`` (or a full checkpoint), and
``initbench_run.json``, the run's key (run id, suite, spec hash, method, task, seed, learning
rate, code commit, ...) and how it was exported.  peft's config has no free-form field (an
unknown key makes ``LoraConfig`` warn on load), so the key lives in that file and, for adapters,
also in the safetensors header's metadata (``initbench_run``), which every loader ignores.
Before a folder is written, the exported model is checked against the trained one on a probe
batch; the largest absolute logit difference is recorded (``verified_max_abs_logit_diff``): about
1e-7 on the tiny test models, 0 for ``factors`` layers, and on the embedded SmolLM2 (logits up to
~40) 9e-5 to 3.5e-4 for PiSSA, the size of float32 reassociation (a PiSSA model with perturbed factors
differs from its own ``merge_and_unload`` by 1.5e-4); stock lm-eval on the export gave the run's scores
to 3e-8.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from initbench.inputs.data import collate

if TYPE_CHECKING:  # pragma: no cover
    from initbench.inputs.models import LoadedModel
    from initbench.spec.suite import Suite

ADAPTER_SUFFIX = ".adapter"
RUN_JSON = "initbench_run.json"
#: the largest part of a changed layer's update the SVD export may leave out, relative to ||W0||_F
DROP_RTOL = 1e-6
#: the largest logit difference, relative to the largest logit (at least 1), a saved export may show on the
#: probe: float32 models, and 16-bit ones.  float32 reassociation alone moves the embedded SmolLM2's logits
#: (up to ~40) by 1.5e-4 (a PiSSA model with perturbed factors against its own ``merge_and_unload``; against
#: its export: 1.7e-4), so this
#: catches a wrong layer or scale (differences of order 1), not rounding
VERIFY_RTOL, VERIFY_RTOL_16BIT = 1e-4, 5e-2
PEFT_PREFIX = "base_model.model."
#: peft LoRA options an export cannot carry faithfully as a plain LoRA on the original base
UNSUPPORTED = ("use_dora", "lora_bias", "modules_to_save", "trainable_token_indices", "layer_replication")


#: the results columns a saved folder's ``initbench_run.json`` copies: the run's key and what scores it
RUN_KEYS = (
    "run_id",
    "suite",
    "suite_hash",
    "method",
    "method_version",
    "task",
    "lm_eval_task",
    "seed",
    "learning_rate",
    "protocol",
    "selected_lr",
    "config_hash",
    "data_hash",
    "code_commit",
    "code_dirty",
    "code_hash",
    "model",
    "model_revision",
    "dtype",
    "lora_rank",
    "lora_alpha",
    "lora_scale",
    "use_rslora",
    "eval_batch_size",
    "eval_limit",
    "primary_metric",
    "device",
    "start_time",
    "initbench_version",
    "peft_version",
    "lm_eval_version",
)


class ExportError(RuntimeError):
    """A trained model cannot be written as a plain adapter on the original base model."""


@dataclass
class LayerUpdate:
    """One targeted layer's update as plain LoRA factors: ``scale * B @ A`` added to W0."""

    name: str  # module name in the base model, e.g. model.layers.0.self_attn.q_proj
    B: torch.Tensor  # (out, rank)
    A: torch.Tensor  # (rank, in)
    scale: float  # peft's scaling of the layer: the run's for ``factors``, 1 for ``svd``
    how: str  # factors | svd
    dropped: float = 0.0  # what the SVD left out, ||.||_F / ||W0||_F

    @property
    def rank(self) -> int:
        return self.A.shape[0]


def saved_folder(stem: Path) -> Path:
    """Where a run's adapter (or full checkpoint) is saved: ``<stem>.adapter`` beside its results file."""
    return stem.with_name(stem.name + ADAPTER_SUFFIX)


def describe(export: dict[str, Any]) -> str:
    """One line on a saved export: its format, ranks and size on disk."""
    size = f"{export['bytes'] / 2**20:.2f} MiB"
    if export["format"] != "peft-lora":
        return f"full checkpoint ({size})"
    return (
        f"adapter ({export['layers']} LoRA layers, {export['layers_svd']} by SVD of the update, max rank "
        f"{export['max_rank']}; {size})"
    )


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def plain_updates(model: torch.nn.Module, original: torch.nn.Module) -> list[LayerUpdate]:
    """Every LoRA layer of the trained peft ``model`` as plain factors on ``original`` (the base model
    as loaded, never the modified one), after checking nothing outside them changed."""
    from initbench.method.api import active_adapter, lora_layers

    check_supported(model)
    updates = []
    for qualified, layer in lora_layers(model):
        name = qualified.removeprefix(PEFT_PREFIX)
        w0 = original.get_submodule(name).weight
        updates.append(layer_update(name, layer, active_adapter(layer), w0))
    if not updates:
        raise ExportError("the trained model has no LoRA layer to export")
    check_rest_unchanged(model, original, {u.name for u in updates})
    return updates


def layer_update(name: str, layer: torch.nn.Module, adapter: str, w0: torch.Tensor) -> LayerUpdate:
    """The layer's trained update relative to ``w0`` (see the module docstring: ``factors`` or ``svd``)."""
    if getattr(layer, "fan_in_fan_out", False):
        raise ExportError(f"{name}: fan_in_fan_out layers (Conv1D) are not supported by the export")
    weight = layer.get_base_layer().weight.detach()
    if weight.shape != w0.shape:
        raise ExportError(
            f"{name}: base weight {tuple(weight.shape)} differs in shape from the original {tuple(w0.shape)}"
        )
    w0 = w0.detach().to(weight.device)
    with torch.no_grad():
        B = layer.lora_B[adapter].weight.detach()
        A = layer.lora_A[adapter].weight.detach()  # M @ A for a layer with a middle (adapters.MiddleA)
        if torch.equal(weight, w0):
            return LayerUpdate(name, B.clone(), A.to(B.dtype).clone(), float(layer.scaling[adapter]), "factors")
        delta = weight.double() - w0.double() + layer.get_delta_weight(adapter).detach().double()
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
        tail = torch.flip(torch.cumsum(torch.flip(S.square(), [0]), 0), [0]).sqrt()  # tail[k] = ||S[k:]||
        norm = max(float(torch.linalg.matrix_norm(w.double())) for w in (w0, weight)) or 1.0
        k = max(1, int((tail > DROP_RTOL * norm).sum()))  # tail is non-increasing: k = the first tail[k] in budget
        dropped = float(tail[k]) / norm if k < len(S) else 0.0
        root = S[:k].sqrt()
        B_exp, A_exp = (U[:, :k] * root).to(B.dtype), (root[:, None] * Vh[:k]).to(B.dtype)
    return LayerUpdate(name, B_exp.contiguous(), A_exp.contiguous(), 1.0, "svd", dropped)


def check_rest_unchanged(model: torch.nn.Module, original: torch.nn.Module, layers: set[str]) -> None:
    """Every parameter and buffer of ``model`` outside its LoRA factors and the targeted weights equals
    ``original``'s (what a plain LoRA adapter cannot carry); an ``ExportError`` names the first that differs."""
    trained = {
        key.removeprefix(PEFT_PREFIX).replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if ".lora_" not in key
    }
    for key, value in original.state_dict().items():
        if key.removesuffix(".weight") in layers and key.endswith(".weight"):
            continue
        other = trained.get(key)
        if other is None or other.shape != value.shape or not torch.equal(other, value.to(other.device)):
            raise ExportError(
                f"{key} differs from the original base model: a LoRA adapter cannot carry a change "
                "outside the targeted layers' weights"
            )


def check_supported(model: torch.nn.Module) -> None:
    """One LoRA adapter, with none of the peft options a plain LoRA on the original base cannot carry."""
    configs = list(model.peft_config.values())
    if len(configs) != 1 or type(configs[0]).__name__ != "LoraConfig":
        raise ExportError(f"the export takes one LoRA adapter, the model has {[type(c).__name__ for c in configs]}")
    for option in UNSUPPORTED:
        if getattr(configs[0], option, None):
            raise ExportError(
                f"the run's LoRA uses {option}={getattr(configs[0], option)!r}, which the plain-LoRA "
                "export cannot carry"
            )


def export_config(model: torch.nn.Module, updates: list[LayerUpdate]):
    """The plain ``LoraConfig`` of the export: the run's rank, alpha, scaling convention and targets,
    with a rank/alpha pattern entry (scale 1) for each layer exported by SVD, listed first so it wins."""
    from peft import LoraConfig

    check_supported(model)
    (config,) = model.peft_config.values()
    svd = [u for u in updates if u.how == "svd"]
    ranks = {u.name: u.rank for u in svd}
    alphas = {u.name: math.sqrt(u.rank) if config.use_rslora else float(u.rank) for u in svd}
    targets = config.target_modules
    return LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        use_rslora=config.use_rslora,
        lora_dropout=config.lora_dropout,
        target_modules=sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
        exclude_modules=config.exclude_modules,
        layers_to_transform=config.layers_to_transform,
        layers_pattern=config.layers_pattern,
        bias=config.bias,
        task_type=config.task_type,
        rank_pattern={**ranks, **dict(config.rank_pattern or {})},
        alpha_pattern={**alphas, **dict(config.alpha_pattern or {})},
        init_lora_weights=True,
    )


def build_export(original: torch.nn.Module, config, updates: list[LayerUpdate]):
    """``original`` with the exported adapter attached (peft, as ``PeftModel.from_pretrained`` builds it)
    and the factors written; an ``ExportError`` if peft built another layer set, rank or scale."""
    from peft import get_peft_model

    from initbench.method.api import active_adapter, lora_layers

    exported = get_peft_model(original, config)
    layers = {name.removeprefix(PEFT_PREFIX): layer for name, layer in lora_layers(exported)}
    if layers.keys() != {u.name for u in updates}:
        raise ExportError(
            f"the exported config targets other layers than the run: "
            f"{sorted(layers.keys() ^ {u.name for u in updates})[:3]}"
        )
    with torch.no_grad():
        for update in updates:
            layer = layers[update.name]
            adapter = active_adapter(layer)
            if layer.r[adapter] != update.rank or layer.scaling[adapter] != update.scale:
                raise ExportError(
                    f"{update.name}: peft built rank {layer.r[adapter]} scale {layer.scaling[adapter]}, "
                    f"the export needs rank {update.rank} scale {update.scale}"
                )
            layer.lora_A[adapter].weight.copy_(update.A)
            layer.lora_B[adapter].weight.copy_(update.B)
    return exported.eval()


def max_logit_difference(a: torch.nn.Module, b: torch.nn.Module, probe: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(largest absolute logit difference between ``a`` and ``b`` on ``probe``, largest absolute logit of ``a``)."""
    with torch.no_grad():
        left = a(**probe).logits.float()
        right = b(**probe).logits.float()
    return float((left - right).abs().max()), float(left.abs().max())


def save_run(
    stem: Path,
    suite: Suite,
    loaded: LoadedModel,
    model: torch.nn.Module,
    examples: list[dict[str, list[int]]],
    record: dict[str, Any],
    scores: dict[str, float],
    label: str,
) -> Path:
    """Keep a final run's trained ``model`` (on the base model lent as ``loaded``) beside its results
    file as a plain adapter on the original base (:func:`save_trained`), checked on a probe of its first
    training ``examples``; says where and how big on stderr and returns the folder."""
    from initbench.run.lending import pristine_base  # loads transformers: not for ``share``'s imports

    device = next(model.parameters()).device
    probe = collate(examples[:4], loaded.tokenizer.pad_token_id)
    probe = {key: probe[key].to(device) for key in ("input_ids", "attention_mask")}
    run = {key: record.get(key) for key in RUN_KEYS}
    run.update(suite_path=str(Path(suite.path).resolve()), scores=scores)
    folder = saved_folder(stem)
    saved = save_trained(folder, model, loaded.tokenizer, lambda: pristine_base(suite, loaded), probe, run)
    print(f"initbench: {label}: {describe(saved['export'])} saved to {folder}", file=sys.stderr)
    return folder


def save_trained(
    folder: Path,
    model: torch.nn.Module,
    tokenizer,
    original: Callable[[], torch.nn.Module],
    probe: dict[str, torch.Tensor],
    run: dict[str, Any],
) -> dict[str, Any]:
    """Save the trained ``model`` at ``folder`` (replacing what is there, atomically): a plain LoRA adapter
    on the original base model for a peft model (``original`` loads that model: called only then), else a
    full checkpoint.  ``probe`` (input ids and attention mask) checks the export; ``run`` (the run's key)
    goes into ``initbench_run.json`` with how it was exported.  Returns that record."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if hasattr(model, "peft_config"):
            export = _save_adapter(tmp, model, original(), probe)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            export = {"format": "full-checkpoint"}
        if export["format"] == "peft-lora":
            _stamp_safetensors(tmp / "adapter_model.safetensors", run)
        record = {**run, "export": {**export, "bytes": 0}}
        while True:  # the record holds the folder's size, its own file included
            (tmp / RUN_JSON).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            if record["export"]["bytes"] == folder_bytes(tmp):
                break
            record["export"]["bytes"] = folder_bytes(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _save_adapter(
    tmp: Path, model: torch.nn.Module, original: torch.nn.Module, probe: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Convert, check against the trained model on ``probe``, and write peft's files into ``tmp``."""
    updates = plain_updates(model, original)
    exported = build_export(original, export_config(model, updates), updates)
    diff, top = max_logit_difference(model, exported, probe)
    full_precision = next(original.parameters()).dtype == torch.float32
    allowed = (VERIFY_RTOL if full_precision else VERIFY_RTOL_16BIT) * max(top, 1.0)
    if not diff <= allowed:
        raise ExportError(
            f"the exported adapter's logits differ from the trained model's by {diff:.3g} on the probe "
            f"(largest logit {top:.3g}, allowed {allowed:.3g})"
        )
    exported.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
    (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card; `initbench export` writes the real one
    svd = [u for u in updates if u.how == "svd"]
    return {
        "format": "peft-lora",
        "layers": len(updates),
        "layers_svd": len(svd),
        "max_rank": max(u.rank for u in updates),
        "max_dropped_relative": max((u.dropped for u in svd), default=0.0),
        "drop_rtol": DROP_RTOL,
        "verified_max_abs_logit_diff": diff,
        "probe_max_abs_logit": top,
        "probe_tokens": int(probe["attention_mask"].sum()),
    }


def _stamp_safetensors(path: Path, record: dict[str, Any]) -> None:
    """Rewrite peft's adapter file with the run's key in its header metadata (``initbench_run``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata["initbench_run"] = json.dumps(record, sort_keys=True, default=str)
    save_file(tensors, str(path), metadata=metadata)


def read_saved(folder: Path) -> dict[str, Any]:
    """The ``initbench_run.json`` record of a saved folder."""
    return json.loads((Path(folder) / RUN_JSON).read_text())


def unsaved_finals(stems: list[Path]) -> list[Path]:
    """The runs among ``stems`` (finished earlier, skipped now) that are final runs of a method that trains,
    finished ``ok``, with no saved folder: they finished before adapters were asked for."""
    from initbench.store.results import RESULTS_SUFFIX, ResultsError, read_file

    missing = []
    for stem in stems:
        if saved_folder(stem).exists():
            continue
        try:
            row = read_file(stem.with_name(stem.name + RESULTS_SUFFIX)).slice(0, 1).to_pylist()[0]
        except (ResultsError, OSError, IndexError):
            continue
        if row["status"] == "ok" and row["phase"] == "final" and row["learning_rate"] is not None:
            missing.append(stem)
    return missing
