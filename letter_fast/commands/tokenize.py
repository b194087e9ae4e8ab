"""``letter-fast tokenize``: train the LETTER tokenizer and write collision-free identifiers.

Inputs: a data set (for its name and item count) with semantic item embeddings (``--embeddings``,
from ``letter-fast embed``) and, for the variants with CF regularization, CF embeddings (``--cf``,
from ``letter-fast train-cf``); or ``--synthetic`` for a generated catalog that needs neither.
Writes into --out-dir (atomically): ``<Name>.index.json`` (LC-Rec/LETTER format),
``<Name>.codes.pt``, ``tokenizer_report.json``, ``first_level_codes.png``, ``best.pt``, ``settings.toml``
(every setting: ``--config <out-dir>/settings.toml`` repeats the run), a resumable ``tokenizer.ckpt``
(rerun the same command to resume; --no-resume to restart) and, with ``--curve-every N``, ``curve.csv``: the
identifiers' learning curve, a row every N epochs (``benchmarks/tokenizer_curve.py`` plots it).

  letter-fast tokenize scientific --embeddings runs/scientific/Scientific.emb-minilm.npy \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --variant letter
  letter-fast tokenize --synthetic --variant rqvae --epochs 50

Data-parallel on several processes (CPUs with gloo, or one GPU each with NCCL and --device cuda) under torchrun;
--batch-size stays the global batch (each rank takes its slice of every batch), so the run trains the model one
process trains, up to float rounding; rank 0 writes every output, and a checkpoint resumes with any process count:

  torchrun --nproc_per_node 2 -m letter_fast.cli tokenize --synthetic --variant letter --epochs 50
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from letter_fast.commands.common import add_common_arguments
from letter_fast.config import config_from_args, save_settings
from letter_fast.tokenizer.config import TokenizeConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("tokenize", help="train the LETTER tokenizer, write item identifiers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", action="store_true", help="use a generated catalog (no files needed)")
    p.add_argument("--embeddings", help="[num_items, D] semantic embeddings (.npy or torch file)")
    p.add_argument("--cf", help="[num_items, latent_dim] CF embeddings (needed when alpha > 0)")
    add_common_arguments(p, TokenizeConfig, out_dir_help="output folder (default: runs/<name>/tokenizer-<variant>)",
                         resume_help="continue from <out-dir>/tokenizer.ckpt when it exists")
    p.set_defaults(run=run)
    return p


def load_inputs(args, cfg: TokenizeConfig):
    """(name, semantic embeddings, CF embeddings or None) from the arguments."""
    from letter_fast.data import load_dataset, make_synthetic_catalog
    from letter_fast.data.embeddings import load_item_embeddings
    from letter_fast.tokenizer.stream import open_embeddings

    alpha, _ = cfg.weights()
    if args.synthetic:
        catalog = make_synthetic_catalog(cf_dim=cfg.latent_dim, seed=cfg.seed)
        return catalog.name, catalog.embeddings["semantic"], catalog.embeddings["cf_planted"]
    if not args.dataset:
        raise ValueError("give a data set (folder or name) or --synthetic")
    if not args.embeddings:
        raise ValueError("--embeddings is required with a data set (make them with `letter-fast embed`)")
    dataset = load_dataset(args.dataset, args.data_root)
    if str(args.embeddings).endswith(".npy"):  # memory-mapped, checked in chunks, never read whole
        semantic = open_embeddings(args.embeddings, dataset.num_items, what="semantic embeddings")
    else:
        semantic = load_item_embeddings(args.embeddings, dataset.num_items, what="semantic embeddings")
    cf = None
    if args.cf:
        cf = load_item_embeddings(args.cf, dataset.num_items, dim=cfg.latent_dim, what="CF embeddings")
    elif alpha > 0:
        raise ValueError(f"variant {cfg.variant!r} (alpha={alpha}) needs --cf CF embeddings "
                         "(make them with `letter-fast train-cf`), or use --variant rqvae/diversity")
    return dataset.name, semantic, cf


def run(args) -> int:
    from letter_fast.tokenizer.pipeline import tokenize_items

    cfg = config_from_args(TokenizeConfig, args).check()
    name, semantic, cf = load_inputs(args, cfg)
    out_dir = Path(args.out_dir) if args.out_dir else Path("runs") / name.lower() / f"tokenizer-{cfg.variant}"
    alpha, beta = cfg.weights()
    main = int(os.environ.get("RANK", "0")) == 0   # under torchrun only rank 0 writes and reports
    if main:
        print(f"{name}: {semantic.shape[0]} items, semantic {tuple(semantic.shape)}, "
              f"CF {tuple(cf.shape) if cf is not None else None}; variant {cfg.variant} (alpha={alpha}, beta={beta})"
              f" -> {out_dir}")
        save_settings(cfg, out_dir)
    report = tokenize_items(semantic, cf, out_dir, name, cfg.model_settings(), cfg.train_config(),
                            resume=args.resume)
    if not main:
        return 0
    summary = {k: report[k] for k in ("collision_rate_before_reassignment", "collision_rate", "first_level_gini",
                                      "cf_neighbour_code_similarity", "seconds_per_epoch") if k in report}
    print(json.dumps(summary, indent=1))
    print(f"wrote {out_dir / (name + '.index.json')}")
    return 0
