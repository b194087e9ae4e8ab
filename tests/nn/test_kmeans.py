"""k-means used for codebook initialization."""

import pytest
import torch

from letter_fast.nn import kmeans, squared_distances
from letter_fast.nn.kmeans import (
    constrained_assignment,
    constrained_kmeans,
    greedy_constrained_assignment,
    reference_cluster_sizes,
)


def test_recovers_separated_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 5, generator=g) * 10
    labels = torch.arange(600) % 6
    x = centers[labels] + 0.1 * torch.randn(600, 5, generator=g)
    found, assigned = kmeans(x, 6, seed=3)
    # one found cluster per planted one
    assert len({(int(a), int(b)) for a, b in zip(labels, assigned, strict=True)}) == 6
    # each found center is the mean of its points, and labels are nearest centers
    for c in range(6):
        torch.testing.assert_close(found[c], x[assigned == c].mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(assigned, squared_distances(x, found).argmin(1))
    again, again_labels = kmeans(x, 6, seed=3)
    assert torch.equal(again, found) and torch.equal(again_labels, assigned)


def test_fewer_points_than_centers_and_errors():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    centers, labels = kmeans(x, 8)
    assert centers.shape == (8, 4) and labels.shape == (3,)
    assert (squared_distances(centers, x).amin(1) < 1e-6).all()  # every center is a data point
    with pytest.raises(ValueError, match="n >= 1 points"):
        kmeans(torch.empty(0, 4), 2)
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans(x, 0)


# ---------------------------------------------------------------------------------------- size-constrained k-means

def lopsided(n, d=6, seed=0):
    """A cloud whose plain k-means clusters have very unequal sizes: a third of the points crowd one corner."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 3
    x[: n // 3] = x[: n // 3] * 0.05 + 4
    return x


def test_reference_cluster_sizes_follow_the_rule_and_are_feasible():
    assert reference_cluster_sizes(4344, 256) == (8, 32)          # min(4344 // 512, 50) = 8, 4x
    assert reference_cluster_sizes(30000, 256) == (50, 200)       # min(58, 50)
    assert reference_cluster_sizes(65536, 256) == (50, 256)       # 200 * 256 < 65,536: raised to ceil(n / k)
    assert reference_cluster_sizes(200, 16) == (0, 13)            # 200 // 512 = 0: raised to ceil(200 / 16)
    for n, k in ((4344, 256), (65536, 256), (200, 16), (5, 8), (100000, 7)):
        lo, hi = reference_cluster_sizes(n, k)
        assert lo * k <= n <= hi * k
    with pytest.raises(ValueError, match="n >= 1"):
        reference_cluster_sizes(0, 4)


@pytest.mark.parametrize("n,k,lo,hi", [(600, 16, 20, 80), (600, 16, 30, 45), (500, 25, 0, 25), (640, 32, 20, 20)])
def test_greedy_assignment_respects_the_bounds(n, k, lo, hi):
    x = lopsided(n, seed=n + k)
    centers, _ = kmeans(x, k, iters=5, seed=1)
    dist = squared_distances(x, centers)
    unconstrained = torch.bincount(dist.argmin(1), minlength=k)
    assert unconstrained.max() > hi or unconstrained.min() < lo      # the bounds bind
    labels = greedy_constrained_assignment(dist, lo, hi)
    sizes = torch.bincount(labels, minlength=k)
    assert labels.shape == (n,) and sizes.min() >= lo and sizes.max() <= hi and int(sizes.sum()) == n
    # not the optimum (measured 1.02-1.39x the exact assignment's cost here), far from a random split (2-2.6x)
    def cost(assigned):
        return float(dist.gather(1, assigned[:, None]).sum())

    best = cost(constrained_assignment(dist, lo, hi, method="exact"))
    random = labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    assert best <= cost(labels) < 1.5 * best < 0.8 * cost(random)
    assert torch.equal(greedy_constrained_assignment(dist, lo, hi), labels)


def test_greedy_assignment_is_the_nearest_center_when_the_bounds_do_not_bind():
    dist = torch.rand(300, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(greedy_constrained_assignment(dist, 0, 300), dist.argmin(1))
    assert torch.equal(constrained_assignment(dist, 0, 300, method="greedy"), dist.argmin(1))
    with pytest.raises(ValueError, match="cannot split 300 points into 5 clusters of 61..100"):
        greedy_constrained_assignment(dist, 61, 100)
    with pytest.raises(ValueError, match="method must be"):
        constrained_assignment(dist, 0, 300, method="sinkhorn")


def test_constrained_kmeans_respects_the_bounds_and_is_seeded():
    x = lopsided(4344, d=8, seed=4)
    lo, hi = reference_cluster_sizes(4344, 256)
    centers, labels = constrained_kmeans(x, 256, lo, hi, iters=10, seed=7, init_iters=0)
    sizes = torch.bincount(labels, minlength=256)
    assert sizes.min() >= lo and sizes.max() <= hi
    plain = torch.bincount(kmeans(x, 256, iters=10, seed=7)[1], minlength=256)
    assert plain.max() > hi and plain.min() < lo                     # plain k-means breaks them
    # the centers are the means of their clusters
    torch.testing.assert_close(centers, torch.zeros_like(centers).index_add_(0, labels, x) / sizes[:, None])
    again = constrained_kmeans(x, 256, lo, hi, iters=10, seed=7, init_iters=0)
    assert torch.equal(again[0], centers) and torch.equal(again[1], labels)
    other = constrained_kmeans(x, 256, lo, hi, iters=10, seed=8, init_iters=0)
    assert not torch.equal(other[1], labels)


@pytest.mark.slow
def test_constrained_kmeans_scales_to_the_default_sample():
    """65,536 points x 256 centers (the default kmeans_sample and codebook size): seconds, exactly balanced."""
    import time

    x = lopsided(65536, d=32, seed=5)
    lo, hi = reference_cluster_sizes(65536, 256)
    t0 = time.perf_counter()
    _, labels = constrained_kmeans(x, 256, lo, hi, iters=3, seed=0, init_iters=0)
    seconds = time.perf_counter() - t0
    assert torch.equal(torch.bincount(labels, minlength=256), torch.full((256,), 256))
    assert seconds < 60, seconds
