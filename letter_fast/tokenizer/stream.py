"""The tokenizer on catalogs that do not fit in memory: memory-mapped embeddings, sampled k-means, streamed epochs
and chunked encoding, so peak memory is a fixed budget plus one batch, not ``V x D``.

* :func:`open_embeddings`: a ``[V, D]`` ``.npy`` opened with ``np.load(mmap_mode="r")`` (never read whole), checked
  in chunks: row count, width, dtype (float16 / float32 / float64) and finiteness (the first bad row is named).
* :class:`RowSource`: what the training loop reads rows from. ``rows(idx)`` gathers a batch: the indices are sorted
  for the read (sequential pages of the memory map) and the rows are put back in the order asked, so a batch is
  bitwise the rows ``embeddings[idx]`` of an in-memory tensor and a streamed epoch computes exactly what the
  in-memory epoch computes.
* :func:`init_codebooks_sampled`: the k-means codebook initialization on ``kmeans_sample`` rows drawn without
  replacement (sorted, seeded). **A difference** from letter_fast's earlier initialization, which ran k-means
  (k-means++ seeding and 25 Lloyd iterations) on every item at every level (``O(V N d)`` per iteration: most of
  a 1e6-item run), and from the LETTER code, which uses its first training batch (docs/method.md, 2.3). With
  ``V <= kmeans_sample`` all items are used, exactly as before.
* :func:`encode_all`: every item's codes (and, for the collision re-assignment, its residual before the last
  level) through the encoder and the fused :func:`letter_fast.ops.residual_quantize`, ``chunk_rows`` at a time.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from letter_fast.io import PathLike

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
CHECK_CHUNK_ROWS = 1 << 18
FAULT_AROUND = 64 << 10   # bytes a page fault on a file mapping may map (Linux fault_around_bytes default)


def open_embeddings(path: PathLike, num_items: Optional[int] = None, *, dim: Optional[int] = None,
                    what: str = "item embeddings", check_finite: bool = True,
                    chunk_rows: int = CHECK_CHUNK_ROWS) -> np.ndarray:
    """A ``[V, D]`` ``.npy`` file as a read-only memory map, validated chunk by chunk (one clear error each)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix != ".npy":
        raise ValueError(f"{path}: {what} must be a .npy file to be memory-mapped (got {path.suffix or 'no suffix'}); "
                         "save it with numpy.save")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"could not read {what} from {path}: {exc}") from exc
    check_embeddings(arr, num_items, dim=dim, what=what, source=str(path), check_finite=check_finite,
                     chunk_rows=chunk_rows)
    return arr


def check_embeddings(arr, num_items: Optional[int] = None, *, dim: Optional[int] = None,
                     what: str = "item embeddings", source: str = "embeddings", check_finite: bool = True,
                     chunk_rows: int = CHECK_CHUNK_ROWS) -> None:
    """Shape, dtype and finiteness of a ``[V, D]`` array (memory map or tensor), read ``chunk_rows`` rows at a time."""
    if arr.ndim != 2:
        raise ValueError(f"{source}: {what} must be a [num_items, d] matrix, got shape {tuple(arr.shape)}")
    dtype = arr.dtype
    if isinstance(arr, torch.Tensor):
        ok = dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16)
    else:
        ok = dtype in FLOAT_DTYPES
    if not ok:
        raise ValueError(f"{source}: {what} must be float16, float32 or float64, got {dtype}")
    if num_items is not None and arr.shape[0] != num_items:
        raise ValueError(f"{source}: {what} have {arr.shape[0]} rows, but the data set has {num_items} items "
                         "(row i must be item i)")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{source}: {what} are {arr.shape[1]}-d, expected {dim}")
    if not check_finite:
        return
    for start in range(0, arr.shape[0], chunk_rows):
        block = arr[start:start + chunk_rows]
        finite = torch.isfinite(block).all(1) if isinstance(block, torch.Tensor) else np.isfinite(block).all(1)
        release_pages(arr)
        if not bool(finite.all()):
            row = start + int(np.flatnonzero(~np.asarray(finite))[0])
            raise ValueError(f"{source}: {what} row {row} holds NaN/Inf (the first bad row); fix or drop that item")


def release_pages(arr) -> None:
    """``madvise(MADV_DONTNEED)`` on a numpy memory map: its pages leave this process's resident set (they stay in
    the page cache); no effect on anything else."""
    handle = getattr(arr, "_mmap", None) if isinstance(arr, np.memmap) else None
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


class RowSource:
    """Rows of a ``[V, D]`` embedding matrix (a tensor, a numpy array or a memory map) as float32 tensors.

    Pages of a memory map that have been read stay mapped into the process and count towards its resident memory
    (``ru_maxrss``) although the kernel may drop them at any time; after every ``release_bytes`` read, the map is
    told so (``madvise(MADV_DONTNEED)``: the pages stay in the page cache, a later read maps them again without disk
    I/O), which keeps the resident memory of a sequential pass at a fixed budget instead of the file's size.
    Scattered rows (training batches) are read with ``pread`` instead: a fault on one row would map up to
    ``FAULT_AROUND`` bytes of cached file around it.
    """

    def __init__(self, data: Union[torch.Tensor, np.ndarray], device: Union[str, torch.device] = "cpu",
                 release_bytes: int = 256 << 20):
        self.device = torch.device(device)
        self.data = data.to(self.device).float() if isinstance(data, torch.Tensor) else data
        self.release_bytes, self._touched = int(release_bytes), 0
        self._map = isinstance(data, np.memmap) or None
        # scattered rows of a memory map are read with pread (sorted offsets): a page fault would map the cached
        # pages around each row into the process (fault-around), growing its resident memory towards the file's size
        self._fd = None
        # (a whole-file map, as np.load returns it: its base is the mmap itself, its offset the .npy header's)
        if isinstance(data, np.memmap) and isinstance(data.base, mmap.mmap) and getattr(data, "filename", None) \
                and data.flags.c_contiguous and hasattr(os, "pread"):
            self._fd = os.open(data.filename, os.O_RDONLY)
            self._offset = int(data.offset)
            self._row_bytes = int(data.shape[1] * data.itemsize)

    def _pread_rows(self, sorted_idx: np.ndarray) -> np.ndarray:
        rb, off, fd = self._row_bytes, self._offset, self._fd
        buf = b"".join([os.pread(fd, rb, off + int(i) * rb) for i in sorted_idx.tolist()])
        return np.frombuffer(buf, dtype=self.data.dtype).reshape(len(sorted_idx), self.data.shape[1]).astype(
            np.float32)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self, nbytes: int) -> None:
        if self._map is None:
            return
        self._touched += nbytes
        if self._touched >= self.release_bytes:
            self.release()

    def release(self) -> None:
        """Unmap the pages read so far (memory maps only; no effect on the data)."""
        self._touched = 0
        release_pages(self.data)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.data, torch.Tensor)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """``data[idx]`` as float32 (``idx`` distinct, any order): read in sorted order, returned in ``idx``'s order."""
        if self.in_memory:
            return self.data[idx.to(self.device)]
        order = idx.cpu().numpy()
        sorted_idx = np.sort(order)
        block = self._pread_rows(sorted_idx) if self._fd is not None else \
            np.array(self.data[sorted_idx], dtype=np.float32)
        back = np.searchsorted(sorted_idx, order)
        return torch.from_numpy(block[back]).to(self.device)

    def slice(self, start: int, stop: int) -> torch.Tensor:
        if self.in_memory:
            return self.data[start:stop]
        block = np.array(self.data[start:stop], dtype=np.float32)  # a writable copy
        self._read((stop - start) * self.data.shape[1] * self.data.itemsize)
        return torch.from_numpy(block).to(self.device)

    def chunks(self, chunk_rows: int):
        for start in range(0, len(self), chunk_rows):
            yield start, self.slice(start, min(start + chunk_rows, len(self)))


def as_rows(embeddings, device: Union[str, torch.device] = "cpu") -> RowSource:
    return embeddings if isinstance(embeddings, RowSource) else RowSource(embeddings, device)


def sample_indices(V: int, sample: int, seed: int) -> Optional[np.ndarray]:
    """Sorted distinct row indices of a seeded sample of ``sample`` rows; None when every row is used."""
    if sample <= 0 or V <= sample:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(V, size=sample, replace=False))


@torch.no_grad()
def init_codebooks_sampled(model, embeddings, seed: int = 0, sample: int = 65536) -> Optional[np.ndarray]:
    """``model.init_codebooks`` on ``sample`` rows of ``embeddings`` (all rows when ``V <= sample`` or
    ``sample <= 0``). Returns the sampled indices (None: all rows)."""
    source = as_rows(embeddings, next(model.parameters()).device)
    idx = sample_indices(len(source), sample, seed)
    if idx is None:
        x = source.data if source.in_memory else source.slice(0, len(source))
    else:
        x = source.rows(torch.from_numpy(idx))
    model.init_codebooks(x, seed=seed)
    return idx


@torch.no_grad()
def encode_all(model, embeddings, *, chunk_rows: int = 65536, residuals: bool = True,
               codes_dtype=np.int64, dist=None) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(codes [V, L], last_residuals [V, d] or None)`` of every item, ``chunk_rows`` items at a time.

    ``last_residuals`` is ``z - sum_{l < L} e_{l, c_l}``, the residual the last level quantizes (what the collision
    re-assignment needs). Memory: the outputs (``V x L`` codes, ``V x d`` float32 residuals) plus one chunk.
    ``dist`` (a :class:`letter_fast.training.Distributed` under torchrun): the chunks are split over the ranks
    (rank r encodes a contiguous run of them, the same chunks a single process cuts) and gathered on rank 0, which
    returns the whole arrays; the other ranks return ``(None, None)``.
    """
    was_training = model.training
    model.eval()
    source = as_rows(embeddings, next(model.parameters()).device)
    V, L = len(source), model.num_levels
    parallel = dist is not None and dist.enabled
    starts = list(range(0, V, chunk_rows))
    if parallel:
        starts = [int(i) * chunk_rows for i in torch.tensor_split(torch.arange(len(starts)), dist.world)[dist.rank]]
    lo = starts[0] if starts else 0
    hi = min(starts[-1] + chunk_rows, V) if starts else 0
    codes = np.empty((hi - lo, L), dtype=codes_dtype)
    last = np.empty((hi - lo, model.latent_dim), dtype=np.float32) if residuals else None
    books = model.codebooks.detach()
    for start in starts:
        chunk = source.slice(start, min(start + chunk_rows, V))
        z = model.encoder(chunk)
        c, z_hat = model.quantizer.search(z)
        at = start - lo
        codes[at:at + c.shape[0]] = c.cpu().numpy()
        if residuals:
            # the expression of the in-memory pipeline (same bits): z minus the first L - 1 codes
            r = z - books[torch.arange(L - 1, device=z.device), c[:, : L - 1]].sum(1)
            last[at:at + c.shape[0]] = r.float().cpu().numpy()
    model.train(was_training)
    if parallel:
        codes = _gather_rows(codes, dist, V)
        last = _gather_rows(last, dist, V) if residuals else None
    return codes, last


def _gather_rows(block: np.ndarray, dist, V: int) -> Optional[np.ndarray]:
    """Every rank's contiguous row block, in rank order, on rank 0 (padded to the largest block for the collective;
    on the process group's device: CPU for gloo, the rank's GPU for NCCL)."""
    import torch.distributed as tdist

    device = dist.device if dist.device.type == "cuda" else torch.device("cpu")
    counts = torch.tensor([block.shape[0]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(counts) for _ in range(dist.world)]
    tdist.all_gather(sizes, counts)
    sizes = [int(n) for n in sizes]
    padded = torch.zeros((max(sizes), *block.shape[1:]), dtype=torch.from_numpy(block[:0]).dtype, device=device)
    padded[: block.shape[0]] = torch.from_numpy(block).to(device)
    parts = [torch.empty_like(padded) for _ in range(dist.world)] if dist.main else None
    tdist.gather(padded, parts, dst=0)
    if not dist.main:
        return None
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)]).cpu().numpy()
    assert out.shape[0] == V
    return out


def encode_codes(model, embeddings, chunk_rows: int = 65536) -> torch.Tensor:
    """Codes ``[V, L]`` (int64 tensor) of every item, chunked (the training loop's evaluation)."""
    codes, _ = encode_all(model, embeddings, chunk_rows=chunk_rows, residuals=False)
    return torch.from_numpy(codes)


__all__ = ["RowSource", "as_rows", "check_embeddings", "encode_all", "encode_codes", "init_codebooks_sampled",
           "open_embeddings", "sample_indices"]
