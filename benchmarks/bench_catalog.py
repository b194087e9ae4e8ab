"""Benchmark: a living catalog at scale: ``ItemIndex.add_items`` / ``retire`` (rebuilt through trie_build) and
``assign_new_codes`` (new items placed around existing identifiers), one thread, random identifiers.

V existing items with 4-level identifiers over N = 256 codes (distinct), n = 1e4 new items. ``assign`` places n
new items whose nearest identifiers are all taken (the worst case: every one moves), residuals and codebook
random 32-d. Prints one line per V; seconds only, no targets.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_catalog.py --sizes 1e6 1e7
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _codes(total: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (total, 4), generator=g)
    codes[:, 3] = torch.arange(total) % 256           # mostly distinct rows before the de-duplication
    codes = torch.unique(codes, dim=0)
    return codes[torch.randperm(codes.shape[0], generator=g)]


def measure(V: int, n: int = 10_000, seed: int = 0) -> dict:
    from letter_fast.genrec import ItemIndex
    from letter_fast.tokenizer.catalog import assign_new_codes

    codes = _codes(V + n, seed)
    V = codes.shape[0] - n
    t = time.perf_counter()
    index = ItemIndex.from_codes(codes[:V])
    build = time.perf_counter() - t
    t = time.perf_counter()
    grown = index.add_items(codes[V:], torch.arange(V, V + n))
    add = time.perf_counter() - t
    t = time.perf_counter()
    grown.retire(torch.arange(n))
    retire = time.perf_counter() - t
    rng = np.random.default_rng(seed)
    book = rng.standard_normal((256, 32)).astype(np.float32)
    residuals = rng.standard_normal((n, 32)).astype(np.float32)
    t = time.perf_counter()
    _, stats = assign_new_codes(codes[:V].numpy(), codes[:n].numpy(), residuals, book, num_levels=4,
                                return_stats=True)
    assign = time.perf_counter() - t
    return {"V": V, "n": n, "build_s": build, "add_items_s": add, "retire_s": retire, "assign_s": assign,
            "moved": stats["moved"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1e6"], help="existing catalog sizes")
    parser.add_argument("--new", type=int, default=10_000, help="new items")
    args = parser.parse_args(argv)
    for size in args.sizes:
        r = measure(int(float(size)), args.new)
        print(f"V={r['V']}: build {r['build_s']:.2f}s, add_items(+{r['n']}) {r['add_items_s']:.2f}s, "
              f"retire({r['n']}) {r['retire_s']:.2f}s, assign_new_codes({r['n']}, {r['moved']} moved) "
              f"{r['assign_s']:.2f}s")


if __name__ == "__main__":
    main()
