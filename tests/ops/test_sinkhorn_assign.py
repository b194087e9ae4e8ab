"""The Sinkhorn-balanced assignment: the cpu kernel against the reference, balance, inputs, errors."""

import pytest
import torch

from letter_fast.ops import sinkhorn_assign
from letter_fast.ops.reference import sinkhorn_assign_reference
from tests.conftest import needs_native


def test_sinkhorn_balances_a_skewed_assignment():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 4, generator=g)
    codes = torch.randn(64, 4, generator=g)
    dist = torch.cdist(x, codes) ** 2
    nearest = torch.bincount(dist.argmin(1), minlength=64)
    balanced = torch.bincount(sinkhorn_assign(dist), minlength=64)
    assert balanced.max() < nearest.max() and balanced.max() <= 3 * 1024 // 64
    assert (balanced > 0).sum() >= (nearest > 0).sum()


def _distances(B, N, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cdist(torch.randn(B, d, generator=g), torch.randn(N, d, generator=g)) ** 2


@needs_native
@pytest.mark.parametrize("B,N", [(1024, 256), (1000, 7), (257, 256), (4096, 64), (3, 1), (1, 5)])
def test_sinkhorn_kernel_matches_reference(B, N):
    dist = _distances(B, N, seed=B + N)
    got = sinkhorn_assign(dist, backend="cpu")
    want = sinkhorn_assign_reference(dist)
    assert got.dtype == torch.int64 and got.shape == (B,)
    # same iterations in float32, different summation order: a code may differ only at a near-tie
    assert (got == want).float().mean() >= 0.99
    assert torch.bincount(got, minlength=N).max() == torch.bincount(want, minlength=N).max()


@needs_native
def test_sinkhorn_kernel_spreads_fewer_points_than_codes():
    got = sinkhorn_assign(_distances(33, 256), backend="cpu")
    assert torch.bincount(got, minlength=256).max() == 1  # each point its own code, as the reference


@needs_native
@pytest.mark.parametrize("layout", ["float64", "float16", "transposed", "empty"])
def test_sinkhorn_kernel_inputs(layout):
    dist = _distances(300, 40)
    if layout == "float64":
        dist = dist.double()
    elif layout == "float16":
        dist = dist.half()
    elif layout == "transposed":
        dist = dist.T.contiguous().T
        assert not dist.is_contiguous()
    elif layout == "empty":
        dist = dist[:0]
    got = sinkhorn_assign(dist, backend="cpu")
    want = sinkhorn_assign_reference(dist)
    assert got.shape == want.shape and (got == want).float().mean().nan_to_num(1.0) >= 0.99


@needs_native
def test_sinkhorn_kernel_opcheck():
    torch.library.opcheck(torch.ops.letter_fast.sinkhorn_assign.default, (_distances(64, 16), 0.003, 50, 10))


@pytest.mark.parametrize("dist,match", [
    (torch.ones(5), r"must have shape \[B, N\]"),
    (torch.ones(5, 0), "no codes"),
    (torch.tensor([[1.0, float("nan")]]), "NaN/Inf"),
    (torch.ones(2, 2, dtype=torch.long), "must be one of"),
])
def test_sinkhorn_rejects_bad_input(dist, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sinkhorn_assign(dist)
    with pytest.raises(ValueError, match="epsilon > 0"):
        sinkhorn_assign(torch.ones(2, 2), epsilon=0.0)
