"""The tokenizer's learning curve (curve.csv): its rows, their meaning, and resume giving the same file."""

import math

import pytest
import torch

from letter_fast.data import make_synthetic_catalog
from letter_fast.tokenizer.curve import curve_columns, read_curve
from letter_fast.tokenizer.diagnostics import cf_neighbour_code_similarity, gini, level_usage
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.train import TokenizerTrainConfig, load_tokenizer, train_tokenizer

SMALL = dict(hidden_dims=(32,), latent_dim=8, num_levels=3, codebook_size=16, alpha=0.05, beta=1e-3,
             diversity_clusters=4, diversity_cluster_sizes=(2, 8))


def small_model():
    torch.manual_seed(0)
    return LetterTokenizer(input_dim=32, **SMALL)


@pytest.fixture(scope="module")
def catalog():
    c = make_synthetic_catalog(num_items=300, num_users=400, dim=32, cf_dim=8, seed=5)
    return c.embeddings["semantic"], c.embeddings["cf_planted"]


def config(**kw):
    return TokenizerTrainConfig(**{**dict(epochs=6, batch_size=128, eval_every=3, checkpoint_every=2, curve_every=2,
                                          progress=False), **kw})


def test_curve_rows_are_the_identifiers_measures(catalog, tmp_path):
    s, cf = catalog
    summary = train_tokenizer(small_model(), s, cf, config(eval_every=6), tmp_path)
    rows = read_curve(tmp_path / "curve.csv")
    assert (tmp_path / "curve.csv").read_text().splitlines()[0] == ",".join(curve_columns(3))
    assert [r["epoch"] for r in rows] == [0, 2, 4, 6]
    assert all(rows[0][c] is None for c in ("loss", "recon", "rq", "cf", "diversity"))  # the k-means start
    assert rows[0]["codes_used_1"] > 0 and rows[0]["cf_pair_code_similarity"] is not None
    history = {rec["epoch"]: rec for rec in summary["history"]}
    for row in rows[1:]:  # the loss columns are the epoch's training means
        rec = history[row["epoch"]]
        assert (row["loss"], row["recon"], row["rq"], row["cf"], row["diversity"]) == (
            rec["loss"], rec["recon"], rec["codebook"], rec["cf"], rec["diversity"])
    # the last row measures the final model's nearest-code identifiers, as the diagnostics do
    codes, _ = load_tokenizer(tmp_path / "tokenizer.ckpt").eval().encode_items(s)
    last = rows[-1]
    assert last["collision_rate_before"] == history[6]["collision_rate"]
    usage = level_usage(codes, 16)
    for level in range(3):
        assert last[f"codes_used_{level + 1}"] == usage[level]["codes_used"]
        # normalized entropy * log2 N = bits (the normalized one divides by a float32 log N)
        assert math.isclose(last[f"entropy_bits_{level + 1}"], usage[level]["entropy"] * 4, rel_tol=1e-6)
    assert last["first_level_gini"] == gini(torch.bincount(codes[:, 0], minlength=16))
    assert last["cf_pair_code_similarity"] == cf_neighbour_code_similarity(codes, cf)


def test_curve_without_cf_and_off(catalog, tmp_path):
    s, _ = catalog
    model = LetterTokenizer(input_dim=32, **{**SMALL, "alpha": 0.0})
    train_tokenizer(model, s, None, config(epochs=2), tmp_path / "nocf")
    start, row = read_curve(tmp_path / "nocf" / "curve.csv")
    assert start["epoch"] == 0 and row["epoch"] == 2
    assert row["cf_pair_code_similarity"] is None and row["cf"] == 0.0
    train_tokenizer(small_model(), s, catalog[1], config(epochs=2, curve_every=0), tmp_path / "off")
    assert not (tmp_path / "off" / "curve.csv").exists()
    with pytest.raises(ValueError, match="curve_every must be >= 0"):
        train_tokenizer(small_model(), s, catalog[1], config(curve_every=-1), tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="curve_every"):
        read_curve(tmp_path / "off" / "curve.csv")


def test_resumed_run_ends_with_the_same_curve(catalog, tmp_path):
    s, cf = catalog
    train_tokenizer(small_model(), s, cf, config(), tmp_path / "full")
    # stopped after epoch 3 (checkpoint at 3, the end of that run); a row past it that a killed run could have
    # left behind is dropped when the run continues
    train_tokenizer(small_model(), s, cf, config(epochs=3), tmp_path / "resumed")
    with open(tmp_path / "resumed" / "curve.csv", "a") as f:
        f.write("4,1,1,1,0,0,0,0,1,0,0,0,0,0,0\n")
    train_tokenizer(small_model(), s, cf, config(), tmp_path / "resumed")
    assert (tmp_path / "resumed" / "curve.csv").read_bytes() == (tmp_path / "full" / "curve.csv").read_bytes()
    # the curve does not change the training: the model is the one trained without it
    train_tokenizer(small_model(), s, cf, config(curve_every=0), tmp_path / "off")
    a = load_tokenizer(tmp_path / "full" / "tokenizer.ckpt").state_dict()
    b = load_tokenizer(tmp_path / "off" / "tokenizer.ckpt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_before_curve_and_cf_gradient_resumes(catalog, tmp_path):
    """A checkpoint whose settings lack curve_every and cf_gradient (written before they existed) continues with
    their old behaviour (no curve, gradient to encoder and codebooks); other values refuse it."""
    from letter_fast.training import CheckpointError, load_checkpoint, save_checkpoint

    s, cf = catalog

    def old_model(**changes):   # what such a checkpoint trained: the gradient to encoder and codebooks
        torch.manual_seed(0)
        return LetterTokenizer(input_dim=32, **{**SMALL, "cf_gradient": "encoder+codebooks", **changes})

    train_tokenizer(old_model(), s, cf, config(epochs=2, curve_every=0), tmp_path)
    path = tmp_path / "tokenizer.ckpt"
    state = load_checkpoint(path, "tokenizer.checkpoint", 1)
    del state["settings"]["train"]["curve_every"], state["settings"]["model"]["cf_gradient"], state["curve"]
    del state["settings"]["model"]["codebook_init"], state["settings"]["model"]["residual_chain"]
    save_checkpoint(path, "tokenizer.checkpoint", 1, {k: v for k, v in state.items() if k not in ("format", "version")})
    assert train_tokenizer(old_model(), s, cf, config(epochs=4, curve_every=0), tmp_path)["history"][-1][
        "epoch"] == 4
    state = load_checkpoint(path, "tokenizer.checkpoint", 1)
    del state["settings"]["model"]["cf_gradient"]
    save_checkpoint(path, "tokenizer.checkpoint", 1, {k: v for k, v in state.items() if k not in ("format", "version")})
    model = LetterTokenizer(input_dim=32, **{**SMALL, "cf_gradient": "encoder"})
    with pytest.raises(CheckpointError, match="other settings"):
        train_tokenizer(model, s, cf, config(epochs=6, curve_every=0), tmp_path)
    # the same for codebook_init and residual_chain (added later): absent = kmeans and the stopped chain
    for key, old, new in (("codebook_init", "kmeans", "constrained-kmeans"),
                          ("residual_chain", "stopped", "straight-through")):
        state = load_checkpoint(path, "tokenizer.checkpoint", 1)
        state["settings"]["model"].pop("cf_gradient", None)
        del state["settings"]["model"][key]
        save_checkpoint(path, "tokenizer.checkpoint", 1,
                        {k: v for k, v in state.items() if k not in ("format", "version")})
        with pytest.raises(CheckpointError, match="other settings"):
            train_tokenizer(old_model(**{key: new}), s, cf,
                            config(epochs=6, curve_every=0), tmp_path)
        assert getattr(load_tokenizer(path), key) == old                     # loads with the old behaviour
    assert train_tokenizer(old_model(), s, cf, config(epochs=6, curve_every=0), tmp_path)["history"][-1][
        "epoch"] == 6
