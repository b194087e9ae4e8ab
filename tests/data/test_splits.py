"""Leave-one-out split against a per-user Python oracle; the Instruments sample count."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from letter_fast.data import PAD, leave_one_out, load_dataset, split_dataset, training_windows
from tests.data.real import data_folder


def oracle(histories, max_history):
    """The protocol written out per user: (user, history list, target) for train, valid, test."""
    train, valid, test = [], [], []
    for u, h in enumerate(histories):
        n = len(h)
        for t in range(1, n - 2):
            train.append((u, h[max(0, t - max_history):t], h[t]))
        if n >= 3:
            valid.append((u, h[max(0, n - 2 - max_history):n - 2], h[n - 2]))
        if n >= 2:
            test.append((u, h[max(0, n - 1 - max_history):n - 1], h[n - 1]))
    return train, valid, test


def as_rows(samples):
    rows = []
    for i in range(len(samples)):
        hist = [x for x in samples.history[i].tolist() if x != PAD]
        assert len(hist) == int(samples.lengths[i])
        rows.append((int(samples.user[i]), hist, int(samples.target[i])))
    return rows


histories_strategy = st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=40), min_size=0, max_size=25)


@settings(max_examples=60, deadline=None)
@given(histories_strategy, st.integers(1, 25), st.sampled_from(["left", "right"]))
def test_matches_oracle(histories, max_history, side):
    split = leave_one_out(histories, 31, max_history=max_history, padding_side=side)
    train, valid, test = oracle(histories, max_history)
    assert as_rows(split.train) == train
    assert as_rows(split.valid) == valid
    assert as_rows(split.test) == test
    for part in (split.train, split.valid, split.test):
        assert part.history.shape == (len(part), max_history)
        mask = part.mask
        if side == "left":  # most recent item in the last column, padding in front
            assert bool((mask.flip(1).cumprod(1) == mask.flip(1)).all())
        else:
            assert bool((mask.cumprod(1) == mask).all())
        assert bool((part.lengths >= 1).all())


def test_small_example_exact():
    split = leave_one_out([[5, 6, 7, 8, 9]], max_history=2)
    assert split.num_items == 10
    assert split.train.history.tolist() == [[PAD, 5], [5, 6]]
    assert split.train.target.tolist() == [6, 7]
    assert split.valid.history.tolist() == [[6, 7]] and split.valid.target.tolist() == [8]
    assert split.test.history.tolist() == [[7, 8]] and split.test.target.tolist() == [9]


def test_batches_cover_everything():
    split = leave_one_out([list(range(i, i + 7)) for i in range(10)])
    batches = split.train.batches(7, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([b.target for b in batches])
    assert sorted(seen.tolist()) == sorted(split.train.target.tolist())
    with pytest.raises(ValueError, match="batch_size"):
        next(split.train.batches(0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="0..2"):
        leave_one_out([[0, 5]], num_items=3)
    with pytest.raises(ValueError, match="max_history"):
        leave_one_out([[0, 1]], max_history=0)
    with pytest.raises(ValueError, match="padding_side"):
        leave_one_out([[0, 1]], padding_side="middle")
    empty = leave_one_out([], num_items=0)
    assert len(empty.train) == len(empty.valid) == len(empty.test) == 0


@settings(max_examples=60, deadline=None)
@given(histories_strategy, st.integers(1, 9))
def test_training_windows_cover_the_training_targets(histories, window):
    inputs, targets = training_windows(histories, window)
    assert inputs.shape == targets.shape and inputs.shape[1:] == (window,)
    assert bool(((inputs == PAD) == (targets == PAD)).all())
    # each window is a contiguous stretch of one user's training part: input t-1 -> target t
    train, _, _ = oracle(histories, 10 ** 6)
    pairs = sorted((h[-1], t) for _, h, t in train)
    valid = targets != PAD
    got = sorted(zip(inputs[valid].tolist(), targets[valid].tolist()))
    assert got == pairs
    # left padding: items occupy the last columns of each window; consecutive within a window
    assert bool((valid.flip(1).cumprod(1) == valid.flip(1)).all())
    assert bool((inputs[:, 1:][valid[:, :-1]] == targets[:, :-1][valid[:, :-1]]).all())


def test_instruments_training_samples():
    ds = load_dataset(data_folder("instruments"))
    split = split_dataset(ds)
    assert len(split.train) == 131_837
    assert len(split.valid) == len(split.test) == 24_772
    assert int(split.train.lengths.max()) == 20
