"""TrieLogitsProcessor inside HF generate equals a dict-trie prefix_allowed_tokens_fn (tiny random T5)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from letter_fast.genrec import ItemIndex, TrieLogitsProcessor  # noqa: E402
from tests.conftest import NATIVE  # noqa: E402
from tests.genrec.helpers import random_catalog  # noqa: E402

PAD, EOS = 0, 1


def tiny_t5(vocab: int, seed: int = 0):
    config = transformers.T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                                   num_heads=2, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(config).eval()


def dict_trie_fn(codes, token_of, prompt_length):
    """The usual constraint: a Python dict from generated-token prefixes to allowed next tokens."""
    trie = {}
    for row in codes.tolist():
        tokens = [int(token_of[level][c]) for level, c in enumerate(row)]
        for t in range(len(tokens)):
            trie.setdefault(tuple(tokens[:t]), set()).add(tokens[t])
        trie[tuple(tokens)] = {EOS}

    def allowed(batch_id, sent):
        prefix = tuple(sent[prompt_length:].tolist())
        if len(prefix) >= codes.shape[1]:
            return [EOS]
        return sorted(trie.get(prefix, {EOS}))

    return allowed


def generate(model, inputs, K, L, **kwargs):
    with torch.no_grad():
        out = model.generate(**inputs, num_beams=K, num_return_sequences=K, max_new_tokens=L + 1, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, **kwargs)
    return out.sequences, out.sequences_scores


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if NATIVE else []))
@pytest.mark.parametrize("style", ["table", "offsets"])
@pytest.mark.parametrize("V,L,N,K", [(40, 3, 4, 5), (200, 4, 6, 8), (3, 2, 5, 6)])
def test_equals_dict_trie_on_tiny_t5(style, V, L, N, K, backend):
    codes = random_catalog(V, L, N, seed=V + L)
    index = ItemIndex.from_codes(codes, num_codes=N)
    g = torch.Generator().manual_seed(V)
    if style == "table":  # TIGER: one token per (level, code), here shuffled
        token_of = (2 + torch.randperm(L * N, generator=g)).reshape(L, N)
        spec = token_of
    else:  # LLM-style: blocks of added tokens after the base vocabulary
        offsets = torch.tensor([7 + level * (N + 3) for level in range(L)])
        token_of = offsets[:, None] + torch.arange(N)[None, :]
        spec = offsets.tolist()
    vocab = int(token_of.max()) + 5
    model = tiny_t5(vocab, seed=V)
    inputs = {"input_ids": torch.randint(2, vocab, (3, 6), generator=g),
              "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    ref_seq, ref_scores = generate(model, inputs, K, L, prefix_allowed_tokens_fn=dict_trie_fn(codes, token_of, 1))
    proc = TrieLogitsProcessor(index, spec, EOS, prompt_length=1, num_beams=K, backend=backend)
    seq, scores = generate(model, inputs, K, L, logits_processor=transformers.LogitsProcessorList([proc]))
    assert torch.equal(seq, ref_seq)
    assert torch.equal(scores, ref_scores)
    free_seq, _ = generate(model, inputs, K, L)
    assert not torch.equal(free_seq, ref_seq), "the constraint must matter for this test to mean anything"
    # inferred prompt length gives the same, and the processor is reusable across generate calls
    auto = TrieLogitsProcessor(index, spec, EOS, num_beams=K, prompt_length=None, backend=backend)
    for _ in range(2):
        seq2, scores2 = generate(model, inputs, K, L, logits_processor=transformers.LogitsProcessorList([auto]))
        assert torch.equal(seq2, ref_seq) and torch.equal(scores2, ref_scores)
    # every finite-scored sequence is an item
    finite = torch.isfinite(scores)
    gen = seq[:, 1:L + 1]
    level_codes = torch.stack([(token_of[level][None, :] == gen[:, level, None]).float().argmax(1)
                               for level in range(L)], 1)
    assert (index.lookup(level_codes)[finite] >= 0).all()
    assert (seq[finite, L + 1] == EOS).all()


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if NATIVE else []))
def test_processor_masks_directly(backend):
    codes = torch.tensor([[0, 1], [0, 2], [2, 0]])
    index = ItemIndex.from_codes(codes, num_codes=3)
    proc = TrieLogitsProcessor(index, [10, 20], eos_token_id=1, prompt_length=2, backend=backend)
    scores = torch.randn(3, 30)
    ids = torch.tensor([[5, 5], [5, 5], [5, 5]])
    out = proc(ids, scores)
    assert torch.isfinite(out).sum(1).tolist() == [2, 2, 2]
    assert torch.equal(out[:, [10, 12]], scores[:, [10, 12]])
    out = proc(torch.tensor([[5, 5, 10], [5, 5, 12], [5, 5, 11]]), scores)
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [21, 22]
    assert torch.isfinite(out[1]).nonzero().squeeze(1).tolist() == [20]
    assert torch.isfinite(out[2]).nonzero().squeeze(1).tolist() == [1], "an invalid prefix may only end"
    out = proc(torch.tensor([[5, 5, 10, 21]]), scores[:1])
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [1]


@pytest.mark.parametrize("kwargs,match", [
    (dict(code_token_ids=[1, 2, 3]), "one entry per level"),
    (dict(code_token_ids=torch.zeros(2, 2, dtype=torch.long)), r"\[L, N\]"),
    (dict(code_token_ids=[1.0, 2.0]), "integer"),
    (dict(eos_token_id=-1), "eos_token_id"),
    (dict(num_beams=0), "num_beams"),
    (dict(index=None), "ItemIndex"),
])
def test_bad_input(kwargs, match):
    args = dict(index=ItemIndex.from_codes(torch.tensor([[0, 1]]), num_codes=3), code_token_ids=[10, 20],
                eos_token_id=1)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        TrieLogitsProcessor(**args)


def test_wrong_logits_width():
    proc = TrieLogitsProcessor(ItemIndex.from_codes(torch.tensor([[0, 1]]), num_codes=3), [10, 20], eos_token_id=1)
    with pytest.raises(ValueError, match="vocab width 15"):
        proc(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 15))


@pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
def test_native_and_torch_paths_agree_with_stuck_rows():
    codes = random_catalog(300, 3, 7, seed=3)
    index = ItemIndex.from_codes(codes, num_codes=7)
    g = torch.Generator().manual_seed(0)
    picked = codes[torch.randint(0, codes.shape[0], (12,), generator=g), :2]
    ids = torch.cat([torch.zeros(12, 1, dtype=torch.long), 2 + picked + torch.tensor([0, 7])], 1)
    ids[3, 2] = 40  # off the trie: EOS only
    scores = torch.randn(12, 30, generator=g)
    scores[4:8] = float("-inf")  # query 1 (rows 4..7) has only -inf allowed scores: HF forces it at 0
    outs = [TrieLogitsProcessor(index, [2, 9, 16], EOS, prompt_length=1, num_beams=4, backend=b)(ids, scores)
            for b in ("reference", "cpu")]
    assert torch.equal(outs[0], outs[1])
    assert (outs[0][4:8].max(1).values == 0).all()
