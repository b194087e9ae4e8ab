"""Synthetic catalogs with planted structure, so the whole pipeline runs (and can be tested) with no data files.

Each item gets two labels that are deliberately **independent partitions** of the catalog:

* ``semantic_cluster[i]`` in ``0..S-1``: the item's semantic embedding is its cluster centre plus noise,
  so text-like embeddings group items by semantic cluster only;
* ``collab_group[i]`` in ``0..G-1``: users interact mostly inside one collaborative group, so co-interaction
  (and any CF model trained on the histories) groups items by collab group only.

Items are dealt onto the ``S x G`` grid of (cluster, group) cells in a random order, so every collab group
holds (almost exactly) ``1/S`` of every semantic cluster: the two partitions disagree as much as possible,
in a known way. A semantic-only tokenizer should put the first code along semantic clusters; the CF
regularizer of LETTER should pull identifiers towards collab groups.

User histories: each user has a home group. The first item is drawn from it by popularity (a Zipf law
inside each group); every next item stays in the home group with probability ``in_group_prob`` (then it
is, with probability ``successor_prob``, the successor of the previous item in the group's fixed cyclic
order, a sequential pattern that next-item models can learn; otherwise a popular item of the group),
and is a catalog-wide popular item otherwise.

Returned as a ``letter_fast.data.Dataset`` with ``embeddings["semantic"]`` ``[V, dim]``,
``embeddings["cf_planted"]`` ``[V, cf_dim]`` (group centre + noise: the signal an ideal CF model would
learn, for tests that must not train one), and ``labels["semantic_cluster"]``, ``labels["collab_group"]``.
Deterministic given ``seed``.
"""

from __future__ import annotations

import torch

from letter_fast.data.formats import Dataset


def make_synthetic_catalog(
    *,
    num_items: int = 1024,
    num_users: int = 2048,
    num_semantic_clusters: int = 8,
    num_collab_groups: int = 8,
    dim: int = 64,
    cf_dim: int = 32,
    min_length: int = 5,
    max_length: int = 20,
    in_group_prob: float = 0.9,
    successor_prob: float = 0.5,
    semantic_noise: float = 0.35,
    zipf_exponent: float = 0.8,
    seed: int = 0,
    name: str = "Synthetic",
) -> Dataset:
    """Generate a catalog + users with planted semantic clusters and (independent) collaborative groups."""
    S, G = int(num_semantic_clusters), int(num_collab_groups)
    if num_items < S * G:
        raise ValueError(f"num_items ({num_items}) must be >= num_semantic_clusters x num_collab_groups ({S * G}) "
                         "so every (cluster, group) cell holds an item")
    if S < 1 or G < 1 or num_users < 0 or dim < 1 or cf_dim < 1:
        raise ValueError("cluster/group counts and dims must be >= 1, num_users >= 0")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    for pname, p in (("in_group_prob", in_group_prob), ("successor_prob", successor_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{pname} must be in [0, 1], got {p}")
    g = torch.Generator().manual_seed(int(seed))
    V = int(num_items)

    # --- labels: deal a random order of items onto the S x G grid, row-major over cells
    cell = torch.empty(V, dtype=torch.long)
    cell[torch.randperm(V, generator=g)] = torch.arange(V) % (S * G)
    semantic = cell // G
    group = cell % G

    # --- embeddings: unit-norm-ish centres scaled so clusters are well separated relative to the noise
    centres = torch.randn(S, dim, generator=g) / dim ** 0.5
    semantic_emb = centres[semantic] + semantic_noise * torch.randn(V, dim, generator=g) / dim ** 0.5
    cf_centres = torch.randn(G, cf_dim, generator=g) / cf_dim ** 0.5
    cf_emb = cf_centres[group] + semantic_noise * torch.randn(V, cf_dim, generator=g) / cf_dim ** 0.5

    # --- popularity: Zipf inside each group over a random order of its items
    rank_in_group = torch.empty(V, dtype=torch.long)
    order = torch.randperm(V, generator=g)
    grouped = order[torch.argsort(group[order], stable=True)]  # items sorted by group, random within
    group_sizes = torch.bincount(group, minlength=G)
    group_start = torch.cumsum(group_sizes, 0) - group_sizes
    rank_in_group[grouped] = torch.arange(V) - group_start[group[grouped]]
    popularity = (rank_in_group.double() + 1.0) ** (-zipf_exponent)
    # successor in the group's cyclic order (the order of `grouped`)
    successor = torch.empty(V, dtype=torch.long)
    next_pos = torch.arange(V) + 1
    wraps = next_pos == (group_start + group_sizes)[group[grouped]]
    next_pos[wraps] = group_start[group[grouped[wraps]]]
    successor[grouped] = grouped[next_pos]

    # per-group sampling table: [G, max group size] of items with their popularity (0 beyond the group)
    width = int(group_sizes.max())
    table = torch.zeros(G, width, dtype=torch.long)
    weights = torch.zeros(G, width, dtype=torch.double)
    table[group[grouped], rank_in_group[grouped]] = grouped
    weights[group[grouped], rank_in_group[grouped]] = popularity[grouped]

    U = int(num_users)
    home = torch.randint(0, G, (U,), generator=g)
    lengths = torch.randint(min_length, max_length + 1, (U,), generator=g)
    T = int(max_length)
    seq = torch.empty(U, T, dtype=torch.long)

    # inverse-CDF sampling (much faster than torch.multinomial over [U, width] rows)
    group_cdf = torch.cumsum(weights, 1)
    # one sorted 1-D table: group k's CDF shifted to (k, k + 1], searched with k + u
    stacked_cdf = (group_cdf / group_cdf[:, -1:] + torch.arange(G, dtype=torch.double)[:, None]).flatten()
    catalog_cdf = torch.cumsum(popularity, 0)
    catalog_cdf = catalog_cdf / catalog_cdf[-1]

    def from_home() -> torch.Tensor:
        u = torch.rand(U, generator=g, dtype=torch.double)
        flat_pick = torch.searchsorted(stacked_cdf, home + u).clamp(min=home * width, max=home * width + width - 1)
        return table.flatten()[flat_pick]

    def anywhere() -> torch.Tensor:
        u = torch.rand(U, generator=g, dtype=torch.double)
        return torch.searchsorted(catalog_cdf, u).clamp(max=V - 1)

    seq[:, 0] = from_home()
    for t in range(1, T):
        u_stay = torch.rand(U, generator=g) < in_group_prob
        u_succ = torch.rand(U, generator=g) < successor_prob
        seq[:, t] = torch.where(u_stay, torch.where(u_succ, successor[seq[:, t - 1]], from_home()), anywhere())

    histories = [row[:n].tolist() for row, n in zip(seq, lengths.tolist())]
    return Dataset(
        name=name,
        histories=histories,
        num_items=V,
        embeddings={"semantic": semantic_emb.float(), "cf_planted": cf_emb.float()},
        labels={"semantic_cluster": semantic, "collab_group": group},
    )


__all__ = ["make_synthetic_catalog"]
