"""``letter-fast evaluate``: rank every test (or validation) user with a trained TIGER checkpoint.

Trie-constrained beam search over the item identifiers (20 beams by default), full ranking, Recall@5/10 and
NDCG@5/10; item-level variants too when identifiers collide. Prints a table and writes, into --out-dir (default:
the checkpoint's folder), ``<split>_metrics.json`` + ``.md`` and ``<split>_settings.toml``. With --resume (the
default) a result already there for the same checkpoint file (by its SHA-256), identifiers, split and settings is
printed again instead of recomputed.

  letter-fast evaluate instruments --checkpoint runs/instruments-tiger/best.pt
  letter-fast evaluate Scientific --index sci.index.json --checkpoint best.pt --split valid --out-dir eval/
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from letter_fast.commands.common import add_common_arguments, common_value, require_dataset
from letter_fast.config import config_from_args, save_settings


@dataclass
class EvaluateConfig:
    """Full-ranking evaluation of a TIGER checkpoint by trie-constrained beam search."""

    split: str = field(default="test", metadata={"help": "which held-out item: test | valid"})
    num_beams: int = field(default=20, metadata={"help": "beams of the beam search (>= 10 to score @10)"})
    batch_size: int = field(default=256, metadata={"help": "users per beam-search batch"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})

    def check(self) -> EvaluateConfig:
        if self.split not in ("test", "valid"):
            raise ValueError(f"--split must be test or valid, got {self.split!r}")
        if self.num_beams < 10:
            raise ValueError(f"--num-beams must be >= 10 to score Recall/NDCG@10, got {self.num_beams}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        return self


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="Recall/NDCG@5/10 of a trained TIGER (full ranking)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    p.add_argument("--checkpoint", required=True, help="a train-tiger best.pt or checkpoint.pt")
    add_common_arguments(p, EvaluateConfig, out_dir_help="output folder (default: the checkpoint's folder)",
                         resume_help="reuse a result already in --out-dir for the same checkpoint and settings")
    p.set_defaults(run=run)
    return p


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(args) -> int:
    import torch

    from letter_fast.commands.train_tiger import load_data_and_codes
    from letter_fast.data import split_dataset
    from letter_fast.genrec.evaluate import evaluate_tiger, write_results
    from letter_fast.genrec.train import load_tiger, resolve_device

    cfg = config_from_args(EvaluateConfig, args).check()
    require_dataset(args)
    torch.manual_seed(common_value(args, cfg, "seed", 0))  # beam search draws no random numbers
    device = resolve_device(cfg.device)
    model, vocab, config = load_tiger(args.checkpoint, device)
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    if codes.shape[1] != vocab.num_levels or int(codes.max()) >= vocab.num_codes:
        raise ValueError(f"the identifiers ({codes.shape[1]} levels, codes up to {int(codes.max())}) do not fit the "
                         f"checkpoint's vocabulary ({vocab.num_levels} levels x {vocab.num_codes} codes)")
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    json_path = out_dir / f"{cfg.split}_metrics.json"
    # what the result depends on: a stored result is reused only when all of it matches (device aside)
    key = {"checkpoint_sha256": _sha256(args.checkpoint), "codes_sha256": hashlib.sha256(
        codes.contiguous().numpy().tobytes()).hexdigest(), **{k: v for k, v in asdict(cfg).items() if k != "device"}}
    if args.resume and json_path.is_file():
        try:
            stored = json.loads(json_path.read_text())
        except ValueError:
            stored = {}
        if stored.get("inputs") == key:
            print(json_path.with_suffix(".md").read_text() if json_path.with_suffix(".md").is_file() else "", end="")
            print(f"{stored['users']} users; unchanged inputs, result reused from {json_path}")
            return 0
    split = split_dataset(dataset, max_history=config.max_history)
    samples = split.test if cfg.split == "test" else split.valid
    result = evaluate_tiger(model, vocab, samples, codes, num_beams=cfg.num_beams, batch_size=cfg.batch_size,
                            device=device, autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
                            max_history=config.max_history, progress=common_value(args, cfg, "progress", True))
    result.update(split=cfg.split, checkpoint=str(args.checkpoint), data=str(args.dataset), inputs=key)
    table = write_results(result, json_path, json_path.with_suffix(".md"),
                          name=f"TIGER on {dataset.name} ({cfg.split})")
    save_settings(cfg, out_dir, name=f"{cfg.split}_settings.toml")
    print(table, end="")
    print(f"{result['users']} users; written to {json_path}")
    return 0
