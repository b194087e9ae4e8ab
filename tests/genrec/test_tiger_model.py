"""TIGER model parts: vocabulary, sequence building, ranking-guided loss, training signal, the cached decoder step."""

import pytest
import torch
import torch.nn.functional as F

from letter_fast.genrec.tiger import (
    EOS_ID,
    PAD_ID,
    CodeVocabulary,
    TigerModelConfig,
    build_sequences,
    build_tiger,
    ranking_guided_loss,
    tiger_loss,
)
from letter_fast.genrec.tiger_decoder import TigerDecoder
from letter_fast.genrec.train import bucketed_batches, cosine_with_warmup
from tests.tolerances import assert_close

pytest.importorskip("transformers")

TINY = TigerModelConfig(num_layers=2, num_decoder_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8, dropout=0.0)


def test_vocabulary_round_trip_and_layout():
    vocab = CodeVocabulary(num_levels=3, num_codes=5)
    assert vocab.size == 2 + 15
    codes = torch.tensor([[0, 4, 2], [1, 0, 0]])
    tokens = vocab.encode(codes)
    assert tokens.tolist() == [[2, 11, 14], [3, 7, 12]]
    assert torch.equal(vocab.decode(tokens), codes)
    assert vocab.level_offset(2) == 12
    with pytest.raises(ValueError, match="num_levels"):
        CodeVocabulary(0, 5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_build_sequences_layout(side):
    codes = torch.tensor([[0, 1], [2, 3], [1, 1], [3, 0]])            # V = 4, L = 2, N = 4
    vocab = CodeVocabulary(2, 4)
    hist = [[0, 2, 1], [3], [1, 2]]
    H = 3
    pad = [[-1] * (H - len(h)) for h in hist]
    history = torch.tensor([(p + h) if side == "left" else (h + p) for p, h in zip(pad, hist)])
    seq = build_sequences(codes, history, torch.tensor([3, 0, 2]), vocab)
    tok = vocab.encode(codes).tolist()
    for i, h in enumerate(hist):
        expect = [t for item in h for t in tok[item]] + [EOS_ID]
        assert seq.input_ids[i, : seq.lengths[i]].tolist() == expect
        assert (seq.input_ids[i, seq.lengths[i]:] == PAD_ID).all()
    assert seq.labels.tolist() == [tok[3] + [EOS_ID], tok[0] + [EOS_ID], tok[2] + [EOS_ID]]
    ids, mask, _ = seq.batch(torch.tensor([1, 2]))
    assert ids.shape == (2, 5) and mask.sum(1).tolist() == [3, 5]
    # truncation keeps the most recent items
    short = build_sequences(codes, history, torch.tensor([3, 0, 2]), vocab, max_history=1)
    assert short.input_ids[0, :3].tolist() == tok[1] + [EOS_ID]


def test_build_sequences_rejects_unknown_items():
    codes = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="item id 7 is outside the 3 items"):
        build_sequences(codes, torch.tensor([[0, 7]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="target item id 3"):
        build_sequences(codes, torch.tensor([[0, 1]]), torch.tensor([3]))


def test_ranking_loss_is_cross_entropy_at_tau_1_and_scaled_otherwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 11, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 4), generator=g)
    labels[0, 1] = -100
    plain = F.cross_entropy(logits.reshape(-1, 11).float(), labels.reshape(-1), ignore_index=-100)
    assert_close(ranking_guided_loss(logits, labels, tau=1.0), plain, what="tau=1 loss")
    sharp = F.cross_entropy(logits.reshape(-1, 11).float() / 0.7, labels.reshape(-1), ignore_index=-100)
    assert_close(ranking_guided_loss(logits, labels, tau=0.7), sharp, what="tau=0.7 loss")
    # a lower temperature weighs the hardest negative more in the gradient
    with pytest.raises(ValueError, match="tau must be > 0"):
        ranking_guided_loss(logits, labels, tau=0.0)


def test_tiger_loss_equals_hf_loss_at_tau_1():
    vocab = CodeVocabulary(2, 4)
    model = build_tiger(vocab, TINY, seed=0).eval()
    ids = torch.randint(2, vocab.size, (3, 7))
    mask = torch.ones_like(ids)
    labels = torch.cat([vocab.encode(torch.randint(0, 4, (3, 2))), torch.full((3, 1), EOS_ID)], 1)
    hf = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert_close(tiger_loss(model, ids, mask, labels, tau=1.0), hf, what="TIGER loss vs HF loss")


def test_training_decreases_the_loss():
    torch.manual_seed(0)
    codes = torch.randint(0, 4, (12, 3))
    vocab = CodeVocabulary(3, 4)
    history = torch.randint(0, 12, (32, 5))
    target = (history[:, -1] + 1) % 12                     # a learnable rule: next item = last item + 1
    seq = build_sequences(codes, history, target, vocab)
    model = build_tiger(vocab, TINY, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids, mask, labels = seq.batch(torch.arange(32))
    losses = []
    for _ in range(40):
        loss = tiger_loss(model, ids, mask, labels, tau=0.7)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("chunk_users", [1, 2, 32])
def test_decoder_steps_equal_full_forward(chunk_users):
    """Cached self-attention + per-user shared cross-attention K/V give the logits of a plain forward pass."""
    vocab = CodeVocabulary(3, 7)
    model = build_tiger(vocab, TINY, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    B, beams = 3, 4
    ids = torch.randint(2, vocab.size, (B, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = PAD_ID
    step = TigerDecoder(model, vocab, chunk_users=chunk_users).start(ids, mask)
    codes = torch.randint(0, 7, (B * beams, 3), generator=g)
    outs = [step(torch.zeros(B, 0, dtype=torch.long), None).repeat_interleave(beams, 0)]
    outs.append(step(codes[:, :1], torch.arange(B).repeat_interleave(beams)))
    # reorder beams within each user before the last step, as a search does
    shuffle = (torch.stack([torch.randperm(beams, generator=g) for _ in range(B)])
               + torch.arange(B)[:, None] * beams).flatten()
    codes[:, :1] = codes[shuffle, :1]
    outs[1] = outs[1][shuffle]
    outs.append(step(codes[:, :2], shuffle))
    dec_in = torch.cat([torch.full((B * beams, 1), PAD_ID), vocab.encode(codes)[:, :2]], 1)
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=ids.repeat_interleave(beams, 0),
                                      attention_mask=mask.repeat_interleave(beams, 0),
                                      decoder_input_ids=dec_in).logits, -1)
    for t in range(3):
        o = vocab.level_offset(t)
        assert_close(outs[t], ref[:, t, o:o + 7], dtype=torch.float32, what=f"log-probs at level {t}")


def test_bucketed_batches_cover_every_sample_and_group_lengths():
    lengths = torch.randint(1, 82, (1000,), generator=torch.Generator().manual_seed(0))
    batches = bucketed_batches(lengths, 32, torch.Generator().manual_seed(1), window=10)
    flat = torch.cat(batches)
    assert torch.equal(flat.sort().values, torch.arange(1000))
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    assert padded < 1.15 * int(lengths.sum()), "length bucketing should leave little padding"


def test_cosine_schedule_warms_up_then_decays_to_zero():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.01


def test_bfloat16_decoder_stays_close_to_float32():
    vocab = CodeVocabulary(2, 9)
    model = build_tiger(vocab, TINY, seed=3).eval()
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, vocab.size, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    fp32 = TigerDecoder(model, vocab).start(ids, mask)
    bf16 = TigerDecoder(model, vocab, dtype=torch.bfloat16).start(ids, mask)
    a, b = fp32(ids[:, :0], None), bf16(ids[:, :0], None)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05, f"bf16 log-probs off by {(a - b).abs().max():.3f}"
    prefix = torch.randint(0, 9, (4, 1), generator=g)
    a, b = fp32(prefix, torch.arange(4)), bf16(prefix, torch.arange(4))
    assert (a - b).abs().max() < 0.05, f"bf16 log-probs off by {(a - b).abs().max():.3f}"
