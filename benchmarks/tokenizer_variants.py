"""The four tokenizer variants side by side on one data set (LETTER's Table 3 / Sec. 4.3 measures).

Runs ``letter-fast tokenize`` for rqvae (TIGER), cf, diversity and letter with the same budget,
then tabulates the collision rate before re-assignment, codes used per level, the first-level
Gini coefficient and the code similarity of CF-nearest pairs, into
``benchmarks/results/tokenizer_variants_<name>.{md,csv,json}`` with the exact commands.

  python benchmarks/tokenizer_variants.py scientific \\
      --embeddings runs/scientific/Scientific.emb-all-MiniLM-L6-v2.npy \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --epochs 150
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import write_csv  # noqa: E402
from letter_fast.cli import main as cli_main  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

VARIANTS = ["rqvae", "cf", "diversity", "letter"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--cf", required=True)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--out-root", default="runs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--extra", default="", help="more tokenize flags, e.g. '--alpha 0.1'")
    args = parser.parse_args(argv)
    rows = []
    for variant in VARIANTS:
        out_dir = Path(args.out_root) / Path(args.dataset).name.lower() / f"tokenizer-{variant}"
        argv_v = ["tokenize", args.dataset, "--embeddings", args.embeddings, "--cf", args.cf, "--variant", variant,
                  "--epochs", str(args.epochs), "--out-dir", str(out_dir), "--no-progress", *shlex.split(args.extra)]
        t0 = time.perf_counter()
        if cli_main(argv_v) != 0:
            raise SystemExit(f"tokenize failed for {variant}")
        report = json.loads((out_dir / "tokenizer_report.json").read_text())
        rows.append({
            "variant": variant, "alpha": report["settings"]["alpha"], "beta": report["settings"]["beta"],
            "collision_rate_before": report["collision_rate_before_reassignment"],
            "collision_rate_after": report["collision_rate"],
            "codes_used_per_level": "/".join(str(u["codes_used"]) for u in report["levels_usage"]),
            "first_level_gini": report["first_level_gini"],
            "cf_pair_code_similarity": report["cf_neighbour_code_similarity"],
            "seconds_per_epoch": report["seconds_per_epoch"], "wall_seconds": time.perf_counter() - t0,
            "command": "letter-fast " + shlex.join(argv_v),
        })
        print(json.dumps(rows[-1]), flush=True)
    name = Path(args.dataset).name.lower()
    args.results.mkdir(parents=True, exist_ok=True)
    write_csv(args.results / f"tokenizer_variants_{name}.csv", rows)
    atomic_write(args.results / f"tokenizer_variants_{name}.json",
                 lambda tmp: tmp.write_text(json.dumps(rows, indent=1)))
    lines = [f"# Tokenizer variants on {name} ({args.epochs} epochs each, this 2-core CPU)", "",
             "| variant | alpha | beta | collisions before re-assignment | after | codes used per level | "
             "first-level Gini | CF-pair code similarity | s/epoch |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['alpha']} | {r['beta']} | {r['collision_rate_before']:.4%} | "
                     f"{r['collision_rate_after']:.4%} | {r['codes_used_per_level']} | {r['first_level_gini']:.3f} | "
                     f"{r['cf_pair_code_similarity']:.4f} | {r['seconds_per_epoch']:.2f} |")
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows]
    atomic_write(args.results / f"tokenizer_variants_{name}.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
