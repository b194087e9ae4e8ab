"""``letter-fast run``: the whole pipeline on one data set, or on a synthetic catalog.

  semantic embeddings -> CF embeddings (SASRec) -> LETTER tokenizer -> TIGER or LC-Rec -> evaluation

Without a data set a synthetic catalog with planted semantic and collaborative structure is used
(no files, no downloads): the default run takes about five minutes on two CPU cores. With a data
set folder (LC-Rec/LETTER json), item text is embedded with the default encoder (all-MiniLM-L6-v2,
cached), unless --embeddings gives a file; --cf takes CF embeddings instead of training SASRec.
Budgets are epochs and steps, not minutes: the same command repeats exactly. Each stage writes into
--out-dir and resumes from it (--no-resume starts afresh); the final table lists SASRec and TIGER
Recall/NDCG@5/10 on the test split (full ranking, leave-one-out). ``--recommender lcrec`` fine-tunes LC-Rec
(``--lcrec-model PATH|smollm2``, LoRA; the extra ``pip install ".[lcrec]"``) instead of training TIGER. From Python:
``letter_fast.pipeline.run_pipeline(...)`` does the same.

  letter-fast run                                        # synthetic catalog
  letter-fast run scientific --tiger-max-steps 20000     # a data set under $LETTER_FAST_DATA
  letter-fast run scientific --recommender lcrec --lcrec-model smollm2 --lcrec-max-steps 2000
"""

from __future__ import annotations

import argparse

from letter_fast.commands.common import add_common_arguments
from letter_fast.config import config_from_args
from letter_fast.pipeline import PipelineConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="the whole pipeline: embeddings -> CF -> tokenizer -> TIGER / LC-Rec -> "
                                          "metrics",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", help="semantic embeddings file instead of embedding the item text")
    p.add_argument("--cf", help="CF embeddings file instead of training SASRec")
    add_common_arguments(p, PipelineConfig,
                         dataset_help="data set folder, <Name>.inter.json, or a name under the data root "
                                      "(default: a synthetic catalog)",
                         out_dir_help="output folder (default: runs/<name>/pipeline)",
                         resume_help="every stage continues from what --out-dir holds")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from letter_fast.pipeline import run_pipeline

    cfg = config_from_args(PipelineConfig, args)
    run_pipeline(args.dataset, args.out_dir, config=cfg, data_root=args.data_root, embeddings=args.embeddings,
                 cf=args.cf, resume=args.resume, progress=args.progress is not False)
    return 0
