"""Code tokens: contiguous ids (numeric order), the authors' order, single-token check, embedding init."""

import pytest
import torch

from letter_fast.genrec.lcrec.testing import tiny_causal_lm, tiny_codes, tiny_tokenizer
from letter_fast.genrec.lcrec.tokens import (
    CodeTokenError,
    CodeTokens,
    add_code_tokens,
    check_single_tokens,
    item_string,
    item_strings,
)


def test_numeric_order_is_offset_plus_code_and_items_encode_to_their_ids():
    tok = tiny_tokenizer()
    base = len(tok)
    codes = tiny_codes(num_items=12, num_levels=3, num_codes=8)
    ct = add_code_tokens(tok, codes=codes, num_codes=8)
    assert ct.offsets == (base, base + 8, base + 16) and ct.vocab_size == base + 24 == len(tok)
    assert ct.code_token_ids().tolist() == [base, base + 8, base + 16]
    for row in codes:
        ids = tok(item_string(row), add_special_tokens=False).input_ids
        assert ids == [base + 8 * lv + int(c) for lv, c in enumerate(row)] == ct.encode(row).tolist()
    assert torch.equal(ct.decode(ct.encode(codes)), codes)
    assert ct.token_ids == list(range(base, base + 24))


def test_per_level_code_counts():
    tok = tiny_tokenizer()
    ct = add_code_tokens(tok, num_levels=2, num_codes=[3, 5])
    assert ct.offsets == (400, 403) and ct.vocab_size == 408
    assert ct.table[0].tolist() == [400, 401, 402, -1, -1]


def test_authors_order_sorts_the_index_tokens_as_text():
    tok = tiny_tokenizer()
    codes = torch.tensor([[10, 2], [1, 2], [0, 11]])
    ct = add_code_tokens(tok, codes=codes, order="authors")
    assert ct.offsets is None
    # Python's text order: "<a_10>" < "<a_1>" because "0" < ">"
    assert ct.strings() == ["<a_0>", "<a_10>", "<a_1>", "<b_11>", "<b_2>"]
    assert ct.table[0, 10] == 401 and ct.table[0, 1] == 402 and ct.table[1, 2] == 404 and ct.table[1, 11] == 403
    assert int(ct.table[0, 5]) == -1
    table = ct.code_token_ids()
    assert table.min() >= 0
    for level in range(2):  # per level unique, real codes keep their ids
        assert table[level].unique().numel() == table.shape[1]
    assert table[0, 10] == 401
    with pytest.raises(CodeTokenError, match="does not hold"):
        ct.check_codes(torch.tensor([[5, 2]]))


def test_authors_table_drives_the_trie_processor():
    from letter_fast.genrec import ItemIndex
    from letter_fast.genrec.hf import TrieLogitsProcessor

    tok = tiny_tokenizer()
    codes = torch.tensor([[10, 2], [1, 2], [0, 11]])
    ct = add_code_tokens(tok, codes=codes, order="authors")
    proc = TrieLogitsProcessor(ItemIndex.from_codes(codes), ct.code_token_ids(), eos_token_id=tok.eos_token_id,
                               prompt_length=1)
    scores = torch.zeros(1, len(tok))
    out = proc(torch.tensor([[5]]), scores)
    allowed = out[0].isfinite().nonzero().flatten().tolist()
    assert allowed == sorted(ct.table[0, [0, 1, 10]].tolist())


def test_existing_token_gives_a_clear_error():
    tok = tiny_tokenizer()
    tok.add_tokens(["<a_3>"])
    with pytest.raises(CodeTokenError, match="already holds"):
        add_code_tokens(tok, num_levels=2, num_codes=4)


def test_codes_must_fit():
    tok = tiny_tokenizer()
    with pytest.raises(CodeTokenError, match="num_levels=2"):
        add_code_tokens(tok, num_levels=2, num_codes=4, codes=torch.zeros(3, 3, dtype=torch.long))
    ct = add_code_tokens(tok, num_levels=2, num_codes=4)
    with pytest.raises(CodeTokenError, match="3 levels"):
        ct.check_codes(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(CodeTokenError, match="code 4 at level 1"):
        ct.check_codes(torch.tensor([[0, 1], [1, 4]]))


def test_split_token_is_one_clear_error():
    tok = tiny_tokenizer()  # "<a_0>" was never added: byte-level BPE splits it
    with pytest.raises(CodeTokenError, match=r"<a_0> encodes to \d+ token ids"):
        check_single_tokens(tok, ["<a_0>"])


def test_item_strings():
    codes = torch.tensor([[12, 7], [0, 1]])
    assert item_strings(codes) == ["<a_12><b_7>", "<a_0><b_1>"] and item_string(codes[0]) == "<a_12><b_7>"


@pytest.mark.parametrize("tied", [True, False])
def test_embeddings_grow_with_mean_rows_and_tying_is_kept(tied):
    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", len(tok), tie_word_embeddings=tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    ct = add_code_tokens(tok, model, num_levels=2, num_codes=4)
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == ct.vocab_size == 408 and w_out.shape[0] == 408
    assert torch.equal(w_in[:400], old_in)
    assert torch.allclose(w_in[400:], old_in.mean(0).expand(8, -1))
    assert torch.allclose(w_out[400:], old_out.mean(0).expand(8, -1))
    assert (w_in.data_ptr() == w_out.data_ptr()) == tied


def test_normal_init_is_seeded():
    rows = []
    for _ in range(2):
        tok = tiny_tokenizer()
        model = tiny_causal_lm("qwen2", len(tok))
        add_code_tokens(tok, model, num_levels=2, num_codes=4, init="normal",
                        generator=torch.Generator().manual_seed(3))
        rows.append(model.get_input_embeddings().weight[400:].detach().clone())
    assert torch.equal(rows[0], rows[1]) and rows[0].std() > 0


def test_metadata_round_trip(tmp_path):
    tok = tiny_tokenizer()
    ct = add_code_tokens(tok, codes=torch.tensor([[3, 1], [0, 2]]), order="authors")
    ct.save(tmp_path)
    back = CodeTokens.load(tmp_path)
    assert torch.equal(back.table, ct.table) and back.order == "authors" and back.vocab_size == ct.vocab_size
    back.check_tokenizer(tok)
    with pytest.raises(CodeTokenError, match="expected"):
        back.check_tokenizer(tiny_tokenizer())
