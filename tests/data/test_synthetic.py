"""Synthetic catalogs: deterministic, and the planted structure is really there (and really independent)."""

import pytest
import torch

from letter_fast.data import leave_one_out
from letter_fast.data.synthetic import make_synthetic_catalog


@pytest.fixture(scope="module")
def catalog():
    return make_synthetic_catalog(num_items=640, num_users=1500, num_semantic_clusters=8, num_collab_groups=5, seed=3)


def consecutive_pairs(histories):
    a = torch.tensor([x for h in histories for x in h[:-1]])
    b = torch.tensor([x for h in histories for x in h[1:]])
    return a, b


def nearest_centroid_accuracy(emb, labels):
    k = int(labels.max()) + 1
    centroids = torch.stack([emb[labels == c].mean(0) for c in range(k)])
    return float((torch.cdist(emb, centroids).argmin(1) == labels).float().mean())


def test_deterministic_by_seed():
    a = make_synthetic_catalog(num_items=128, num_users=50, seed=7)
    b = make_synthetic_catalog(num_items=128, num_users=50, seed=7)
    c = make_synthetic_catalog(num_items=128, num_users=50, seed=8)
    assert a.histories == b.histories
    assert torch.equal(a.embeddings["semantic"], b.embeddings["semantic"])
    assert torch.equal(a.labels["collab_group"], b.labels["collab_group"])
    assert a.histories != c.histories


def test_shapes_and_container(catalog):
    assert catalog.num_items == 640 and catalog.num_users == 1500
    assert catalog.embeddings["semantic"].shape == (640, 64) and catalog.embeddings["semantic"].dtype == torch.float32
    assert catalog.embeddings["cf_planted"].shape == (640, 32)
    lengths = torch.tensor([len(h) for h in catalog.histories])
    assert int(lengths.min()) >= 5 and int(lengths.max()) <= 20
    split = leave_one_out(catalog.histories, catalog.num_items)  # the real-data pipeline runs on it
    assert len(split.test) == 1500 and len(split.train) == int((lengths - 3).sum())


def test_partitions_are_independent(catalog):
    sem, grp = catalog.labels["semantic_cluster"], catalog.labels["collab_group"]
    table = torch.bincount(sem * 5 + grp, minlength=40).view(8, 5)
    # 640 items on an 8 x 5 grid: exactly 16 per (cluster, group) cell
    assert bool((table == 16).all()), table


def test_semantic_embeddings_carry_clusters_not_groups(catalog):
    emb = catalog.embeddings["semantic"]
    assert nearest_centroid_accuracy(emb, catalog.labels["semantic_cluster"]) > 0.98
    # collab groups are invisible in the semantic space: near chance (1/5)
    assert nearest_centroid_accuracy(emb, catalog.labels["collab_group"]) < 0.35
    assert nearest_centroid_accuracy(catalog.embeddings["cf_planted"], catalog.labels["collab_group"]) > 0.98


def test_co_interactions_follow_groups_not_clusters(catalog):
    sem, grp = catalog.labels["semantic_cluster"], catalog.labels["collab_group"]
    a, b = consecutive_pairs(catalog.histories)
    same_group = float((grp[a] == grp[b]).float().mean())
    same_cluster = float((sem[a] == sem[b]).float().mean())
    # in_group_prob = 0.9 (+ chance hits from the catalog-wide draws) vs chance 1/5
    assert same_group > 0.8, same_group
    # semantic clusters: chance level 1/8 (popularity skew adds a little)
    assert abs(same_cluster - 1 / 8) < 0.05, same_cluster
    # the sequential pattern: successor pairs are frequent
    succ_rate = float((b == successor_of(catalog)[a]).float().mean())
    assert succ_rate > 0.3, succ_rate


def successor_of(catalog):
    """The most frequent next item of each item (the planted successor shows up as the mode)."""
    a, b = consecutive_pairs(catalog.histories)
    counts = torch.zeros(catalog.num_items, catalog.num_items).index_put_((a, b), torch.ones(len(a)), accumulate=True)
    return counts.argmax(1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_items"):
        make_synthetic_catalog(num_items=10, num_semantic_clusters=4, num_collab_groups=4)
    with pytest.raises(ValueError, match="min_length"):
        make_synthetic_catalog(min_length=5, max_length=3)
    with pytest.raises(ValueError, match="in_group_prob"):
        make_synthetic_catalog(in_group_prob=1.5)


def test_catalog_written_at_scale_is_deterministic(tmp_path):
    import numpy as np

    from letter_fast.data.synthetic import write_synthetic_catalog

    a = write_synthetic_catalog(tmp_path / "a", num_items=3000, dim=16, cf_dim=4, dtype="float16",
                                num_semantic_clusters=10, num_collab_groups=5, seed=1)
    b = write_synthetic_catalog(tmp_path / "b", num_items=3000, dim=16, cf_dim=4, dtype="float16",
                                num_semantic_clusters=10, num_collab_groups=5, seed=1)
    c = write_synthetic_catalog(tmp_path / "c", num_items=3000, dim=16, cf_dim=4, seed=2)
    sem = np.load(a["semantic"], mmap_mode="r")
    assert sem.shape == (3000, 16) and sem.dtype == np.float16 and np.isfinite(sem).all()
    assert np.load(c["semantic"]).dtype == np.float32
    assert np.load(a["cf"]).shape == (3000, 4)
    labels = np.load(a["labels"])
    assert labels.shape == (3000, 2) and labels[:, 0].max() < 10 and labels[:, 1].max() < 5
    inter = np.load(a["interactions"])
    assert inter.shape == (300, 20) and inter.min() >= 0 and inter.max() < 3000
    for kind in ("semantic", "cf", "labels", "interactions"):
        assert open(a[kind], "rb").read() == open(b[kind], "rb").read()
    assert open(a["interactions"], "rb").read() != open(c["interactions"], "rb").read()
    # the planted clusters are there: items of one semantic cluster are closer to its mean than to others'
    sem = sem.astype(np.float32)
    means = np.stack([sem[labels[:, 0] == k].mean(0) for k in range(10)])
    nearest = ((sem[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == labels[:, 0]).mean() > 0.9
    # users stay mostly inside their home group
    groups = labels[:, 1][inter]
    home = np.apply_along_axis(lambda r: np.bincount(r, minlength=5).argmax(), 1, groups)
    assert (groups == home[:, None]).mean() > 0.8
