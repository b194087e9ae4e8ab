"""Leave-one-out splits as in the papers (TIGER, LC-Rec, LETTER), as padded tensors ready for batching.

For a user with items ``x_0 .. x_{n-1}`` in time order:

* test:        target ``x_{n-1}``, history ``x_{<n-1}``
* validation:  target ``x_{n-2}``, history ``x_{<n-2}``
* training:    targets ``x_t`` for ``1 <= t <= n-3`` (every prefix of ``x_0 .. x_{n-3}``), history ``x_{<t}``

Every history is cut to its last ``max_history`` items (20 in the papers). A user contributes ``n - 3``
training samples, so Instruments (206,153 interactions, 24,772 users) gives 131,837. Short users lose the
samples they cannot form (n = 2: test only; n = 1: nothing); no sample has an empty history.

Histories are stored as one ``[S, max_history]`` LongTensor padded with ``PAD = -1`` (on the left by
default, so the most recent item sits in the last column; ``padding_side="right"`` puts it at
``lengths - 1``). All construction is vectorized over a flat tensor of interactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from letter_fast.ops import checks

PAD = -1


@dataclass
class SequenceSamples:
    """``S`` (history, target) samples: ``history [S, H]`` (PAD-filled), ``lengths [S]``, ``target [S]``,
    ``user [S]``."""

    history: torch.Tensor
    lengths: torch.Tensor
    target: torch.Tensor
    user: torch.Tensor
    padding_side: str = "left"

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def mask(self) -> torch.Tensor:
        """``[S, H]`` bool, True where ``history`` holds an item."""
        return self.history != PAD

    def __getitem__(self, index) -> SequenceSamples:
        """Rows selected by an index tensor, slice or int list (a batch)."""
        return SequenceSamples(self.history[index], self.lengths[index], self.target[index], self.user[index],
                               self.padding_side)

    def to(self, device) -> SequenceSamples:
        return SequenceSamples(self.history.to(device), self.lengths.to(device), self.target.to(device),
                               self.user.to(device), self.padding_side)

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: Optional[torch.Generator] = None) -> Iterator[SequenceSamples]:
        """Yield batches of at most ``batch_size`` rows (a random order per call when ``shuffle``)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            yield self[order[start:start + batch_size]] if order is not None else self[start:start + batch_size]


@dataclass
class LeaveOneOutSplit:
    """The three parts of a leave-one-out split; ``num_items`` is the catalog size (for full ranking)."""

    train: SequenceSamples
    valid: SequenceSamples
    test: SequenceSamples
    num_items: int
    max_history: int

    def summary(self) -> str:
        return (f"leave-one-out: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test samples, "
                f"{self.num_items} items, history <= {self.max_history}")


def flatten_histories(histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user lists -> (``flat`` items ``[N]``, ``offsets [U + 1]``); user u's items are
    ``flat[offsets[u]:offsets[u+1]]``."""
    lengths = torch.tensor([len(h) for h in histories], dtype=torch.long)
    offsets = torch.zeros(len(histories) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = torch.tensor([i for h in histories for i in h], dtype=torch.long)
    return flat, offsets


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


def _gather_samples(flat: torch.Tensor, offsets: torch.Tensor, user: torch.Tensor, position: torch.Tensor,
                    max_history: int, padding_side: str) -> SequenceSamples:
    """Samples whose target is ``flat[offsets[user] + position]`` with the preceding <= max_history items."""
    start = offsets[user]
    target_at = start + position
    lengths = torch.clamp(position, max=max_history)
    cols = torch.arange(max_history)
    if padding_side == "left":
        # column j holds the item (max_history - j) steps before the target
        src = target_at[:, None] - max_history + cols[None, :]
        valid = cols[None, :] >= (max_history - lengths)[:, None]
    else:
        src = target_at[:, None] - lengths[:, None] + cols[None, :]
        valid = cols[None, :] < lengths[:, None]
    # src < start only where valid is False; clamping keeps those gathers in bounds (they are masked)
    gathered = flat[src.clamp(0, max(flat.numel() - 1, 0))]
    history = torch.where(valid, gathered, torch.full_like(src, PAD))
    return SequenceSamples(history, lengths, flat[target_at], user, padding_side)


def leave_one_out(histories: Sequence[Sequence[int]], num_items: Optional[int] = None, *, max_history: int = 20,
                  padding_side: str = "left") -> LeaveOneOutSplit:
    """Split per-user histories (time order) leave-one-out; see the module docstring for the protocol."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    flat, offsets = flatten_histories(histories)
    if num_items is None:
        num_items = int(flat.max()) + 1 if flat.numel() else 0
    elif not checks.index_range(flat, num_items):
        raise ValueError(f"leave_one_out: item ids must lie in 0..{num_items - 1}, found "
                         f"{int(flat.min())}..{int(flat.max())}")
    lengths = offsets[1:] - offsets[:-1]
    users = torch.arange(len(lengths))

    has_test, has_valid = lengths >= 2, lengths >= 3
    test = _gather_samples(flat, offsets, users[has_test], lengths[has_test] - 1, max_history, padding_side)
    valid = _gather_samples(flat, offsets, users[has_valid], lengths[has_valid] - 2, max_history, padding_side)

    # training targets: positions 1 .. n-3 of every user, user-major then time order
    per_user = torch.clamp(lengths - 3, min=0)
    train_user = torch.repeat_interleave(users, per_user)
    first = _exclusive_cumsum(per_user)
    train_pos = torch.arange(int(per_user.sum())) - first[train_user] + 1
    train = _gather_samples(flat, offsets, train_user, train_pos, max_history, padding_side)
    return LeaveOneOutSplit(train=train, valid=valid, test=test, num_items=num_items, max_history=max_history)


def training_windows(histories: Sequence[Sequence[int]], window: int = 20, *, holdout: int = 2
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-item training windows over each user's training part (all but the last ``holdout`` items).

    For SASRec-style models that predict at every position: the training part ``x_0 .. x_{m-1}`` gives
    inputs ``x_{t-1}`` and targets ``x_t`` for ``t = 1 .. m-1``, cut from the end into windows of ``window``
    positions so long users are not truncated. Returns ``(inputs, targets)``, both ``[W, window]``,
    left-padded with ``PAD`` (a window's last column is its latest target). Every training target of the
    leave-one-out split appears exactly once.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    flat, offsets = flatten_histories(histories)
    m = torch.clamp(offsets[1:] - offsets[:-1] - holdout, min=0)
    steps = torch.clamp(m - 1, min=0)  # targets per user
    n_windows = (steps + window - 1) // window
    row_start = _exclusive_cumsum(n_windows)
    users = torch.arange(len(m))
    step_user = torch.repeat_interleave(users, steps)
    step_first = _exclusive_cumsum(steps)
    t = torch.arange(int(steps.sum())) - step_first[step_user] + 1  # target position within the user
    back = m[step_user] - 1 - t  # 0 for the user's last training target
    row = row_start[step_user] + n_windows[step_user] - 1 - back // window
    col = window - 1 - back % window
    total = int(n_windows.sum())
    inputs = torch.full((total, window), PAD, dtype=torch.long)
    targets = torch.full((total, window), PAD, dtype=torch.long)
    at = offsets[step_user] + t
    inputs[row, col] = flat[at - 1]
    targets[row, col] = flat[at]
    return inputs, targets


def split_dataset(dataset, *, max_history: int = 20, padding_side: str = "left") -> LeaveOneOutSplit:
    """``leave_one_out`` on a ``letter_fast.data.Dataset``."""
    return leave_one_out(dataset.histories, dataset.num_items, max_history=max_history, padding_side=padding_side)


__all__ = ["PAD", "SequenceSamples", "LeaveOneOutSplit", "leave_one_out", "training_windows", "split_dataset",
           "flatten_histories"]
