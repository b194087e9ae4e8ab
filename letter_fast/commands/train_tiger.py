"""``letter-fast train-tiger``: train TIGER (T5 over semantic IDs, ranking-guided loss) and evaluate it on test.

Reads a data set (``<Name>.inter.json``; folder, file path, or a name under the data root) and an item tokenization
(``--index``, a ``.index.json``; default: the data set's own ``<Name>.index.json``). Splits leave-one-out, trains
with early stopping on validation NDCG@10 (trie-constrained beam search), then ranks all test users.

Writes into ``--out-dir``: ``checkpoint.pt`` (resumable: run the same command again to continue; --no-resume
starts afresh), ``best.pt``, ``history.json`` (the learning curve), ``settings.toml`` (every setting of the run:
``--config <out-dir>/settings.toml`` repeats it), and ``metrics.json`` + ``metrics.md`` (test Recall/NDCG@5/10).
Multi-process: ``torchrun --nproc_per_node 2 -m letter_fast.cli train-tiger ...`` (gloo on CPU, NCCL on GPUs).

  letter-fast train-tiger instruments --out-dir runs/instruments-tiger
  letter-fast train-tiger /data/Scientific --index runs/sci/Scientific.index.json --tau 1.0 --epochs 50
  letter-fast train-tiger instruments --config letter_fast/configs/tiger.toml --batch-size 1024
"""

from __future__ import annotations

import argparse

from letter_fast.commands.common import add_common_arguments, finish_recommender_run, start_recommender_run


def add_parser(subparsers) -> argparse.ArgumentParser:
    from letter_fast.genrec.train import TigerTrainConfig

    p = subparsers.add_parser("train-tiger", help="train TIGER on semantic IDs and evaluate it", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    add_common_arguments(p, TigerTrainConfig, out_dir_help="run folder (default: runs/<name>-tiger)",
                         resume_help="continue from <out-dir>/checkpoint.pt when it exists")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from letter_fast.genrec.evaluate import write_results
    from letter_fast.genrec.train import TigerTrainConfig, train_and_evaluate_tiger

    run = start_recommender_run(args, TigerTrainConfig, "tiger")
    metrics = train_and_evaluate_tiger(run.dataset, run.codes, run.config, out_dir=run.out, log=run.log)
    finish_recommender_run(run, metrics, write_results, "TIGER", "samples")
    return 0
