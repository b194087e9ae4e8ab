"""k-means used for codebook initialization."""

import pytest
import torch

from letter_fast.nn import kmeans, squared_distances


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
