"""``letter-fast add-items``: identifiers for new items of a living catalog, existing identifiers unchanged.

Reads a trained tokenizer (a ``letter-fast tokenize`` out-dir or its ``best.pt``), the current
``<Name>.index.json`` (or ``<Name>.codes.npy``) and the new items' ``[n, D]`` embeddings (.npy, the same kind
the tokenizer was trained on); row i is item V + i (V = items in the index) unless --item-ids gives the ids
(a permutation of V..V+n-1: the index keys items contiguously). Each new item gets its nearest identifier, or,
when that collides with an existing or another new item, the nearest free last-level code within its prefix
(letter_fast/tokenizer/catalog.py); no existing identifier changes and no level is added ("prefix group full"
otherwise). Writes into --out-dir (default: the index's folder, in place), each file atomically and only after
every check passed: ``<Name>.index.json``, ``<Name>.codes.pt``, ``<Name>.codes.npy`` and the sidecar
``<Name>.index.meta.json`` (``version`` counts the updates).

  letter-fast add-items runs/scientific/tokenizer-letter/Scientific.index.json \\
      --tokenizer runs/scientific/tokenizer-letter --embeddings new_items.emb-minilm.npy
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("add-items", help="identifiers for new items, existing ones unchanged",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="the current <Name>.index.json (or <Name>.codes.npy)")
    p.add_argument("--tokenizer", required=True, help="a `letter-fast tokenize` out-dir or its best.pt")
    p.add_argument("--embeddings", required=True, help="[n, D] embeddings of the new items (.npy)")
    p.add_argument("--item-ids", help="[n] integer ids of the new items (.npy; default V .. V+n-1)")
    p.add_argument("--out-dir", help="where the grown index goes (default: the index's folder, in place)")
    p.add_argument("--device", default="cpu", help="torch device for encoding (default: cpu)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import numpy as np

    from letter_fast.tokenizer.catalog import add_items

    ids = None
    if args.item_ids:
        try:
            ids = np.load(args.item_ids, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"item ids file not found: {args.item_ids}") from None
        except Exception as exc:
            raise ValueError(f"could not read item ids from {args.item_ids}: {exc}") from exc
    summary = add_items(args.tokenizer, args.index, args.embeddings, args.out_dir, item_ids=ids, device=args.device)
    files = summary.pop("files")
    print(json.dumps(summary, indent=1))
    for path in files:
        print(f"wrote {path}")
    return 0
