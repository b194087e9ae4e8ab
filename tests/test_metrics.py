"""Recall/NDCG from ranks, ranks from scores and from top-K lists, against hand-worked values."""

import math

import pytest
import torch

from letter_fast.metrics import ndcg_at_k, ranks_from_scores, ranks_from_topk, recall_at_k, topk_metrics


def test_hand_worked_values():
    ranks = torch.tensor([0, 1, 4, 5, 9, 10, 100])
    assert recall_at_k(ranks, 5) == pytest.approx(3 / 7)
    assert recall_at_k(ranks, 10) == pytest.approx(5 / 7)
    expected5 = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 7
    assert ndcg_at_k(ranks, 5) == pytest.approx(expected5)
    expected10 = expected5 + (1 / math.log2(7) + 1 / math.log2(11)) / 7
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected10)
    m = topk_metrics(ranks)
    assert list(m) == ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
    assert m["ndcg@10"] == pytest.approx(expected10)


def test_ranks_from_scores_and_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0]])
    targets = torch.tensor([2, 0, 0])
    assert ranks_from_scores(scores, targets).tolist() == [1, 2, 0]  # ties count against the target
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="targets must lie"):
        ranks_from_scores(scores, torch.tensor([0, 1, 3]))


def test_ranks_from_scores_matches_argsort():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 37, generator=g)
    targets = torch.randint(0, 37, (50,), generator=g)
    order = scores.argsort(1, descending=True)
    expected = (order == targets[:, None]).float().argmax(1)
    assert torch.equal(ranks_from_scores(scores, targets), expected)


def test_ranks_from_topk():
    topk = torch.tensor([[3, 1, 2], [5, 6, 7], [9, 9, 8]])
    assert ranks_from_topk(topk, torch.tensor([2, 4, 9])).tolist() == [2, 3, 0]


def test_bad_input():
    with pytest.raises(ValueError, match="K must be"):
        recall_at_k(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k(torch.tensor([-1]), 5)
    assert math.isnan(recall_at_k(torch.tensor([], dtype=torch.long), 5))
