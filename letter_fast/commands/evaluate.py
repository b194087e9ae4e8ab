"""``letter-fast evaluate``: rank every test (or validation) user with a trained TIGER checkpoint.

Trie-constrained beam search over the item identifiers (20 beams by default), full ranking, Recall@5/10 and
NDCG@5/10; item-level variants too when identifiers collide. Prints a table and writes json + markdown.

  letter-fast evaluate --data instruments --checkpoint runs/instruments-tiger/best.pt
  letter-fast evaluate --data Scientific --index sci.index.json --checkpoint best.pt --split valid --json out.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="Recall/NDCG@5/10 of a trained TIGER (full ranking)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data set folder, <Name>.inter.json, or a name under the data root")
    p.add_argument("--data-root", help="folder of data sets (default: $LETTER_FAST_DATA or a sibling shared/data)")
    p.add_argument("--index", help="item identifiers (.index.json; default: the data set's <Name>.index.json)")
    p.add_argument("--checkpoint", required=True, help="a train-tiger best.pt or checkpoint.pt")
    p.add_argument("--split", choices=["test", "valid"], default="test", help="which held-out item (default: test)")
    p.add_argument("--num-beams", type=int, default=20, help="beams (>= 10; default 20)")
    p.add_argument("--batch-size", type=int, default=256, help="users per beam-search batch (default 256)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", help="write the result here (default: beside the checkpoint, <split>_metrics.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import torch

    from letter_fast.commands.train_tiger import load_data_and_codes
    from letter_fast.data import split_dataset
    from letter_fast.genrec.evaluate import evaluate_tiger, write_results
    from letter_fast.genrec.train import load_tiger, resolve_device

    if args.num_beams < 10:
        raise ValueError(f"--num-beams must be >= 10 to score Recall/NDCG@10, got {args.num_beams}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    model, vocab, config = load_tiger(args.checkpoint, device)
    dataset, codes = load_data_and_codes(args.data, args.data_root, args.index)
    if codes.shape[1] != vocab.num_levels or int(codes.max()) >= vocab.num_codes:
        raise ValueError(f"the identifiers ({codes.shape[1]} levels, codes up to {int(codes.max())}) do not fit the "
                         f"checkpoint's vocabulary ({vocab.num_levels} levels x {vocab.num_codes} codes)")
    split = split_dataset(dataset, max_history=config.max_history)
    samples = split.test if args.split == "test" else split.valid
    result = evaluate_tiger(model, vocab, samples, codes, num_beams=args.num_beams, batch_size=args.batch_size,
                            device=device, autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
                            max_history=config.max_history, progress=not args.no_progress)
    result.update(split=args.split, checkpoint=str(args.checkpoint), data=str(args.data))
    json_path = Path(args.json) if args.json else Path(args.checkpoint).parent / f"{args.split}_metrics.json"
    table = write_results(result, json_path, json_path.with_suffix(".md"), name=f"TIGER on {dataset.name} ({args.split})")
    print(table, end="")
    print(f"{result['users']} users; written to {json_path}")
    return 0
