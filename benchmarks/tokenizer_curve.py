"""The tokenizer's learning curve: one or more runs' ``curve.csv`` as a table and a plot.

A run of ``letter-fast tokenize ... --curve-every N`` writes ``<out-dir>/curve.csv`` (the columns are described in
letter_fast/tokenizer/curve.py). This script gathers one or more such files, labelled, into
``benchmarks/results/tokenizer_curve_<name>.{csv,md,png}``: the csv holds every row of every run (with a ``run``
column), the md a table per run (every row up to 40, else evenly thinned, the last always kept) with the run's
settings read from the ``settings.toml`` next to the curve, and the png six panels over epochs: first-level codes
used, the entropy of every level, the first-level Gini coefficient, collisions before re-assignment, the code
similarity of CF-nearest pairs and the loss terms.

  python benchmarks/tokenizer_curve.py \\
      encoder+codebooks=runs/scientific/curve-letter-encoder-codebooks/curve.csv \\
      encoder=runs/scientific/curve-letter-encoder/curve.csv --name scientific

A run still in progress can be plotted at any time: the file is rewritten atomically after every row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, save_figure, write_csv  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402
from letter_fast.tokenizer.curve import LOSS_COLUMNS, read_curve  # noqa: E402

# the released LETTER identifiers of Instruments use this many first-level codes (of 256): a reference level
# for the first-level panel (another data set, another text encoder: a scale, not a target)
RELEASED_FIRST_LEVEL_CODES = 150
MAX_TABLE_ROWS = 40
SETTINGS_SHOWN = ("variant", "alpha", "beta", "cf_gradient", "epochs", "lr", "batch_size", "seed", "curve_every")


def parse_run(spec: str) -> tuple[str, Path]:
    """``LABEL=PATH`` or ``PATH`` (label: the run's folder name) -> ``(label, path)``; the label may hold ``=``,
    the path may not."""
    label, sep, path = spec.rpartition("=")
    if not sep:
        label, path = Path(spec).parent.name, spec
    return label, Path(path)


def run_settings(curve_path: Path) -> dict:
    """The settings of the run that wrote ``curve_path`` (its ``settings.toml``), the shown keys only."""
    import tomllib

    path = curve_path.parent / "settings.toml"
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        values = tomllib.load(f)
    shown = {k: values[k] for k in SETTINGS_SHOWN if k in values}
    for weight in ("alpha", "beta"):   # negative: the variant's preset
        if isinstance(shown.get(weight), float) and shown[weight] < 0:
            shown[weight] = "preset"
    return shown


def thin(rows: list[dict], most: int = MAX_TABLE_ROWS) -> list[dict]:
    """At most ``most`` rows, evenly spaced, the first and the last kept."""
    if len(rows) <= most:
        return rows
    step = (len(rows) - 1) / (most - 1)
    return [rows[round(i * step)] for i in range(most)]


def levels_of(rows: list[dict]) -> int:
    return sum(1 for k in rows[0] if k.startswith("codes_used_"))


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(name: str, runs: list[tuple[str, Path, list[dict]]], notes: list[str] = ()) -> str:
    lines = [f"# Tokenizer learning curve on {name}", "",
             "Identifiers by nearest codes (as at inference) every `curve_every` epochs; collisions are before the "
             "re-assignment that the final identifiers get; the loss terms are the means over that epoch's batches, "
             "unweighted (`rq` = the RQ-VAE codebook + commitment term). Columns: letter_fast/tokenizer/curve.py. "
             f"For scale: the released LETTER identifiers of Instruments use {RELEASED_FIRST_LEVEL_CODES} of 256 "
             "first-level codes.", ""]
    for note in notes:
        lines += [note, ""]
    for label, path, rows in runs:
        L = levels_of(rows)
        settings = run_settings(path)
        lines += [f"## {label}", "", f"`{path}`: {len(rows)} rows, last epoch {rows[-1]['epoch']}"
                  + (f" of {settings['epochs']}" if "epochs" in settings else "") + ".", ""]
        if settings:
            lines += ["Settings: " + ", ".join(f"`{k} = {v}`" for k, v in settings.items()) + ".", ""]
        header = (["epoch", "codes used / level"] + [f"H{i} bits" for i in range(1, L + 1)]
                  + ["Gini 1", "collisions", "CF-pair sim.", *LOSS_COLUMNS])
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for r in thin(rows):
            cells = ([str(r["epoch"]), "/".join(str(r[f"codes_used_{i}"]) for i in range(1, L + 1))]
                     + [_fmt(r[f"entropy_bits_{i}"], ".2f") for i in range(1, L + 1)]
                     + [_fmt(r["first_level_gini"], ".3f"), _fmt(r["collision_rate_before"], ".2%"),
                        _fmt(r["cf_pair_code_similarity"], ".4f")]
                     + [_fmt(r[c], ".4g") for c in LOSS_COLUMNS])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[tuple[str, Path, list[dict]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax_codes, ax_entropy, ax_gini, ax_coll, ax_sim, ax_loss = axes.flat
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, _, rows) in enumerate(runs):
        color = colors[k % len(colors)]
        epochs = [r["epoch"] for r in rows]
        L = levels_of(rows)
        ax_codes.plot(epochs, [r["codes_used_1"] for r in rows], color=color, label=label)
        for i in range(1, L + 1):
            ax_entropy.plot(epochs, [r[f"entropy_bits_{i}"] for r in rows], color=color,
                            linestyle=["-", "--", ":", "-."][(i - 1) % 4], label=f"{label} level {i}")
        ax_gini.plot(epochs, [r["first_level_gini"] for r in rows], color=color, label=label)
        ax_coll.plot(epochs, [100 * r["collision_rate_before"] for r in rows], color=color, label=label)
        sim = [(e, r["cf_pair_code_similarity"]) for e, r in zip(epochs, rows) if r["cf_pair_code_similarity"]
               is not None]
        if sim:
            ax_sim.plot(*zip(*sim), color=color, label=label)
        for column, style in zip(LOSS_COLUMNS, ["-", "--", "-.", ":", (0, (1, 3))]):
            values = [(e, r[column]) for e, r in zip(epochs, rows) if r[column] and r[column] > 0]
            if values:
                ax_loss.plot(*zip(*values), color=color, linestyle=style, label=f"{label} {column}")
    ax_codes.axhline(RELEASED_FIRST_LEVEL_CODES, color="grey", linewidth=0.8, linestyle=":",
                     label=f"released Instruments index ({RELEASED_FIRST_LEVEL_CODES})")
    ax_codes.set_title("first-level codes used")
    ax_entropy.set_title("entropy per level (bits)")
    ax_gini.set_title("first-level Gini")
    ax_coll.set_title("collisions before re-assignment (% of items)")
    ax_sim.set_title("CF-pair code similarity")
    ax_loss.set_title("loss terms (epoch means)")
    ax_loss.set_yscale("log")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]CURVE_CSV", help="curve.csv files, optionally labelled")
    parser.add_argument("--name", required=True, help="data set name for the output files (e.g. scientific)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true", help="write the csv and md only")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the md (repeatable): how the "
                                                                     "runs were made, what to read in them")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, path = parse_run(spec)
        rows = read_curve(path)
        if not rows:
            raise SystemExit(f"{path} holds no rows yet (the first comes after curve_every epochs)")
        runs.append((label, path, rows))
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"tokenizer_curve_{args.name}"
    all_rows = [{"run": label, **r} for label, _, rows in runs for r in rows]
    fields = ["run"] + list(dict.fromkeys(k for r in all_rows for k in r if k != "run"))
    write_csv(stem.with_suffix(".csv"), [{k: ("" if r.get(k) is None else r.get(k)) for k in fields}
                                         for r in all_rows], fieldnames=fields)
    text = markdown(args.name, runs, args.note)
    atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    if not args.no_plot:
        plot(runs, stem.with_suffix(".png"), f"LETTER tokenizer learning curve on {args.name}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
