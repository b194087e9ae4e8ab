"""``letter-fast run``: the whole pipeline on one data set, or on a synthetic catalog.

  semantic embeddings -> CF embeddings (SASRec) -> LETTER tokenizer -> TIGER -> evaluation

Without a data set a synthetic catalog with planted semantic and collaborative structure is used
(no files, no downloads): the default run finishes in a few minutes on a laptop CPU. With a data
set folder (LC-Rec/LETTER json), item text is embedded with the default encoder (all-MiniLM-L6-v2,
cached), unless --embeddings gives a file; --cf takes CF embeddings instead of training SASRec.
Each stage writes into --out-dir and is resumable; the final table lists SASRec and TIGER
Recall/NDCG@5/10 on the test split (full ranking, leave-one-out).

  letter-fast run                                   # synthetic catalog
  letter-fast run scientific --tiger-minutes 30     # a data set under $LETTER_FAST_DATA
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="the whole pipeline: embeddings -> CF -> tokenizer -> TIGER -> metrics",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", help="data set folder, <Name>.inter.json, or a name under the data root "
                                              "(default: a synthetic catalog)")
    p.add_argument("--data-root", help="folder of data sets (default: $LETTER_FAST_DATA or a sibling shared/data)")
    p.add_argument("--out-dir", help="output folder (default: runs/<name>/pipeline)")
    p.add_argument("--embeddings", help="semantic embeddings file instead of embedding the item text")
    p.add_argument("--cf", help="CF embeddings file instead of training SASRec")
    p.add_argument("--variant", default="letter", help="tokenizer variant: rqvae | cf | diversity | letter")
    p.add_argument("--tokenizer-epochs", type=int, default=300, help="tokenizer epochs (default 300)")
    p.add_argument("--sasrec-minutes", type=float, default=1.0, help="SASRec time budget (default 1)")
    p.add_argument("--tiger-minutes", type=float, default=3.0, help="TIGER training time budget (default 3)")
    p.add_argument("--tau", type=float, default=0.7, help="ranking-guided loss temperature (default 0.7)")
    p.add_argument("--tiger-size", choices=["auto", "small", "paper"], default="auto",
                   help="paper: TIGER's 4+4 layers, d_model 128; small: 2+2 layers, d_model 64 (trains in "
                        "minutes on a CPU); auto: small for the synthetic catalog, paper otherwise")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from letter_fast.cf.sasrec import SASRecConfig, save_result, train_sasrec
    from letter_fast.data import load_dataset, make_synthetic_catalog
    from letter_fast.data.embeddings import embed_items, load_item_embeddings
    from letter_fast.genrec.train import TigerTrainConfig, resolve_device, train_and_evaluate_tiger
    from letter_fast.io import atomic_write
    from letter_fast.metrics import format_metrics
    from letter_fast.tokenizer.config import TokenizeConfig
    from letter_fast.tokenizer.pipeline import tokenize_items

    progress = not args.no_progress
    device = str(resolve_device(args.device))
    started = time.perf_counter()
    if args.dataset:
        dataset = load_dataset(args.dataset, args.data_root)
    else:
        dataset = make_synthetic_catalog(seed=args.seed)
    out = Path(args.out_dir) if args.out_dir else Path("runs") / dataset.name.lower() / "pipeline"
    print(f"== {dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
          f"{dataset.num_interactions} interactions -> {out}")

    # 1. semantic embeddings
    if args.embeddings:
        semantic = load_item_embeddings(args.embeddings, dataset.num_items, what="semantic embeddings")
    elif "semantic" in dataset.embeddings:
        semantic = dataset.embeddings["semantic"]
    elif dataset.items is not None:
        print("== semantic embeddings (all-MiniLM-L6-v2, cached)")
        semantic = embed_items(dataset.items, out / f"{dataset.name}.emb-minilm.npy", device=device, progress=progress)
    else:
        raise ValueError(f"{dataset.name} has no item text (.item.json): pass --embeddings FILE")

    # 2. CF embeddings
    sasrec_test = None
    if args.cf:
        cf = load_item_embeddings(args.cf, dataset.num_items, dim=32, what="CF embeddings")
    else:
        print(f"== SASRec CF embeddings (budget {args.sasrec_minutes:g} min)")
        cfg = SASRecConfig(time_budget_min=args.sasrec_minutes, seed=args.seed, device=device)
        result = train_sasrec(dataset.histories, dataset.num_items, cfg, checkpoint=out / "sasrec" / "sasrec.ckpt.pt",
                              progress=progress)
        save_result(result, out / "sasrec", dataset.name, cfg)
        cf, sasrec_test = result.embeddings, result.test_metrics

    # 3. tokenizer
    print(f"== LETTER tokenizer ({args.variant}, {args.tokenizer_epochs} epochs)")
    tcfg = TokenizeConfig(variant=args.variant, epochs=args.tokenizer_epochs, seed=args.seed,
                          device=device).check()
    report = tokenize_items(semantic, cf, out / "tokenizer", dataset.name, tcfg.model_settings(),
                            tcfg.train_config(progress))
    codes = torch_load_codes(out / "tokenizer" / f"{dataset.name}.codes.pt")

    # 4. TIGER + evaluation
    print(f"== TIGER (tau {args.tau}, budget {args.tiger_minutes:g} min, {args.tiger_size} size)")
    small = args.tiger_size == "small" or (args.tiger_size == "auto" and not args.dataset)
    size = dict(num_layers=2, num_decoder_layers=2, d_model=64, d_ff=256, num_heads=4, d_kv=16,
                batch_size=128) if small else {}
    tiger_cfg = TigerTrainConfig(tau=args.tau, time_budget_s=args.tiger_minutes * 60, seed=args.seed,
                                 device=args.device, progress=progress, **size)
    tiger = train_and_evaluate_tiger(dataset, codes, tiger_cfg, out_dir=out / "tiger")

    rows = {}
    if sasrec_test is not None:
        rows["SASRec"] = sasrec_test
    rows[f"TIGER on {args.variant} identifiers"] = {k: v for k, v in tiger.items()
                                                    if k.split("@")[0] in ("recall", "ndcg")}
    summary = {"dataset": dataset.name, "tokenizer": {k: report[k] for k in (
        "collision_rate_before_reassignment", "collision_rate", "first_level_gini", "cf_neighbour_code_similarity")},
        "test": rows, "tiger": {k: v for k, v in tiger.items() if not isinstance(v, float) or v == v},
        "minutes": (time.perf_counter() - started) / 60}
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    print(f"\n== results on {dataset.name} (test split, full ranking; {summary['minutes']:.1f} min)")
    for name, metrics in rows.items():
        print(f"{name:<34} {format_metrics(metrics)}")
    print(f"tokenizer: collisions {report['collision_rate_before_reassignment']:.2%} -> {report['collision_rate']:.2%}, "
          f"CF-pair code similarity {report['cf_neighbour_code_similarity']:.3f}")
    print(f"wrote {out / 'results.json'}")
    return 0


def torch_load_codes(path):
    from letter_fast.io import load_tensor

    return load_tensor(path, "codes").long()
