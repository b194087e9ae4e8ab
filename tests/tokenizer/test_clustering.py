import pytest
import torch

from letter_fast.tokenizer.clustering import (
    constrained_assignment,
    constrained_kmeans,
    kmeans,
    sinkhorn_assignment,
    sinkhorn_assignment_reference,
)
from letter_fast.tokenizer.collisions import collision_rate, duplicate_rank, resolve_collisions
from letter_fast.tokenizer.diagnostics import cf_neighbour_code_similarity, gini, inspect_codes, level_usage
from tests.conftest import needs_native


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=g) * 10
    labels = torch.arange(500) % 5
    x = centers[labels] + 0.1 * torch.randn(500, 8, generator=g)
    found, assigned = kmeans(x, 5, seed=1)
    # every planted cluster maps to exactly one found cluster
    pairs = {(int(a), int(b)) for a, b in zip(labels, assigned)}
    assert len(pairs) == 5


def test_kmeans_with_fewer_points_than_centers():
    x = torch.randn(3, 4)
    centers, labels = kmeans(x, 8)
    assert centers.shape == (8, 4) and torch.isfinite(centers).all()
    assert torch.allclose(centers[labels], x)


@pytest.mark.parametrize("n,k,lo,hi", [(256, 10, 10, 60), (40, 4, 10, 10), (33, 3, 5, 20)])
def test_constrained_sizes_hold(n, k, lo, hi):
    x = torch.randn(n, 6)
    x[: n // 2] += 20  # a lopsided cloud: plain k-means would break the limits
    labels = constrained_kmeans(x, k, lo, hi)
    sizes = torch.bincount(labels, minlength=k)
    assert sizes.min() >= lo and sizes.max() <= hi and sizes.sum() == n


def test_constrained_assignment_is_optimal_without_binding_limits():
    dist = torch.rand(30, 3)
    labels = constrained_assignment(dist, 0, 30)
    assert torch.equal(labels, dist.argmin(1))


def test_constrained_assignment_rejects_impossible_limits():
    with pytest.raises(ValueError, match="cannot split 10 points into 2 clusters of 6..9"):
        constrained_assignment(torch.rand(10, 2), 6, 9)


def test_sinkhorn_balances_a_skewed_assignment():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 4, generator=g)
    codes = torch.randn(64, 4, generator=g)
    dist = torch.cdist(x, codes) ** 2
    nearest = torch.bincount(dist.argmin(1), minlength=64)
    balanced = torch.bincount(sinkhorn_assignment(dist), minlength=64)
    assert balanced.max() < nearest.max() and balanced.max() <= 3 * 1024 // 64
    assert (balanced > 0).sum() >= (nearest > 0).sum()


def _distances(B, N, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cdist(torch.randn(B, d, generator=g), torch.randn(N, d, generator=g)) ** 2


@needs_native
@pytest.mark.parametrize("B,N", [(1024, 256), (1000, 7), (257, 256), (4096, 64), (3, 1), (1, 5)])
def test_sinkhorn_kernel_matches_reference(B, N):
    dist = _distances(B, N, seed=B + N)
    got = sinkhorn_assignment(dist, backend="cpu")
    want = sinkhorn_assignment_reference(dist)
    assert got.dtype == torch.int64 and got.shape == (B,)
    # same iterations in float32, different summation order: a code may differ only at a near-tie
    assert (got == want).float().mean() >= 0.99
    assert torch.bincount(got, minlength=N).max() == torch.bincount(want, minlength=N).max()


@needs_native
def test_sinkhorn_kernel_spreads_fewer_points_than_codes():
    got = sinkhorn_assignment(_distances(33, 256), backend="cpu")
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
    got = sinkhorn_assignment(dist, backend="cpu")
    want = sinkhorn_assignment_reference(dist)
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
        sinkhorn_assignment(dist)
    with pytest.raises(ValueError, match="epsilon > 0"):
        sinkhorn_assignment(torch.ones(2, 2), epsilon=0.0)


def test_collision_helpers():
    codes = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 3], [1, 1, 1], [1, 1, 1], [1, 1, 1]])
    assert collision_rate(codes) == pytest.approx(5 / 6)
    assert duplicate_rank(codes).tolist() == [0, 1, 0, 0, 1, 2]
    fixed = resolve_collisions(codes, torch.randn(6, 4), torch.randn(4, 4))
    assert fixed.shape == codes.shape and collision_rate(fixed) == 0
    assert torch.equal(fixed[:, :2], codes[:, :2])  # only the last level moves


def test_collisions_of_identical_items_are_separated_by_cost():
    # Three identical items on one identifier: the matching gives them the 3 nearest free codes.
    codebook = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    codes = torch.zeros(3, 2, dtype=torch.long)
    fixed = resolve_collisions(codes, torch.full((3, 1), 0.4), codebook)
    assert sorted(fixed[:, 1].tolist()) == [0, 1, 2]


def test_group_larger_than_codebook_gets_a_disambiguation_level():
    codes = torch.zeros(5, 2, dtype=torch.long)
    fixed = resolve_collisions(codes, torch.randn(5, 3), torch.randn(4, 3))
    assert fixed.shape == (5, 3) and collision_rate(fixed) == 0
    assert sorted(fixed[:, 2].tolist()) == [0, 1, 2, 3, 4]


def test_diagnostics():
    assert gini(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(torch.tensor([0, 0, 0, 12])) == pytest.approx(0.75)
    codes = torch.tensor([[0, 1], [0, 2], [1, 1], [1, 2]])
    usage = level_usage(codes, 4)
    assert usage[0]["codes_used"] == 2 and usage[0]["entropy"] == pytest.approx(0.5)
    cf = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])  # pairs (0,1), (2,3)
    assert cf_neighbour_code_similarity(codes, cf) == pytest.approx(0.5)
    report = inspect_codes(codes, 4, cf=cf, codes_before=torch.zeros(4, 2, dtype=torch.long))
    assert report["collision_rate"] == 0 and report["collision_rate_before_reassignment"] == 1.0
