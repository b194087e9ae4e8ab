"""Collation: right-padded training batches with labels from token counts, left-padded prompts."""

import pytest
import torch

from letter_fast.genrec.lcrec.collate import (
    IGNORE_INDEX,
    PromptCollator,
    TrainCollator,
    collate_train,
    tokenize_examples,
)
from letter_fast.genrec.lcrec.examples import build_examples
from letter_fast.genrec.lcrec.testing import tiny_codes, tiny_dataset, tiny_tokenizer
from letter_fast.genrec.lcrec.tokens import add_code_tokens


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    data = tiny_dataset()
    codes = tiny_codes(data.num_items)
    add_code_tokens(tok, codes=codes, num_codes=8)
    ex = build_examples(data, codes, "train", ["seqrec", "index2item"], seed=0)
    return tok, ex


def test_response_scope_labels_only_response_and_eos(setup):
    tok, ex = setup
    batch = TrainCollator(tok)(ex[:5])
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos  # pad == eos: labels must not be derived from the pad id
    for i in range(5):
        prompt = tok(ex.prompt[i]).input_ids
        full = tok(ex.prompt[i] + ex.response[i]).input_ids + [eos]
        n = len(full)
        assert batch["input_ids"][i, :n].tolist() == full
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        lab = batch["labels"][i]
        assert (lab[: len(prompt)] == IGNORE_INDEX).all() and (lab[n:] == IGNORE_INDEX).all()
        assert lab[len(prompt):n].tolist() == full[len(prompt):] and lab[n - 1] == eos


def test_sequence_and_letter_scopes(setup):
    tok, ex = setup
    seq = TrainCollator(tok, loss_scope="sequence")(ex[:4])
    let = TrainCollator(tok, loss_scope="letter")(ex[:4])
    mask = seq["attention_mask"].bool()
    assert torch.equal(seq["labels"][mask], seq["input_ids"][mask]) and (seq["labels"][~mask] == IGNORE_INDEX).all()
    assert torch.equal(let["labels"], let["input_ids"])  # padding labelled too: the authors' behaviour
    with pytest.raises(ValueError, match="loss_scope"):
        TrainCollator(tok, loss_scope="all")


def test_a_response_that_merges_with_the_prompt_keeps_the_prompt_tokens():
    """"Respon" + "se" merges across the boundary (as "### Response:" + "." of an index2item title can): the
    example is the prompt's own tokens, then the response's, so the labels are the response's tokens exactly."""
    tok = tiny_tokenizer()
    prompt, response = "### Respon", "se: beaker"
    assert tok(prompt + response).input_ids[: len(tok(prompt).input_ids)] != tok(prompt).input_ids
    out = tokenize_examples(tok, [prompt, "### Response:"], [response, " beaker"])
    p, r = tok(prompt).input_ids, tok(response, add_special_tokens=False).input_ids
    assert out.input_ids[0] == p + r + [tok.eos_token_id] and out.prompt_lengths[0] == len(p)
    # a clean boundary is tokenized jointly, as before
    assert out.input_ids[1] == tok("### Response: beaker").input_ids + [tok.eos_token_id]
    labels = collate_train(out.input_ids, out.prompt_lengths, tok.pad_token_id)["labels"]
    assert labels[0, len(p):len(p) + len(r)].tolist() == r


def test_prompt_collator_left_pads(setup):
    tok, ex = setup
    batch = PromptCollator(tok)(ex[:3])
    T = batch["input_ids"].shape[1]
    for i in range(3):
        ids = tok(ex.prompt[i]).input_ids
        assert batch["input_ids"][i, T - len(ids):].tolist() == ids
        assert batch["attention_mask"][i].tolist() == [0] * (T - len(ids)) + [1] * len(ids)


def test_collate_train_from_pretokenized():
    out = collate_train([[5, 6, 7], [8]], [2, 0], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["labels"].tolist() == [[-100, -100, 7], [8, -100, -100]]
