"""Cold start on a living catalog: do ``letter-fast add-items`` identifiers let TIGER recommend new items?

Protocol (one seed per run of the script, every stage reused when its output exists, so it resumes):

1. **New items.** A uniform ``--new-fraction`` (10%) of *all* items, drawn without replacement with
   ``numpy.random.default_rng(seed)``; the rest are "old". The experiment renumbers items old first, then new,
   each in original id order: old item ``o`` -> ``rank of o among old items`` (0..V_old-1), new item ``n`` ->
   ``V_old + rank of n among new items``. This is the id space ``add-items`` needs (it keys new items
   ``V_old..V-1``); every file handed to the CLI is written in it, and results are mapped back with the inverse.
2. **What training sees.** Each user's sequence with every new item removed (the other items keep their order),
   i.e. the catalog as it was before the new items arrived. SASRec (``train-cf``), tokenizer A and TIGER train on
   it; ``train-tiger`` splits it leave-one-out as usual (its own test metrics are on old-item targets of the
   filtered sequences and are not the experiment's numbers).
3. **Evaluation samples.** Every user's original last item is the target (the leave-one-out test item); the
   history is the user's earlier items *with new items removed* (the model has never seen a new item's identifier
   in training, and a history is what the catalog knew), cut to the last 20. Group (a): users whose target is a
   new item; group (b): the others. Users whose filtered history is empty are dropped (leave-one-out needs >= 1).
4. **Indexes** (all over the full catalog, V items, collision-free):

   * A (add-items): LETTER tokenizer trained on the old items only (their MiniLM rows; CF = SASRec trained on the
     filtered data), then ``add-items`` with the new items' MiniLM rows; old identifiers are A's tokenizer output.
   * B (retrained): the same recipe trained from scratch on all items, with the full-data SASRec CF embeddings
     (``--cf``): the index a full retrain would give once the new items have interactions. Its CF rows of the new
     items come from their training interactions, which TIGER's training data does not contain.
   * C (random): A's old identifiers, new items' codes drawn uniformly per level over the codes the A model's
     vocabulary has (seeded), redrawn on collision.

5. **TIGER**: ``train-tiger`` on the filtered data, small model, step budget (the settings of
   ``benchmarks/scientific_tiger.py``), once with index A and once with index B. Training never sees a new item,
   and A and C give every old item the same identifier (checked), so the A model is evaluated with A and with C.
   Each (model, index) pair ranks groups (a) and (b) by 20-beam trie-constrained search over the full index
   (``letter_fast.genrec.evaluate.evaluate_tiger`` on each group's samples), reporting Recall/NDCG@10 and the share
   of top-10 slots that hold a new item.

Writes ``benchmarks/results/catalog_coldstart.{csv,md,png}``.

  python benchmarks/catalog_coldstart.py --data <data root>/scientific \\
      --embeddings runs/scientific/Scientific.emb-all-MiniLM-L6-v2.npy \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --runs runs/coldstart
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import save_figure, write_csv  # noqa: E402
from benchmarks.scientific_tiger import run_cli, tiger_argv  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

NAME = "catalog_coldstart"
GROUPS = ("new", "old")  # (a) target is a new item, (b) target is an old item
PAIRS = (("A", "A"), ("A", "C"), ("B", "B"))  # (TIGER trained with index, evaluated with index)


# ------------------------------------------------------------------------------------------ split and id mapping


def choose_new_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted original ids of ``round(fraction * num_items)`` items drawn uniformly without replacement."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the new-item fraction must be in (0, 1), got {fraction}")
    n = int(round(fraction * num_items))
    if not 0 < n < num_items:
        raise ValueError(f"{fraction} of {num_items} items leaves no new or no old item")
    return np.sort(np.random.default_rng(seed).choice(num_items, size=n, replace=False))


def item_mapping(num_items: int, new_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(to_exp [V], to_orig [V])``: old items first then new, each group in original order; inverse permutations."""
    is_new = np.zeros(num_items, dtype=bool)
    is_new[new_items] = True
    to_orig = np.concatenate([np.flatnonzero(~is_new), np.flatnonzero(is_new)])
    to_exp = np.empty(num_items, dtype=np.int64)
    to_exp[to_orig] = np.arange(num_items)
    return to_exp, to_orig


def training_histories(histories, to_exp: np.ndarray, num_old: int) -> list[list[int]]:
    """Each user's sequence in experiment ids with every new item (exp id >= ``num_old``) removed."""
    return [[int(to_exp[i]) for i in h if to_exp[i] < num_old] for h in histories]


def evaluation_histories(histories, to_exp: np.ndarray, num_old: int) -> list[list[int]]:
    """Per user: the earlier items without new ones, then the original last item (the test target), exp ids."""
    return [[int(to_exp[i]) for i in h[:-1] if to_exp[i] < num_old] + [int(to_exp[h[-1]])] for h in histories]


def random_new_codes(old_codes: np.ndarray, num_new: int, codebook_size: int, seed: int) -> np.ndarray:
    """``[num_new, L]`` codes uniform per level, redrawn until distinct from each other and from ``old_codes``."""
    rng = np.random.default_rng(seed)
    L = old_codes.shape[1]
    if num_new + len(old_codes) > codebook_size**L:
        raise ValueError("not enough identifiers for collision-free random codes")
    taken = {tuple(c) for c in old_codes.tolist()}
    out = np.empty((num_new, L), dtype=np.int64)
    for i in range(num_new):
        while True:
            code = tuple(int(c) for c in rng.integers(0, codebook_size, size=L))
            if code not in taken:
                break
        taken.add(code)
        out[i] = code
    return out


# --------------------------------------------------------------------------------------------------------- stages


def _once(path: Path, make, what: str) -> Path:
    """Run ``make()`` unless ``path`` exists (resumable stages)."""
    if not path.exists():
        t0 = time.perf_counter()
        make()
        print(f"{what}: {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
        np.save(f, array)


def prepare(args, runs: Path) -> dict:
    """The split, the id mapping and the data sets / embeddings in experiment ids (written once)."""
    import torch

    from letter_fast.data import load_dataset
    from letter_fast.data.formats import write_inter_json
    from letter_fast.io import save_tensor

    data = load_dataset(args.data)
    V, name = data.num_items, data.name
    split_path = runs / "split.json"
    if split_path.exists():
        split = json.loads(split_path.read_text())
        if split["num_items"] != V or split["seed"] != args.seed or split["fraction"] != args.new_fraction:
            raise SystemExit(f"{split_path} was made with other settings; use another --runs folder")
        new_items = np.asarray(split["new_items"], dtype=np.int64)
    else:
        new_items = choose_new_items(V, args.new_fraction, args.seed)
        split = {"num_items": V, "seed": args.seed, "fraction": args.new_fraction, "new_items": new_items.tolist()}
        atomic_write(split_path, lambda tmp: tmp.write_text(json.dumps(split)))
    to_exp, to_orig = item_mapping(V, new_items)
    num_old = V - len(new_items)

    old = training_histories(data.histories, to_exp, num_old)
    if len({i for h in old for i in h}) != num_old:
        raise SystemExit("some old item has no interaction left in the filtered data")
    # old/: filtered sequences (train-cf, tokenizer A); all/: every interaction, for tokenizer B's item count only
    _once(
        runs / "old" / f"{name}.inter.json",
        lambda: write_inter_json(runs / "old" / f"{name}.inter.json", old),
        "filtered data",
    )
    _once(
        runs / "all" / f"{name}.inter.json",
        lambda: write_inter_json(
            runs / "all" / f"{name}.inter.json", [[int(to_exp[i]) for i in h] for h in data.histories]
        ),
        "remapped data",
    )
    semantic = np.load(args.embeddings, mmap_mode="r")
    if semantic.shape[0] != V:
        raise SystemExit(f"{args.embeddings}: {semantic.shape[0]} rows, the data set has {V} items")
    emb = {"all": runs / "emb-all.npy", "old": runs / "emb-old.npy", "new": runs / "emb-new.npy"}
    for part, rows in (("all", to_orig), ("old", to_orig[:num_old]), ("new", to_orig[num_old:])):
        _once(
            emb[part],
            lambda rows=rows, part=part: atomic_write(
                emb[part], lambda tmp: _save_npy(tmp, np.ascontiguousarray(semantic[rows]))
            ),
            f"embeddings {part}",
        )
    cf_all = runs / "cf-all.pt"
    _once(
        cf_all,
        lambda: save_tensor(torch.load(args.cf, weights_only=True)[torch.from_numpy(to_orig)].contiguous(), cf_all),
        "full-data CF rows",
    )
    return {
        "V": V,
        "name": name,
        "num_old": num_old,
        "to_exp": to_exp,
        "to_orig": to_orig,
        "emb": emb,
        "cf_all": cf_all,
        "histories": data.histories,
    }


def tokenizer_stage(args, runs: Path, prep: dict, which: str) -> tuple[Path, list[list[str]]]:
    """Index A (old-item tokenizer + add-items) or B (retrained on all items); returns its index.json, commands."""
    name = prep["name"]
    if which == "A":
        cf_dir = runs / "sasrec-old"
        cf_argv = [
            "train-cf",
            str(runs / "old"),
            "--out-dir",
            str(cf_dir),
            "--seed",
            str(args.seed),
            "--no-progress",
            *(["--epochs", str(args.cf_epochs)] if args.cf_epochs else []),
        ]
        cf = next(cf_dir.glob("*.sasrec-emb*.pt"), None) if cf_dir.exists() else None
        if cf is None:
            run_cli(cf_argv)
            cf = next(cf_dir.glob("*.sasrec-emb*.pt"))
        data, embeddings, out = runs / "old", prep["emb"]["old"], runs / "tokenizer-old"
    else:
        cf_argv, cf = None, prep["cf_all"]
        data, embeddings, out = runs / "all", prep["emb"]["all"], runs / "tokenizer-all"
    tok_argv = [
        "tokenize",
        str(data),
        "--embeddings",
        str(embeddings),
        "--cf",
        str(cf),
        "--variant",
        "letter",
        "--epochs",
        str(args.tokenizer_epochs),
        "--seed",
        str(args.seed),
        "--out-dir",
        str(out),
        "--no-progress",
    ]
    if not (out / "tokenizer_report.json").exists():
        run_cli(tok_argv)
    commands = [a for a in (cf_argv, tok_argv) if a]
    index = out / f"{name}.index.json"
    if which == "A":
        grown = runs / "index-A"
        add_argv = [
            "add-items",
            str(index),
            "--tokenizer",
            str(out),
            "--embeddings",
            str(prep["emb"]["new"]),
            "--out-dir",
            str(grown),
        ]
        if not (grown / f"{name}.index.meta.json").exists():
            run_cli(add_argv)
        commands.append(add_argv)
        index = grown / f"{name}.index.json"
    return index, commands


def random_index(args, runs: Path, prep: dict, index_a: Path, checkpoint: Path) -> Path:
    """Index C: A's old identifiers, random collision-free identifiers for the new items.

    Codes are drawn in ``[0, num_codes)`` of the A model's vocabulary (train-tiger sizes it from index A's largest
    code), so that model, which never saw a new item, can decode C as it decodes A.
    """
    from letter_fast.data import read_index_json
    from letter_fast.data.formats import write_index_json
    from letter_fast.genrec.train import load_tiger

    path = runs / "index-C" / f"{prep['name']}.index.json"
    if not path.exists():
        codes_a = read_index_json(index_a).numpy()
        size = load_tiger(checkpoint)[1].num_codes
        new = random_new_codes(codes_a[: prep["num_old"]], prep["V"] - prep["num_old"], int(size), args.seed)
        write_index_json(path, np.concatenate([codes_a[: prep["num_old"]], new]))
    return path


def tiger_stage(args, runs: Path, prep: dict, which: str, index: Path) -> tuple[Path, list[str]]:
    """TIGER on the filtered data with ``index`` (the data folder carries the full index: V items)."""
    from letter_fast.data.formats import write_inter_json

    folder = runs / f"tiger-data-{which}"
    inter = folder / f"{prep['name']}.inter.json"
    if not inter.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / index.name, lambda tmp: tmp.write_bytes(index.read_bytes()))
        write_inter_json(inter, training_histories(prep["histories"], prep["to_exp"], prep["num_old"]))
    out = runs / f"tiger-{which}-steps{args.steps}-seed{args.seed}"
    argv = tiger_argv(
        folder, None, out, tau=1.0, seed=args.seed, steps=args.steps, valid_users=args.valid_users, size="small"
    )
    _once(out / "metrics.json", lambda: run_cli(argv), f"TIGER {which}")
    return out / "best.pt", argv


def evaluate_pair(
    args, runs: Path, prep: dict, model_index: str, checkpoint: Path, eval_name: str, index_path: Path
) -> list[dict]:
    """Groups (a) and (b) of the evaluation samples ranked by one TIGER over one full index (``eval_name``)."""

    from letter_fast.data import read_index_json
    from letter_fast.data.splits import leave_one_out
    from letter_fast.genrec.evaluate import build_index, evaluate_tiger
    from letter_fast.genrec.train import load_tiger

    path = runs / f"eval-tiger{model_index}-index{eval_name}.json"
    if path.exists():
        return json.loads(path.read_text())
    model, vocab, config = load_tiger(checkpoint)
    codes = read_index_json(index_path)
    index = build_index(codes, vocab.num_codes)
    if index.has_collisions:
        raise SystemExit(f"{index_path} has colliding identifiers; the new-item share assumes none")
    num_old = prep["num_old"]
    test = leave_one_out(
        evaluation_histories(prep["histories"], prep["to_exp"], num_old), prep["V"], max_history=config.max_history
    ).test
    rows = []
    for group in GROUPS:
        mask = (test.target >= num_old) if group == "new" else (test.target < num_old)
        result = evaluate_tiger(
            model,
            vocab,
            test[mask.nonzero()[:, 0]],
            codes,
            index=index,
            num_beams=args.num_beams,
            max_history=config.max_history,
            progress=False,
            return_ranked=True,
        )
        ranked = result["ranked_identifiers"]
        filled = ranked >= 0
        items, _ = index.items_of_identifier(ranked[filled])
        rows.append(
            {
                "tiger_index": model_index,
                "eval_index": eval_name,
                "group": group,
                "users": result["users"],
                "recall@10": result["metrics"]["recall@10"],
                "ndcg@10": result["metrics"]["ndcg@10"],
                "recall@5": result["metrics"]["recall@5"],
                "ndcg@5": result["metrics"]["ndcg@5"],
                "new_item_share@10": float((items >= num_old).sum()) / ranked.numel(),
            }
        )
        print(rows[-1], flush=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(rows, indent=1)))
    return rows


# --------------------------------------------------------------------------------------------------------- report


def prefix_shares(index_path: Path, num_old: int, levels=(1, 2, 3)) -> dict[int, float]:
    """Share of new items (ids >= ``num_old``) whose first ``k`` codes start some old item's identifier: how much of
    a new item's path the trained decoder has walked before (the last code of a new item is never a seen target)."""
    from letter_fast.data import read_index_json

    codes = read_index_json(index_path).numpy()
    out = {}
    for k in levels:
        seen = {tuple(c) for c in codes[:num_old, :k].tolist()}
        out[k] = float(np.mean([tuple(c) in seen for c in codes[num_old:, :k].tolist()]))
    return out


def check_old_identifiers(index_a: Path, index_c: Path, num_old: int) -> None:
    from letter_fast.data import read_index_json

    a, c = read_index_json(index_a), read_index_json(index_c)
    if not bool((a[:num_old] == c[:num_old]).all()):
        raise SystemExit("index C does not keep index A's old identifiers")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the Scientific data folder (or any data set)")
    parser.add_argument("--embeddings", required=True, help="semantic embeddings of every item (.npy)")
    parser.add_argument("--cf", required=True, help="full-data CF embeddings (.pt from train-cf), for index B")
    parser.add_argument("--runs", default="runs/coldstart", help="folder of this experiment's runs")
    parser.add_argument("--new-fraction", type=float, default=0.1, help="share of all items made new")
    parser.add_argument("--seed", type=int, default=0, help="split, SASRec, tokenizers, random index and TIGER")
    parser.add_argument("--tokenizer-epochs", type=int, default=150)
    parser.add_argument("--cf-epochs", type=int, default=0, help="SASRec epoch cap (0 = train-cf's default)")
    parser.add_argument("--steps", type=int, default=2000, help="TIGER optimizer steps per run")
    parser.add_argument("--valid-users", type=int, default=1000, help="users per validation (0 = all)")
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=["A", "B"],
        default=["A", "B"],
        help="which chains to run (A also gives C); run A and B as two processes to overlap them",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default=NAME, help="results file stem")
    args = parser.parse_args(argv)

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    prep = prepare(args, runs)
    rows, commands = [], []
    for which in args.stages:
        index, cmds = tokenizer_stage(args, runs, prep, which)
        commands += cmds
        checkpoint, t_argv = tiger_stage(args, runs, prep, which, index)
        commands.append(t_argv)
        rows += evaluate_pair(args, runs, prep, which, checkpoint, which, index)
        if which == "A":
            index_c = random_index(args, runs, prep, index, checkpoint)
            check_old_identifiers(index, index_c, prep["num_old"])
            rows += evaluate_pair(args, runs, prep, "A", checkpoint, "C", index_c)
    done = {(r["tiger_index"], r["eval_index"]) for r in rows}
    if all(p in done for p in PAIRS):
        write_results(args, prep, rows, commands)
    return 0


def write_results(args, prep: dict, rows: list[dict], commands: list[list[str]]) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    write_csv(args.results / f"{args.name}.csv", [{"seed": args.seed, **r} for r in rows])
    label = {("A", "A"): "A add-items", ("A", "C"): "C random new ids", ("B", "B"): "B retrained"}
    lines = [
        "# Cold start: identifiers for new items from `add-items` vs a retrained tokenizer vs random",
        "",
        f"{prep['V'] - prep['num_old']} of {prep['V']} items ({args.new_fraction:.0%}, uniform, seed "
        f"{args.seed}) made new and removed from all training data; TIGER (small, {args.steps} steps, tau 1) "
        f"ranks every user's test target over the full index ({args.num_beams}-beam trie-constrained search). "
        "Group *new*: users whose test target is a new item; *old*: the others. One seed.",
        "",
        "| index (TIGER trained with) | group | users | recall@10 | ndcg@10 | recall@5 | ndcg@5 | "
        "new items in top-10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {label[(r['tiger_index'], r['eval_index'])]} ({r['tiger_index']}) | {r['group']} | "
            f"{r['users']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@5']:.4f} | "
            f"{r['ndcg@5']:.4f} | {r['new_item_share@10']:.4f} |"
        )
    lines += ["", "New items whose first k codes are also some old item's first k codes (k = 1, 2, 3):", ""]
    for which, folder in (("A", "index-A"), ("B", "tokenizer-all"), ("C", "index-C")):
        shares = prefix_shares(Path(args.runs) / folder / f"{prep['name']}.index.json", prep["num_old"])
        lines.append(f"- index {which}: " + ", ".join(f"k={k}: {v:.3f}" for k, v in shares.items()))
    lines += ["", "Commands (in experiment ids; the script writes the inputs):", ""]
    lines += [f"    letter-fast {shlex.join(c)}" for c in commands]
    atomic_write(args.results / f"{args.name}.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    plot(args.results / f"{args.name}.png", rows, label)


def plot(path: Path, rows: list[dict], label: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = list(dict.fromkeys(label[(r["tiger_index"], r["eval_index"])] for r in rows))
    for ax, metric in zip(axes, ("recall@10", "ndcg@10")):
        for k, group in enumerate(GROUPS):
            vals = [
                next(r[metric] for r in rows if r["group"] == group and label[(r["tiger_index"], r["eval_index"])] == n)
                for n in names
            ]
            ax.bar(np.arange(len(names)) + 0.4 * k - 0.2, vals, width=0.4, label=f"target {group} item")
        ax.set_xticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title(f"cold start: {metric}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
