"""TIGER decoding and evaluation: the fast decoder loop against HF generate + a dict trie, ranks with collisions,
validation-driven training with resumable checkpoints."""

import pytest
import torch

from letter_fast.genrec import ItemIndex, constrained_beam_search
from letter_fast.genrec.evaluate import evaluate_tiger, topk_ranks
from letter_fast.genrec.tiger import CodeVocabulary, TigerModelConfig, build_sequences, build_tiger
from letter_fast.genrec.tiger_decoder import TigerDecoder, hf_generate_recommend, recommend
from letter_fast.metrics import topk_metrics
from tests.genrec.helpers import random_catalog
from tests.tolerances import assert_close

pytest.importorskip("transformers")

TINY = TigerModelConfig(num_layers=2, num_decoder_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8, dropout=0.0)


@pytest.mark.parametrize("num_beams", [2, 5, 12])
def test_decoder_loop_equals_hf_generate_with_a_dict_trie(num_beams):
    """Same beams, same order, same scores as ``generate(num_beams, prefix_allowed_tokens_fn=dict trie)``."""
    vocab = CodeVocabulary(3, 6)
    codes = random_catalog(120, 3, 6, seed=3)                          # distinct identifiers, random item order
    index = ItemIndex.from_codes(codes, num_codes=6)
    model = build_tiger(vocab, TINY, seed=2).eval()
    g = torch.Generator().manual_seed(0)
    B = 4
    ids = torch.randint(2, vocab.size, (B, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0                                                    # a padded (shorter) user
    ids[1, 4:] = 0
    hf_codes, hf_scores = hf_generate_recommend(model, vocab, codes, ids, mask, num_beams=num_beams, with_eos=False)
    items, scores = constrained_beam_search(TigerDecoder(model, vocab).start(ids, mask), B, num_beams, index)
    assert torch.equal(codes[items], hf_codes), "different beams than HF generate"
    assert_close(scores, hf_scores.float(), dtype=torch.float32, what="beam scores vs HF generate")


def test_recommend_batches_users_and_keeps_their_order():
    vocab = CodeVocabulary(2, 5)
    codes = random_catalog(25, 2, 5, seed=1)
    index = ItemIndex.from_codes(codes, num_codes=5)
    model = build_tiger(vocab, TINY, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    V = codes.shape[0]
    history = torch.randint(0, V, (9, 6), generator=g)
    history[::2, :3] = -1                                              # mixed lengths
    seq = build_sequences(codes, history, torch.randint(0, V, (9,), generator=g), vocab)
    all_at_once = recommend(model, vocab, index, seq, num_beams=6, batch_size=100)
    in_small_batches = recommend(model, vocab, index, seq, num_beams=6, batch_size=2)
    assert torch.equal(all_at_once[0], in_small_batches[0])
    assert_close(in_small_batches[1], all_at_once[1], dtype=torch.float32, what="scores across batchings")
    # and each row equals a one-user search
    ids, mask, _ = seq.batch(torch.tensor([4]))
    one, _ = constrained_beam_search(TigerDecoder(model, vocab).start(ids, mask), 1, 6, index)
    assert torch.equal(one[0], all_at_once[0][4])


def test_ranks_by_hand_with_collisions():
    # items 0,1 share identifier (0,0); items 2,3,4 share (1,1); item 5 alone at (2,0)
    codes = torch.tensor([[0, 0], [0, 0], [1, 1], [1, 1], [1, 1], [2, 0]])
    index = ItemIndex.from_codes(codes, num_codes=3, allow_collisions=True)
    ident = lambda items: index.identifier_of_items(torch.tensor(items))   # noqa: E731
    a, b, c = ident([0, 2, 5]).tolist()
    lists = torch.tensor([[b, a, c], [c, b, -1], [a, c, b], [c, -1, -1]])
    targets = torch.tensor([1, 4, 5, 0])
    ranks = topk_ranks(lists, targets, index)
    # identifier level: 1 -> slot 1; 4 -> slot 1; 5 -> slot 1; 0 -> absent (rank K = 3)
    assert ranks["identifier"].tolist() == [1, 1, 1, 3]
    # item level: user 0: 3 items of b before, item 1 is second in its group -> 4;
    # user 1: 1 item of c before, item 4 third in group b -> 3; user 2: 2 items of a before -> 2; user 3: miss
    assert ranks["item"][:3].tolist() == [4, 3, 2]
    assert ranks["item"][3] > 10
    m = topk_metrics(ranks["item"], (5,))
    assert m["recall@5"] == pytest.approx(0.75)
    import math
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(6) + 1 / math.log2(5) + 1 / math.log2(4)) / 4)


def test_evaluate_reports_item_level_metrics_only_with_collisions():
    vocab = CodeVocabulary(2, 4)
    model = build_tiger(vocab, TINY, seed=0).eval()
    g = torch.Generator().manual_seed(0)

    class Samples:      # the two fields evaluate reads from letter_fast.data.SequenceSamples
        history = torch.randint(0, 8, (6, 4), generator=g)
        target = torch.randint(0, 8, (6,), generator=g)

    distinct = torch.tensor([[i // 4, i % 4] for i in range(8)])
    result = evaluate_tiger(model, vocab, Samples, distinct, num_beams=10, progress=False)
    assert set(result["metrics"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert result["users"] == 6 and result["collisions"]["items_sharing_an_identifier"] == 0
    colliding = distinct.clone()
    colliding[1] = colliding[0]
    result = evaluate_tiger(model, vocab, Samples, colliding, num_beams=10, progress=False)
    assert "item_recall@10" in result["metrics"]
    assert result["metrics"]["item_recall@5"] <= result["metrics"]["recall@5"]
    assert result["collisions"]["items_sharing_an_identifier"] == 2


@pytest.mark.slow
def test_gpu_check_body_runs_on_cpu(tmp_path):
    """benchmarks/bench_tiger_decode.gpu_check's body at tiny sizes on the CPU (keeps it from rotting unseen)."""
    from benchmarks.bench_tiger_decode import device_check

    device_check(tmp_path, "cpu", exact_users=3, users=6, hf_users=3, train_batch=8, train_steps=1, name="smoke")
    text = (tmp_path / "smoke.md").read_text()
    assert "users/s" in text and "training throughput" in text
