import pytest
import torch

from letter_fast.tokenizer.clustering import (
    constrained_assignment,
    constrained_kmeans,
    kmeans,
)
from letter_fast.tokenizer.collisions import (
    collision_rate,
    duplicate_rank,
    resolve_collisions,
    resolve_collisions_reference,
)
from letter_fast.tokenizer.diagnostics import cf_neighbour_code_similarity, gini, inspect_codes, level_usage


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
    _, labels = constrained_kmeans(x, k, lo, hi)
    sizes = torch.bincount(labels, minlength=k)
    assert sizes.min() >= lo and sizes.max() <= hi and sizes.sum() == n


def test_constrained_assignment_is_optimal_without_binding_limits():
    dist = torch.rand(30, 3)
    labels = constrained_assignment(dist, 0, 30)
    assert torch.equal(labels, dist.argmin(1))


def test_constrained_assignment_rejects_impossible_limits():
    with pytest.raises(ValueError, match="cannot split 10 points into 2 clusters of 6..9"):
        constrained_assignment(torch.rand(10, 2), 6, 9)


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
    # 5 items on one identifier, N = 4: no matching exists, so one extra level; each last-level code takes at
    # most N of them (4 stay on code 0, the farthest moves to code 1) and the extra level holds at most N codes
    codes = torch.zeros(5, 2, dtype=torch.long)
    residuals = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4]])
    fixed = resolve_collisions(codes, residuals, torch.tensor([[0.0], [5.0], [6.0], [7.0]]))
    assert fixed.shape == (5, 3) and collision_rate(fixed) == 0
    assert fixed[:, 1].tolist() == [0, 0, 0, 0, 1] and fixed[:, 2].tolist() == [0, 1, 2, 3, 0]
    # the original algorithm appended the rank among identical identifiers: 5 codes on a level of N = 4
    old = resolve_collisions_reference(codes, residuals, torch.tensor([[0.0], [5.0], [6.0], [7.0]]))
    assert sorted(old[:, 2].tolist()) == [0, 1, 2, 3, 4]


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
