"""``letter-fast inspect``: what an item tokenization looks like, for one index or several side by side.

Reads identifier files (``<Name>.index.json`` or ``[V, L]`` codes tensors) and reports the collisions (the share
of items on a shared identifier, and (V - distinct) / V), codes used and entropy per level, the Gini coefficient
of the first-level code load, the prefix-group sizes (items per first-level code, per k-code prefix), and (with
--cf) the code similarity of CF-nearest item pairs (LETTER Table 4); --plot draws the first-level code
distribution (like LETTER Fig. 6).

One file: the report as lines (and --json). Several files (ours, the authors' released index, another tool's):
one table with a column per index, --plot puts their sorted first-level code curves on one plot, and --out
writes the table as .md and/or the reports as .json. With --cf every index must cover the same items (row i of
the CF embeddings is item i of each index).

  letter-fast inspect runs/scientific/tokenizer-letter/Scientific.index.json \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --plot first_level.png
  letter-fast inspect ours/Instruments.index.json released/Instruments.index.json --label ours --label authors \\
      --cf Instruments.sasrec-emb32.pt --plot first_level.png --out compare.md --out compare.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("inspect", help="collisions, code usage, CF-pair similarity of identifiers "
                                              "(one index, or several side by side)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("codes", nargs="+", help="<Name>.index.json or a [V, L] codes tensor (.pt / .npy); several to "
                                            "compare them")
    p.add_argument("--label", action="append", default=None,
                   help="a column name per file, in order (default: the file name, with its folder when names repeat)")
    p.add_argument("--cf", help="[V, d] CF embeddings for the CF-pair code similarity")
    p.add_argument("--before", help="identifiers before collision re-assignment, for the before/after rate (one file)")
    p.add_argument("--codebook-size", type=int, help="codes per level N (default: 1 + the largest code of each file)")
    p.add_argument("--plot", help="write the first-level code distribution here (.png / .pdf)")
    p.add_argument("--json", dest="json_out", help="write the report (several files: all reports) here as json")
    p.add_argument("--out", action="append", default=None,
                   help="write the comparison here: .md (the table) or .json (the reports); repeat for both")
    p.set_defaults(run=run)
    return p


def _load_codes(path):
    from letter_fast.data.formats import read_index_json
    from letter_fast.io import load_tensor

    path = Path(path)
    if path.name.endswith(".json"):
        codes = read_index_json(path)
    else:
        codes = load_tensor(path, "codes")
        if codes.dim() != 2 or codes.dtype.is_floating_point:
            raise ValueError(f"{path}: expected integer codes [V, L], got {codes.dtype} {tuple(codes.shape)}")
        codes = codes.long()
    if codes.numel() == 0:
        raise ValueError(f"{path}: no identifiers in it (an empty index)")
    if bool((codes < 0).any()):
        raise ValueError(f"{path}: negative codes; expected codes 0..N-1 per level")
    return codes


def _labels(paths, given) -> list[str]:
    if given:
        if len(given) != len(paths):
            raise ValueError(f"--label given {len(given)} times for {len(paths)} files; give one per file or none")
        return list(given)
    paths = [Path(p) for p in paths]
    names = [p.name for p in paths]
    labels = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    # still equal (same folder names): number them
    return [f"{i + 1}: {lab}" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]


def _pct(x: float) -> str:
    return f"{x:.4%}"


def comparison_rows(reports: list[dict]) -> list[tuple[str, list[str]]]:
    """The table's rows: ``(measure, [value per index])``."""
    def per(f):
        return [f(r) for r in reports]

    levels = max(r["levels"] for r in reports)

    def at(seq, i, f):
        return f(seq[i]) if i < len(seq) else "-"

    rows = [
        ("items", per(lambda r: f"{r['items']:,}")),
        ("levels x codes per level (N)", per(lambda r: f"{r['levels']} x {r['codebook_size']}")),
        ("collisions: items on a shared identifier", per(lambda r: _pct(r["collision_rate"]))),
        ("collisions: (V - distinct) / V", per(lambda r: _pct(r["duplicate_rate"]))),
        ("codes used per level", per(lambda r: "/".join(str(u["codes_used"]) for u in r["levels_usage"]))),
    ]
    for i in range(levels):
        rows.append((f"entropy level {i + 1} (bits; uniform = log2 N)",
                     per(lambda r, i=i: at(r["entropy_bits"], i, lambda b: f"{b:.3f}"))))
    rows.append(("first-level Gini", per(lambda r: f"{r['first_level_gini']:.3f}")))
    if any("cf_neighbour_code_similarity" in r for r in reports):
        rows.append(("CF-pair code similarity",
                     per(lambda r: f"{r['cf_neighbour_code_similarity']:.4f}" if "cf_neighbour_code_similarity" in r
                         else "-")))
    rows.append(("items per first-level code: max / median",
                 per(lambda r: f"{r['prefix_groups'][0]['max']} / {r['prefix_groups'][0]['median']:g}")))
    for k in range(2, levels + 1):
        rows.append((f"items per {k}-code prefix: max / median",
                     per(lambda r, k=k: at(r["prefix_groups"], k - 1, lambda g: f"{g['max']} / {g['median']:g}"))))
    return rows


def markdown_table(labels: list[str], reports: list[dict]) -> str:
    lines = ["| measure | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in comparison_rows(reports)]
    return "\n".join(lines) + "\n"


def text_table(labels: list[str], reports: list[dict]) -> str:
    rows = [("", labels)] + comparison_rows(reports)
    first = max(len(name) for name, _ in rows)
    widths = [max(len(values[j]) for _, values in rows) for j in range(len(labels))]
    return "\n".join(name.ljust(first) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, widths))
                     for name, values in rows) + "\n"


def _print_one(report: dict, n: int, with_cf: bool, with_before: bool) -> None:
    print(f"{report['items']} items, {report['levels']} levels, collision rate {report['collision_rate']:.4%}"
          + (f" (before re-assignment {report['collision_rate_before_reassignment']:.4%})" if with_before else ""))
    print(f"  (V - distinct identifiers) / V {report['duplicate_rate']:.4%}")
    for level, bits in zip(report["levels_usage"], report["entropy_bits"]):
        print(f"  level {level['level']}: {level['codes_used']}/{n} codes used, "
              f"normalized entropy {level['entropy']:.3f} ({bits:.3f} bits)")
    print(f"  first-level Gini {report['first_level_gini']:.3f}")
    groups = report["prefix_groups"]
    print("  items per prefix (max / median): "
          + ", ".join(f"{g['length']} code{'s' if g['length'] > 1 else ''} {g['max']} / {g['median']:g}"
                      for g in groups))
    if with_cf:
        print(f"  code similarity of CF-nearest pairs {report['cf_neighbour_code_similarity']:.4f}")


def run(args) -> int:
    from letter_fast.data.embeddings import load_item_embeddings
    from letter_fast.io import atomic_write
    from letter_fast.tokenizer.diagnostics import (
        cf_neighbours,
        inspect_codes,
        neighbour_code_similarity,
        plot_first_level,
        plot_first_level_curves,
    )

    paths = list(args.codes)
    for out in args.out or []:
        if Path(out).suffix not in (".md", ".json"):
            raise ValueError(f"--out must end in .md or .json, got {out}")
    if args.before and len(paths) > 1:
        raise ValueError("--before compares one file with its identifiers before re-assignment; give one file")
    if args.codebook_size is not None and args.codebook_size < 1:
        raise ValueError(f"--codebook-size must be >= 1, got {args.codebook_size}")
    labels = _labels(paths, args.label)
    all_codes = [_load_codes(p) for p in paths]
    sizes = []
    for path, codes in zip(paths, all_codes):
        largest = int(codes.max()) + 1
        if args.codebook_size is not None and largest > args.codebook_size:
            raise ValueError(f"{path}: code {largest - 1} does not fit --codebook-size {args.codebook_size}")
        sizes.append(args.codebook_size or largest)
    neighbours = None
    if args.cf:
        counts = {int(c.shape[0]) for c in all_codes}
        if len(counts) > 1:
            listing = ", ".join(f"{lab}: {c.shape[0]}" for lab, c in zip(labels, all_codes))
            raise ValueError(f"--cf needs every index to cover the same items, but the item counts differ ({listing}); "
                             "compare indexes of one catalog, or leave out --cf")
        cf = load_item_embeddings(args.cf, all_codes[0].shape[0], what="CF embeddings")
        neighbours = cf_neighbours(cf)  # once for all indexes
    before = _load_codes(args.before) if args.before else None
    reports = []
    for codes, n in zip(all_codes, sizes):
        report = inspect_codes(codes, n, codes_before=before)
        if neighbours is not None:
            report["cf_neighbour_code_similarity"] = neighbour_code_similarity(codes, neighbours)
        reports.append(report)

    if len(paths) == 1:
        _print_one(reports[0], sizes[0], neighbours is not None, before is not None)
        if args.plot:
            print(f"wrote {plot_first_level(all_codes[0], sizes[0], args.plot)}")
        payload = reports[0]
    else:
        print(text_table(labels, reports), end="")
        if args.plot:
            print(f"wrote {plot_first_level_curves(dict(zip(labels, all_codes)), args.plot)}")
        payload = {"indexes": [{"label": lab, "path": str(p), **r} for lab, p, r in zip(labels, paths, reports)]}
        if args.cf:
            payload["cf"] = str(args.cf)
    if args.json_out:
        atomic_write(args.json_out, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
        print(f"wrote {args.json_out}")
    for out in args.out or []:
        if Path(out).suffix == ".json":
            text = json.dumps(payload if len(paths) > 1 else {"indexes": [{"label": labels[0], "path": str(paths[0]),
                                                                          **reports[0]}]}, indent=1)
        else:
            text = markdown_table(labels, reports)
        atomic_write(out, lambda tmp, text=text: tmp.write_text(text))
        print(f"wrote {out}")
    return 0
