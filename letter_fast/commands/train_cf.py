"""``letter-fast train-cf``: SASRec CF item embeddings for the LETTER tokenizer, with Recall/NDCG@5/10.

Trains SASRec on the leave-one-out training split of a data set (folder, <Name>.inter.json path, or a
name under the data root), early-stops on validation NDCG@10 (full ranking), reports validation and test
Recall/NDCG@5/10 and writes, into --out-dir (atomically):

  <Name>.sasrec-emb<d>.pt   float32 [num_items, d] item embeddings (row i = item i)
  metrics.json              settings, per-epoch log, validation and test metrics
  settings.toml             every setting of the run (``--config <out-dir>/settings.toml`` repeats it)
  sasrec.model.pt           the best model's weights
  sasrec.ckpt.pt            resumable checkpoint (rerun the same command to resume; --no-resume to restart)

With --use-file FILE no model is trained: a user-supplied [num_items, d] embedding file (e.g. the
LETTER release's Instruments.sasrec-emb32.pt) is checked against the data set and copied to --out-dir.

  letter-fast train-cf scientific --out-dir runs/scientific/sasrec
  letter-fast train-cf instruments --config letter_fast/configs/sasrec.toml --epochs 20
  letter-fast train-cf instruments --use-file /data/instruments/Instruments.sasrec-emb32.pt --out-dir runs/instr
"""

from __future__ import annotations

import argparse
from pathlib import Path

from letter_fast.cf.sasrec import SASRecConfig
from letter_fast.commands.common import add_common_arguments, common_value, require_dataset
from letter_fast.config import config_from_args, save_settings


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-cf", help="train SASRec CF embeddings (+ Recall/NDCG@5/10)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--use-file", metavar="FILE", help="check and take a user-supplied [num_items, d] embedding file "
                                                      "instead of training")
    add_common_arguments(p, SASRecConfig, out_dir_help="output folder (default: runs/<name>/sasrec)",
                         resume_help="continue from <out-dir>/sasrec.ckpt.pt when it exists")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from letter_fast.cf.sasrec import save_result, train_sasrec
    from letter_fast.data import load_dataset
    from letter_fast.data.embeddings import load_item_embeddings
    from letter_fast.io import save_tensor

    cfg = config_from_args(SASRecConfig, args).check()
    require_dataset(args)
    dataset = load_dataset(args.dataset, args.data_root)
    out_dir = Path(args.out_dir) if args.out_dir else Path("runs") / dataset.name.lower() / "sasrec"
    if args.use_file:
        emb = load_item_embeddings(args.use_file, dataset.num_items, what="CF embeddings")
        dest = out_dir / f"{dataset.name}.sasrec-emb{emb.shape[1]}.pt"
        save_tensor(emb, dest)
        print(f"{dataset.name}: CF embeddings {tuple(emb.shape)} from {args.use_file} checked -> {dest}")
        return 0
    print(f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
          f"{dataset.num_interactions} interactions -> {out_dir}")
    result = train_sasrec(dataset.histories, dataset.num_items, cfg, checkpoint=out_dir / "sasrec.ckpt.pt",
                          resume=args.resume, progress=common_value(args, None, "progress", True))
    paths = save_result(result, out_dir, dataset.name, cfg)
    save_settings(cfg, out_dir)
    print(f"wrote {paths['embeddings']} {tuple(result.embeddings.shape)} and {paths['metrics']} "
          f"({result.train_seconds:.0f} s training, best epoch {result.best_epoch}/{result.epochs_run})")
    return 0
