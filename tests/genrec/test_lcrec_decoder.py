"""LC-Rec decoding: the shared-prompt decoder equals HF generate + a trie constraint on tiny random Llama / Qwen2."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from letter_fast.genrec import ItemIndex, TrieLogitsProcessor  # noqa: E402
from letter_fast.genrec.lcrec.decoder import (  # noqa: E402
    LCRecDecoder,
    dict_trie_prefix_fn,
    generate_text,
    hf_generate_recommend,
    left_pad,
    tokens_to_identifiers,
)
from tests.genrec.helpers import random_catalog  # noqa: E402

BASE_VOCAB = 64        # byte-level-ish base vocabulary of the tiny models; code tokens follow
EOS = PAD = 2          # eos = pad, no BOS (as LC-Rec's Llama / Qwen tokenizers are usually set up)


def tiny_llm(family: str, vocab: int, seed: int = 0):
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, eos_token_id=EOS, pad_token_id=PAD,
                  bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if family == "llama":
        config = transformers.LlamaConfig(**common, rope_theta=500.0)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.Qwen2Config(**common, use_sliding_window=False)
    return transformers.Qwen2ForCausalLM(config).eval()


def catalog(V=300, L=3, N=8, seed=0, collisions=True):
    """Random identifiers with some items sharing one (collisions), item ids in random order."""
    codes = random_catalog(V, L, N, seed=seed)
    if collisions:
        g = torch.Generator().manual_seed(seed + 1)
        dup = codes[torch.randint(0, codes.shape[0], (12,), generator=g)]
        codes = torch.cat([codes, dup])
    return codes


def setup(family, L=3, N=8, seed=0):
    codes = catalog(L=L, N=N, seed=seed)
    index = ItemIndex.from_codes(codes, num_codes=N, allow_collisions=True)
    offsets = [BASE_VOCAB + level * N for level in range(L)]
    model = tiny_llm(family, BASE_VOCAB + L * N, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    lengths = [9, 5, 12, 7]
    prompts = [torch.randint(3, BASE_VOCAB, (n,), generator=g).tolist() for n in lengths]
    return codes, index, offsets, model, prompts


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("K", [4, 10])
def test_equals_hf_generate_with_trie_logits_processor_and_dict_trie(family, K):
    L, N = 3, 8
    codes, index, offsets, model, prompts = setup(family, L, N)
    assert index.has_collisions
    ids, mask = left_pad(prompts, PAD)
    S = ids.shape[1]
    proc = TrieLogitsProcessor(index, offsets, EOS, prompt_length=S, num_beams=K)
    hf_tokens, hf_scores = hf_generate_recommend(model, ids, mask, L, K, logits_processor=proc)
    hf_ident = tokens_to_identifiers(hf_tokens, index, offsets)
    dict_fn = dict_trie_prefix_fn(codes, offsets, EOS, S)
    d_tokens, d_scores = hf_generate_recommend(model, ids, mask, L, K, prefix_fn=dict_fn)
    assert torch.equal(d_tokens, hf_tokens) and torch.allclose(d_scores, hf_scores, atol=1e-6)
    assert (hf_ident >= 0).all(), "the constraint keeps HF on real items"

    for mode in ("shared", "hf"):
        decoder = LCRecDecoder(model, index, offsets, eos_token_id=EOS, mode=mode)
        items, scores, idents = decoder.recommend(prompts, num_beams=K, batch_size=3, return_identifiers=True)
        assert torch.equal(idents, hf_ident), f"{mode}: different beams than HF generate"
        torch.testing.assert_close(scores, hf_scores.float(), atol=1e-5, rtol=1e-5)
        # every returned item is a real item carrying the returned identifier; identifiers distinct per user
        assert (items >= 0).all()
        assert torch.equal(index.identifier_of_items(items.reshape(-1)).reshape(items.shape), idents)
        assert all(len(set(row.tolist())) == K for row in idents)
        # the same from a left-padded batch (users in input order)
        items2, scores2 = decoder.recommend(input_ids=ids, attention_mask=mask, num_beams=K, batch_size=4)
        assert torch.equal(items2, items) and torch.allclose(scores2, scores, atol=1e-5)


@pytest.mark.parametrize("mode", ["shared", "hf"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_score_eos_equals_hf_generate_with_the_closing_eos(family, mode):
    L, N, K = 3, 8, 6
    codes, index, offsets, model, prompts = setup(family, L, N, seed=3)
    ids, mask = left_pad(prompts, PAD)
    proc = TrieLogitsProcessor(index, offsets, EOS, prompt_length=ids.shape[1], num_beams=K)
    hf_tokens, hf_scores = hf_generate_recommend(model, ids, mask, L, K, logits_processor=proc, with_eos=True)
    hf_ident = tokens_to_identifiers(hf_tokens, index, offsets)
    decoder = LCRecDecoder(model, index, offsets, eos_token_id=EOS, mode=mode)
    _, scores, idents = decoder.recommend(prompts, num_beams=K, score_eos=True, return_identifiers=True)
    _, plain = decoder.recommend(prompts, num_beams=K)
    assert not torch.equal(scores, plain), "the EOS term must change the scores for this test to mean anything"
    assert torch.equal(idents, hf_ident)
    torch.testing.assert_close(scores, hf_scores.float(), atol=1e-5, rtol=1e-5)


def test_peft_lora_unmerged_equals_merged():
    peft = pytest.importorskip("peft")
    L, N, K = 3, 8, 5
    codes, index, offsets, model, prompts = setup("llama", L, N, seed=5)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
                             lora_dropout=0.0, init_lora_weights=False)
    torch.manual_seed(1)
    wrapped = peft.get_peft_model(model, config).eval()
    ids, mask = left_pad(prompts, PAD)
    proc = TrieLogitsProcessor(index, offsets, EOS, prompt_length=ids.shape[1], num_beams=K)
    hf_tokens, hf_scores = hf_generate_recommend(wrapped, ids, mask, L, K, logits_processor=proc)
    unmerged = LCRecDecoder(wrapped, index, offsets)
    assert unmerged._fused is None, "unmerged LoRA layers must run as module calls (each adds its own update)"
    with pytest.raises(ValueError, match="merge_and_unload"):
        LCRecDecoder(wrapped, index, offsets, fused=True)
    _, scores, idents = unmerged.recommend(prompts, num_beams=K, return_identifiers=True)
    assert torch.equal(idents, tokens_to_identifiers(hf_tokens, index, offsets))
    torch.testing.assert_close(scores, hf_scores.float(), atol=1e-5, rtol=1e-5)
    merged = wrapped.merge_and_unload()
    fused = LCRecDecoder(merged, index, offsets)
    assert fused._fused is not None, "a merged model gets the fused path"
    _, scores_m, idents_m = fused.recommend(prompts, num_beams=K, return_identifiers=True)
    assert torch.equal(idents_m, idents)
    torch.testing.assert_close(scores_m, scores, atol=1e-5, rtol=1e-5)


def test_fewer_items_than_beams_pads_with_minus_one():
    L, N = 2, 3
    codes = torch.tensor([[0, 1], [2, 2], [1, 0]])
    index = ItemIndex.from_codes(codes, num_codes=N)
    offsets = [BASE_VOCAB, BASE_VOCAB + N]
    model = tiny_llm("llama", BASE_VOCAB + L * N)
    items, scores = LCRecDecoder(model, index, offsets).recommend([[5, 6, 7], [9]], num_beams=5)
    assert (items[:, :3] >= 0).all() and (items[:, 3:] == -1).all()
    assert torch.isfinite(scores[:, :3]).all() and scores[:, 3:].isneginf().all()
    assert all(sorted(row[:3].tolist()) == [0, 1, 2] for row in items)


def test_bad_inputs_are_explained():
    codes, index, offsets, model, prompts = setup("llama")
    decoder = LCRecDecoder(model, index, offsets)
    ids, mask = left_pad(prompts, PAD)
    with pytest.raises(ValueError, match="left-padded"):
        decoder.recommend(input_ids=ids.flip(1), attention_mask=mask.flip(1))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        LCRecDecoder(model, index, [10_000, 10_008, 10_016])
    with pytest.raises(ValueError, match="offsets"):
        LCRecDecoder(model, index, [BASE_VOCAB])


def test_generate_text_left_pads_and_returns_new_text():
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens(["<|pad|>", "<|im_end|>"])
    tok.add_tokens([chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ"])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>")
    model = tiny_llm("qwen2", len(fast))
    model.config.eos_token_id = model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    texts = generate_text(model, fast, ["abc", "hello world"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    one = generate_text(model, fast, "hello world", max_new_tokens=4)
    assert one == texts[1:], "left padding must not change a prompt's greedy continuation"


@pytest.mark.slow
def test_gpu_check_body_runs_on_cpu(tmp_path):
    """benchmarks/bench_lcrec_decode.gpu_check's body on the tiny random Llama on the CPU (keeps it from rotting)."""
    from benchmarks.bench_lcrec_decode import device_check

    device_check(tmp_path, "cpu", users=2, beams=4, quick=True, name="smoke")
    assert (tmp_path / "smoke.md").exists()


@pytest.mark.slow
def test_scale_mode_runs_and_checks_items(tmp_path):
    """bench_lcrec_decode --scale on the tiny random Llama: a row per size, every returned item valid."""
    from benchmarks.bench_lcrec_decode import main

    main(["--quick", "--scale", "100", "--users", "2", "--beams", "4", "--repeat", "1", "--out", str(tmp_path)])
    text = (tmp_path / "lcrec_decode_scale.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 2e+02"))
    assert row.rstrip(" |").endswith("| 0"), row   # invalid items


def test_scaled_rope_and_multi_head_attention():
    """The model's own rotary module gives the angles (here linear RoPE scaling), and kv_heads = heads works."""
    L, N, K = 3, 8, 5
    codes = catalog(L=L, N=N, seed=9)
    index = ItemIndex.from_codes(codes, num_codes=N, allow_collisions=True)
    offsets = [BASE_VOCAB + level * N for level in range(L)]
    config = transformers.LlamaConfig(vocab_size=BASE_VOCAB + L * N, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None, attention_bias=True,
                                      rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 50.0})
    torch.manual_seed(9)
    model = transformers.LlamaForCausalLM(config).eval()
    prompts = [[5, 9, 11, 3, 7, 8], [4, 4, 20], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]]
    ids, mask = left_pad(prompts, PAD)
    proc = TrieLogitsProcessor(index, offsets, EOS, prompt_length=ids.shape[1], num_beams=K)
    hf_tokens, hf_scores = hf_generate_recommend(model, ids, mask, L, K, logits_processor=proc)
    _, scores, idents = LCRecDecoder(model, index, offsets).recommend(prompts, num_beams=K, return_identifiers=True)
    assert torch.equal(idents, tokens_to_identifiers(hf_tokens, index, offsets))
    torch.testing.assert_close(scores, hf_scores.float(), atol=1e-5, rtol=1e-5)


def _recorded_steps(decoder, prompts, K):
    """Run a search with ``decoder`` and return [(prefix, parent, log_probs)] of every step (EOS step included)."""
    from letter_fast.genrec import constrained_beam_search

    ids, mask = left_pad(prompts, PAD)
    step_fn = decoder.start(ids, mask)
    seen = []

    def recording(prefix, parent):
        out = step_fn(prefix, parent)
        seen.append((prefix.clone(), None if parent is None else parent.clone(), out.clone()))
        return out

    _, _, idents = constrained_beam_search(recording, len(prompts), K, decoder.index, return_identifiers=True)
    prefix, parent, _ = seen[-1]
    codes = decoder.index.codes_of_identifier(idents.clamp(min=0).reshape(-1)).reshape(-1, prefix.shape[1] + 1)
    seen.append((codes, torch.arange(codes.shape[0]), step_fn(codes, torch.arange(codes.shape[0]))))
    return seen


@pytest.mark.parametrize("family,bias", [("llama", False), ("llama", True), ("qwen2", True)])
def test_fused_weights_equal_module_calls(family, bias):
    """Every step's log-probabilities on the fused weight copies (q/k/v and gate/up concatenated, biases included)
    equal the module-call path's on the same prefixes and parents, the full-vocabulary EOS step too."""
    L, N, K = 3, 8, 6
    codes, index, offsets, model, prompts = setup(family, L, N, seed=11)
    if bias:              # Llama with attention and MLP biases (Qwen2 has q/k/v biases of its own)
        config = model.config
        if family == "llama":
            config.attention_bias = config.mlp_bias = True
            torch.manual_seed(11)
            model = transformers.LlamaForCausalLM(config).eval()
    fused = LCRecDecoder(model, index, offsets, eos_token_id=EOS)
    assert fused._fused is not None
    plain = LCRecDecoder(model, index, offsets, eos_token_id=EOS, fused=False)
    assert plain._fused is None
    ids, mask = left_pad(prompts, PAD)
    plain_step = plain.start(ids, mask)
    steps = _recorded_steps(fused, prompts, K)
    assert len(steps) == L + 1
    for prefix, parent, out in steps:
        torch.testing.assert_close(plain_step(prefix, parent), out, atol=1e-5, rtol=1e-5)


def test_fused_bfloat16_matmuls_give_valid_close_recommendations():
    L, N, K = 3, 8, 5
    codes, index, offsets, model, prompts = setup("llama", L, N, seed=4)
    exact = LCRecDecoder(model, index, offsets)
    half = LCRecDecoder(model, index, offsets, dtype=torch.bfloat16)
    assert half._fused["layers"][0]["w_qkv"].dtype == torch.bfloat16
    items, scores, idents = half.recommend(prompts, num_beams=K, return_identifiers=True)
    _, scores32 = exact.recommend(prompts, num_beams=K)
    assert (items >= 0).all()
    assert torch.equal(index.identifier_of_items(items.reshape(-1)).reshape(items.shape), idents)
    torch.testing.assert_close(scores, scores32, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="mode='shared'"):
        LCRecDecoder(model, index, offsets, mode="hf", dtype=torch.bfloat16)
