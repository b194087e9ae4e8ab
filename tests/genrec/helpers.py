"""Shared builders for the genrec tests: random catalogs and deterministic prefix-dependent scorers."""

from __future__ import annotations

import torch


def random_catalog(V: int, L: int, N, seed: int = 0, unique: bool = True) -> torch.Tensor:
    """``[V', L]`` random codes (``V' <= V`` distinct rows when ``unique``), per-level sizes ``N``."""
    g = torch.Generator().manual_seed(seed)
    levels = [N] * L if isinstance(N, int) else list(N)
    codes = torch.stack([torch.randint(0, n, (V,), generator=g) for n in levels], 1)
    if unique:
        codes = torch.unique(codes, dim=0)
        codes = codes[torch.randperm(codes.shape[0], generator=g)]
    return codes


class TableScorer:
    """``step_fn`` whose log-probs depend only on (query, level, prefix): brute force can sum them.

    ``tables[t][q, p]`` are the log-probs at level t for the prefix whose mixed-radix value is
    ``p``. Also checks the ``parent`` contract: it keeps every row's prefix as a "cache" and
    verifies that ``prefix = cache[parent] + one code``.
    """

    def __init__(self, Q: int, levels, seed: int = 0, dtype=torch.float32, ties: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.Q, self.levels, self.dtype = Q, list(levels), dtype
        self.tables = []
        prefixes = 1
        for n in self.levels:
            logits = torch.randn(Q, prefixes, n, generator=g)
            if ties:
                logits = (logits * 2).round() / 2  # few distinct values: many equal scores
            self.tables.append(torch.log_softmax(logits, -1))
            prefixes *= n
        self.cache = None
        self.calls = 0

    def prefix_value(self, prefix: torch.Tensor) -> torch.Tensor:
        value = torch.zeros(prefix.shape[0], dtype=torch.long)
        for level in range(prefix.shape[1]):
            value = value * self.levels[level] + prefix[:, level]
        return value

    def __call__(self, prefix: torch.Tensor, parent):
        t = prefix.shape[1]
        assert t == self.calls, f"step {self.calls} got a prefix of length {t}"
        rows = prefix.shape[0]
        if t == 0:
            assert parent is None and rows == self.Q
        else:
            assert parent is not None and parent.shape == (rows,) and parent.dtype == torch.long
            assert torch.equal(prefix[:, :-1], self.cache[parent]), "prefix does not extend cache[parent]"
        self.cache = prefix.clone()
        self.calls += 1
        query = torch.arange(rows) // (rows // self.Q) if self.Q else torch.zeros(0, dtype=torch.long)
        out = self.tables[t][query, self.prefix_value(prefix)]
        return out.to(self.dtype)

    def item_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """[Q, V] float32 summed log-probs of every item, added in the search's order."""
        total = torch.zeros(self.Q, codes.shape[0], dtype=torch.float32)
        for t in range(codes.shape[1]):
            p = self.prefix_value(codes[:, :t])
            total = total + self.tables[t].to(self.dtype).float()[:, p, codes[:, t]]
        return total
