"""``letter-fast inspect``: what an item tokenization looks like.

Reads an identifier file (``<Name>.index.json`` or a ``[V, L]`` codes tensor) and reports the
collision rate, codes used and normalized entropy per level, the Gini coefficient of the
first-level code load, and (with --cf) the code similarity of CF-nearest item pairs (LETTER
Table 4); --plot draws the first-level code distribution (like LETTER Fig. 6).

  letter-fast inspect runs/scientific/tokenizer-letter/Scientific.index.json \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --plot first_level.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("inspect", help="collisions, code usage, CF-pair similarity of identifiers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("codes", help="<Name>.index.json or a [V, L] codes tensor (.pt / .npy)")
    p.add_argument("--cf", help="[V, d] CF embeddings for the CF-pair code similarity")
    p.add_argument("--before", help="identifiers before collision re-assignment, for the before/after rate")
    p.add_argument("--codebook-size", type=int, help="codes per level N (default: 1 + the largest code)")
    p.add_argument("--plot", help="write the first-level code distribution here (.png / .pdf)")
    p.add_argument("--json", dest="json_out", help="write the report here as json")
    p.set_defaults(run=run)
    return p


def _load_codes(path):
    from letter_fast.data.formats import read_index_json
    from letter_fast.io import load_tensor

    path = Path(path)
    if path.name.endswith(".json"):
        return read_index_json(path)
    codes = load_tensor(path, "codes")
    if codes.dim() != 2 or codes.dtype.is_floating_point:
        raise ValueError(f"{path}: expected integer codes [V, L], got {codes.dtype} {tuple(codes.shape)}")
    return codes.long()


def run(args) -> int:
    from letter_fast.data.embeddings import load_item_embeddings
    from letter_fast.io import atomic_write
    from letter_fast.tokenizer.diagnostics import inspect_codes, plot_first_level

    codes = _load_codes(args.codes)
    n = args.codebook_size or int(codes.max()) + 1
    cf = load_item_embeddings(args.cf, codes.shape[0], what="CF embeddings") if args.cf else None
    before = _load_codes(args.before) if args.before else None
    report = inspect_codes(codes, n, cf=cf, codes_before=before)
    print(f"{report['items']} items, {report['levels']} levels, collision rate {report['collision_rate']:.4%}"
          + (f" (before re-assignment {report['collision_rate_before_reassignment']:.4%})"
             if before is not None else ""))
    for level in report["levels_usage"]:
        print(f"  level {level['level']}: {level['codes_used']}/{n} codes used, "
              f"normalized entropy {level['entropy']:.3f}")
    print(f"  first-level Gini {report['first_level_gini']:.3f}")
    if cf is not None:
        print(f"  code similarity of CF-nearest pairs {report['cf_neighbour_code_similarity']:.4f}")
    if args.plot:
        print(f"wrote {plot_first_level(codes, n, args.plot)}")
    if args.json_out:
        atomic_write(args.json_out, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
        print(f"wrote {args.json_out}")
    return 0
