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

from typing import Optional

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


# ---------------------------------------------------------------------------------------------- at scale

SCALE_CHUNK_ROWS = 1 << 16  # rows generated per chunk; part of what the seed determines


def write_synthetic_catalog(
    folder,
    *,
    num_items: int,
    dim: int = 128,
    cf_dim: int = 32,
    dtype: str = "float32",
    num_semantic_clusters: int = 1024,
    num_collab_groups: int = 64,
    num_users: Optional[int] = None,
    history_length: int = 20,
    in_group_prob: float = 0.9,
    semantic_noise: float = 0.35,
    seed: int = 0,
    name: str = "Synthetic",
) -> dict:
    """A catalog of ``num_items`` (1e5..1e7 and more) written straight to ``.npy`` files in ``folder``, chunk by chunk
    (``np.lib.format.open_memmap``), with no Python object per item. Peak memory: one chunk plus the group table.

    Files (``<Name>`` = ``name``):

    * ``<Name>.semantic.npy`` ``[V, dim]`` float16 or float32: planted semantic cluster centre + noise (as
      :func:`make_synthetic_catalog`, with clusters drawn per item instead of dealt on a grid);
    * ``<Name>.cf.npy`` ``[V, cf_dim]`` float32: collaborative group centre + noise (the planted CF signal);
    * ``<Name>.labels.npy`` ``[V, 2]`` int32: semantic cluster and collaborative group of each item (independent);
    * ``<Name>.interactions.npy`` ``[U, history_length]`` int32: user histories, each from a home group with
      probability ``in_group_prob`` per step (popular items more often), else from anywhere;
    * ``<Name>.synthetic.json``: the settings.

    Deterministic given ``seed`` (each chunk draws from ``np.random.default_rng([seed, stream, chunk])``).
    Returns the paths and settings.
    """
    import json
    from pathlib import Path

    import numpy as np

    from letter_fast.io import atomic_path, atomic_write

    V, S, G = int(num_items), int(num_semantic_clusters), int(num_collab_groups)
    if V < 1 or dim < 1 or cf_dim < 1 or S < 1 or G < 1 or history_length < 1:
        raise ValueError("num_items, dims, cluster/group counts and history_length must be >= 1")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if not 0.0 <= in_group_prob <= 1.0:
        raise ValueError(f"in_group_prob must be in [0, 1], got {in_group_prob}")
    U = max(1, V // 10) if num_users is None else int(num_users)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{name}.{kind}.npy" for kind in ("semantic", "cf", "labels", "interactions")}
    base = np.random.default_rng([seed, 0])
    centres = (base.standard_normal((S, dim)) / dim ** 0.5).astype(np.float32)
    cf_centres = (base.standard_normal((G, cf_dim)) / cf_dim ** 0.5).astype(np.float32)
    chunk = SCALE_CHUNK_ROWS

    def rng(stream: int, index: int):
        return np.random.default_rng([seed, stream, index])

    labels = np.empty((V, 2), dtype=np.int32)  # V x 8 bytes: needed again for the interactions
    with atomic_path(paths["semantic"]) as tmp_s, atomic_path(paths["cf"]) as tmp_c, \
            _NpyRows(tmp_s, np.dtype(dtype), (V, dim)) as sem, _NpyRows(tmp_c, np.dtype(np.float32), (V, cf_dim)) as cf:
        for k, start in enumerate(range(0, V, chunk)):
            n = min(chunk, V - start)
            r = rng(1, k)
            cluster = r.integers(0, S, n)
            group = r.integers(0, G, n)
            labels[start:start + n, 0], labels[start:start + n, 1] = cluster, group
            noise = r.standard_normal((n, dim), dtype=np.float32) * np.float32(semantic_noise / dim ** 0.5)
            sem.append(centres[cluster] + noise)
            noise = r.standard_normal((n, cf_dim), dtype=np.float32) * np.float32(semantic_noise / cf_dim ** 0.5)
            cf.append(cf_centres[group] + noise)
    with atomic_path(paths["labels"]) as tmp, open(tmp, "wb") as f:
        np.save(f, labels)

    # items grouped by collaborative group, in a seeded random order inside each group (rank 0 = most popular)
    by_group = np.argsort(labels[:, 1] * np.int64(V) + rng(2, 0).permutation(V), kind="stable").astype(np.int64)
    group_size = np.bincount(labels[:, 1], minlength=G)
    group_start = np.cumsum(group_size) - group_size
    del labels
    T = int(history_length)
    with atomic_path(paths["interactions"]) as tmp, _NpyRows(tmp, np.dtype(np.int32), (U, T)) as inter:
        for k, start in enumerate(range(0, U, chunk)):
            n = min(chunk, U - start)
            r = rng(3, k)
            home = r.integers(0, G, n)
            home = np.where(group_size[home] > 0, home, np.argmax(group_size))
            u = r.random((n, T))
            pos = np.floor(group_size[home][:, None] * u * u).astype(np.int64)  # u^2: a popularity skew
            in_group = by_group[group_start[home][:, None] + pos]
            anywhere = r.integers(0, V, (n, T))
            inter.append(np.where(r.random((n, T)) < in_group_prob, in_group, anywhere))
    settings = dict(num_items=V, dim=dim, cf_dim=cf_dim, dtype=dtype, num_semantic_clusters=S,
                    num_collab_groups=G, num_users=U, history_length=T, in_group_prob=in_group_prob,
                    semantic_noise=semantic_noise, seed=seed, chunk_rows=chunk, name=name)
    meta = folder / f"{name}.synthetic.json"
    atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(settings, indent=1)))
    return {**{k: str(v) for k, v in paths.items()}, "settings": str(meta), **settings}


__all__ = ["make_synthetic_catalog", "write_synthetic_catalog"]


class _NpyRows:
    """A ``.npy`` file written row block by row block: the header of ``np.lib.format`` for the final shape, then the
    blocks' bytes. Unlike ``open_memmap``, written pages are not mapped into the process (they do not count towards
    its resident memory); the result is the same file."""

    def __init__(self, path, dtype, shape):
        import numpy as np

        self.np, self.path, self.dtype, self.shape, self.rows = np, path, dtype, tuple(shape), 0

    def __enter__(self):
        self.file = open(self.path, "wb")
        header = {"descr": self.np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        self.np.lib.format.write_array_header_1_0(self.file, header)
        return self

    def append(self, block) -> None:
        block = self.np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"block {block.shape} does not fit rows {self.rows}.. of {self.shape}")
        self.file.write(block.tobytes())
        self.rows += block.shape[0]

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is None and self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written, {self.shape[0]} declared")
        return False
