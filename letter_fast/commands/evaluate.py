"""``letter-fast evaluate``: rank every test (or validation) user with a trained TIGER or LC-Rec model.

Trie-constrained beam search over the item identifiers (20 beams by default), full ranking, Recall@5/10 and
NDCG@5/10; item-level variants too when identifiers collide. ``--checkpoint`` is a TIGER ``best.pt`` /
``checkpoint.pt`` file, or an LC-Rec model folder (``train-lcrec``'s ``<out-dir>/best``, or the run folder holding
it); the kind is detected (``--recommender tiger|lcrec`` insists on one). LC-Rec is evaluated per prompt template
(``--templates 0``, ``0,2`` or ``all``) and their mean; it needs the extra ``pip install ".[lcrec]"``.

Prints a table and writes, into --out-dir (default: the checkpoint's folder; for an LC-Rec ``best/`` folder its run
folder), ``<split>_metrics.json`` + ``.md`` and ``<split>_settings.toml``. With --resume (the default) a result
already there for the same model (by the SHA-256 of its files), identifiers, split and settings is printed again
instead of recomputed.

  letter-fast evaluate instruments --checkpoint runs/instruments-tiger/best.pt
  letter-fast evaluate Scientific --index sci.index.json --checkpoint best.pt --split valid --out-dir eval/
  letter-fast evaluate instruments --checkpoint runs/instruments-lcrec/best --templates all
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from letter_fast.commands.common import add_common_arguments, common_value, require_dataset
from letter_fast.config import config_from_args, save_settings, setting
from letter_fast.training import THREADS_HELP, cpu_threads


@dataclass
class EvaluateConfig:
    """Full-ranking evaluation of a TIGER checkpoint or an LC-Rec model by trie-constrained beam search."""

    recommender: str = setting("auto", "auto (from the checkpoint: a file is TIGER, a folder "
                                       "LC-Rec) | tiger | lcrec")
    split: str = setting("test", "which held-out item: test | valid")
    num_beams: int = setting(20, "beams of the beam search (>= 10 to score @10)")
    batch_size: int = setting(256, "users per beam-search batch")
    templates: str = setting("0", "LC-Rec only: the seqrec prompt templates to evaluate "
                                  "(0, a comma list such as 0,2, or all); metrics per "
                                  "template and their mean")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    threads: int = setting(1, THREADS_HELP)

    def check(self) -> EvaluateConfig:
        if self.recommender not in ("auto", "tiger", "lcrec"):
            raise ValueError(f"--recommender must be auto, tiger or lcrec, got {self.recommender!r}")
        if self.split not in ("test", "valid"):
            raise ValueError(f"--split must be test or valid, got {self.split!r}")
        if self.num_beams < 10:
            raise ValueError(f"--num-beams must be >= 10 to score Recall/NDCG@10, got {self.num_beams}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        return self


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="Recall/NDCG@5/10 of a trained TIGER or LC-Rec (full ranking)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    p.add_argument("--checkpoint", required=True, help="a train-tiger best.pt / checkpoint.pt, or a train-lcrec "
                                                       "model folder (<out-dir>/best or <out-dir>)")
    add_common_arguments(p, EvaluateConfig, out_dir_help="output folder (default: the checkpoint's folder)",
                         resume_help="reuse a result already in --out-dir for the same checkpoint and settings")
    p.set_defaults(run=run)
    return p


def _sha256(path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes, in name order)."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def checkpoint_kind(path, recommender: str = "auto") -> tuple[str, Path]:
    """``("tiger", file)`` or ``("lcrec", model folder)`` for ``--checkpoint path`` (one clear error otherwise)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        folder = path / "best" if (path / "best" / "lcrec.json").is_file() else path
        if not (folder / "lcrec.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but no LC-Rec model folder (no lcrec.json in it or in "
                                    f"{path / 'best'}); TIGER checkpoints are files (best.pt)")
        kind = "lcrec"
    else:
        folder, kind = path, "tiger"
    if recommender != "auto" and recommender != kind:
        what = "an LC-Rec model folder" if kind == "lcrec" else \
            "a file (TIGER checkpoints are files, LC-Rec models folders)"
        raise ValueError(f"--recommender {recommender}, but {path} is {what}")
    return kind, folder


def _reuse(args, json_path: Path, key: dict) -> bool:
    if not (args.resume and json_path.is_file()):
        return False
    try:
        stored = json.loads(json_path.read_text())
    except ValueError:
        return False
    if stored.get("inputs") != key:
        return False
    print(json_path.with_suffix(".md").read_text() if json_path.with_suffix(".md").is_file() else "", end="")
    print(f"{stored['users']} users; unchanged inputs, result reused from {json_path}")
    return True


def run(args) -> int:
    cfg = config_from_args(EvaluateConfig, args).check()
    require_dataset(args)
    kind, _ = checkpoint_kind(args.checkpoint, cfg.recommender)
    with cpu_threads(cfg.threads):
        return run_lcrec(args, cfg) if kind == "lcrec" else run_tiger(args, cfg)


def run_tiger(args, cfg: EvaluateConfig) -> int:
    import torch

    from letter_fast.commands.common import load_data_and_codes
    from letter_fast.data import split_dataset
    from letter_fast.genrec.evaluate import evaluate_tiger, write_results
    from letter_fast.genrec.train import load_tiger, resolve_device

    torch.manual_seed(common_value(args, cfg, "seed", 0))  # beam search draws no random numbers
    device = resolve_device(cfg.device)
    model, vocab, config = load_tiger(args.checkpoint, device)
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    if codes.shape[1] != vocab.num_levels or int(codes.max()) >= vocab.num_codes:
        raise ValueError(f"the identifiers ({codes.shape[1]} levels, codes up to {int(codes.max())}) do not fit the "
                         f"checkpoint's vocabulary ({vocab.num_levels} levels x {vocab.num_codes} codes)")
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    json_path = out_dir / f"{cfg.split}_metrics.json"
    # what the result depends on: a stored result is reused only when all of it matches (device, threads aside)
    key = {"checkpoint_sha256": _sha256(args.checkpoint), "codes_sha256": hashlib.sha256(
        codes.contiguous().numpy().tobytes()).hexdigest(),
        **{k: v for k, v in asdict(cfg).items() if k not in ("device", "threads", "recommender", "templates")}}
    if _reuse(args, json_path, key):
        return 0
    split = split_dataset(dataset, max_history=config.max_history)
    samples = split.test if cfg.split == "test" else split.valid
    result = evaluate_tiger(model, vocab, samples, codes, num_beams=cfg.num_beams, batch_size=cfg.batch_size,
                            device=device, autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
                            max_history=config.max_history, progress=common_value(args, cfg, "progress", True))
    return _write(args, cfg, result, key, out_dir, json_path, write_results, f"TIGER on {dataset.name}")


def run_lcrec(args, cfg: EvaluateConfig) -> int:
    import torch

    from letter_fast.commands.common import load_data_and_codes
    from letter_fast.genrec.lcrec.evaluate import evaluate_lcrec, write_lcrec_results
    from letter_fast.genrec.lcrec.tokens import CodeTokens
    from letter_fast.genrec.lcrec.train import load_lcrec
    from letter_fast.training import resolve_device

    _, folder = checkpoint_kind(args.checkpoint, "lcrec")
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    out_dir = Path(args.out_dir) if args.out_dir else (folder.parent if folder.name == "best" else folder)
    json_path = out_dir / f"{cfg.split}_metrics.json"
    key = {"checkpoint_sha256": _sha256(folder), "codes_sha256": hashlib.sha256(
        codes.contiguous().numpy().tobytes()).hexdigest(),
        **{k: v for k, v in asdict(cfg).items() if k not in ("device", "threads", "recommender")}}
    if _reuse(args, json_path, key):
        return 0
    # the identifiers must fit the model's code tokens: checked before the model is loaded
    CodeTokens.load(folder).check_codes(codes, "the identifiers (--index)")
    device = resolve_device(cfg.device)
    model, tokenizer, code_tokens, config = load_lcrec(folder, device=device)
    bf16 = device.type == "cuda" and config.bf16
    result = evaluate_lcrec(model, tokenizer, code_tokens, dataset, codes, split=cfg.split, templates=cfg.templates,
                            num_beams=cfg.num_beams, batch_size=cfg.batch_size, max_history=config.max_history,
                            autocast_dtype=torch.bfloat16 if bf16 else None)
    return _write(args, cfg, result, key, out_dir, json_path, write_lcrec_results, f"LC-Rec on {dataset.name}")


def _write(args, cfg: EvaluateConfig, result: dict, key: dict, out_dir: Path, json_path: Path, write, name: str) -> int:
    """Both recommenders' results: ``<split>_metrics.json`` + ``.md`` (with the inputs' key that ``--resume``
    compares) and ``<split>_settings.toml``; prints the table."""
    result.update(split=cfg.split, checkpoint=str(args.checkpoint), data=str(args.dataset), inputs=key)
    table = write(result, json_path, json_path.with_suffix(".md"), name=f"{name} ({cfg.split})")
    save_settings(cfg, out_dir, name=f"{cfg.split}_settings.toml")
    print(table, end="")
    print(f"{result['users']} users; written to {json_path}")
    return 0
