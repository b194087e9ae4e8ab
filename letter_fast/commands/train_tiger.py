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
import json
import os
from pathlib import Path

from letter_fast.commands.common import add_common_arguments, require_dataset
from letter_fast.config import config_from_args, save_settings


def add_parser(subparsers) -> argparse.ArgumentParser:
    from letter_fast.genrec.train import TigerTrainConfig

    p = subparsers.add_parser("train-tiger", help="train TIGER on semantic IDs and evaluate it", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    add_common_arguments(p, TigerTrainConfig, out_dir_help="run folder (default: runs/<name>-tiger)",
                         resume_help="continue from <out-dir>/checkpoint.pt when it exists")
    p.set_defaults(run=run)
    return p


def load_data_and_codes(data: str, data_root, index_path):
    """The data set and its ``[V, L]`` item codes (``index_path`` or the data set's own index)."""
    from letter_fast.data import load_dataset, read_index_json

    dataset = load_dataset(data, data_root)
    if index_path:
        codes = read_index_json(index_path, num_items=dataset.num_items)
    elif dataset.codes is not None:
        codes = dataset.codes
    else:
        raise FileNotFoundError(f"{dataset.name} has no {dataset.name}.index.json; pass the identifiers with --index")
    return dataset, codes


def run(args) -> int:
    from letter_fast.genrec.evaluate import write_results
    from letter_fast.genrec.train import TigerTrainConfig, train_and_evaluate_tiger

    config = config_from_args(TigerTrainConfig, args)
    config.validate()
    require_dataset(args)
    dataset, codes = load_data_and_codes(args.dataset, args.data_root, args.index)
    out = Path(args.out_dir) if args.out_dir else Path("runs") / f"{dataset.name.lower()}-tiger"
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not args.resume and main_rank and (out / "checkpoint.pt").exists():
        (out / "checkpoint.pt").unlink()
    if main_rank:
        save_settings(config, out)
        print(f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, identifiers {tuple(codes.shape)}"
              f" -> {out}")
    metrics = train_and_evaluate_tiger(dataset, codes, config, out_dir=out,
                                       log=print if main_rank else (lambda *a: None))
    if main_rank:
        result = {"metrics": {k: v for k, v in metrics.items() if "@" in k and not k.startswith("best")},
                  "users": metrics["test_users"], "num_beams": config.num_beams, "details": metrics}
        table = write_results(result, out / "metrics.json", out / "metrics.md", name=f"TIGER on {dataset.name}")
        speed = json.loads((out / "timing.json").read_text()).get("train_samples_per_s", float("nan")) \
            if (out / "timing.json").exists() else float("nan")
        print(f"stopped: {metrics['stopped']}; training {speed:.0f} samples/s")
        print(table, end="")
    return 0
