"""letter-fast tokenize / inspect."""

import json

import torch

from letter_fast.cli import main
from letter_fast.config import load_settings
from letter_fast.data import make_synthetic_catalog
from letter_fast.data.formats import read_index_json
from letter_fast.io import save_tensor
from letter_fast.tokenizer.config import TokenizeConfig

FAST = ["--epochs", "3", "--hidden-dims", "32", "--latent-dim", "8", "--num-levels", "3", "--codebook-size", "16",
        "--diversity-clusters", "2", "--diversity-min-size", "4", "--diversity-max-size", "12", "--batch-size", "128",
        "--no-progress"]


def test_tokenize_and_inspect_a_data_folder(tmp_path, capsys):
    catalog = make_synthetic_catalog(num_items=200, num_users=300, dim=24, cf_dim=8, seed=1)
    folder = catalog.save(tmp_path / "data")
    save_tensor(catalog.embeddings["semantic"], tmp_path / "sem.npy")
    save_tensor(catalog.embeddings["cf_planted"], tmp_path / "cf.pt")
    out = tmp_path / "tok"
    assert main(["tokenize", str(folder), "--embeddings", str(tmp_path / "sem.npy"), "--cf", str(tmp_path / "cf.pt"),
                 "--out-dir", str(out), *FAST]) == 0
    codes = read_index_json(out / "Synthetic.index.json")
    assert codes.shape == (200, 3) and torch.unique(codes, dim=0).shape[0] == 200
    saved = load_settings(TokenizeConfig, out)  # settings.toml: every setting of the run, read back
    assert (saved.epochs, saved.hidden_dims, saved.codebook_size, saved.progress) == (3, (32,), 16, False)
    capsys.readouterr()
    assert main(["inspect", str(out / "Synthetic.index.json"), "--cf", str(tmp_path / "cf.pt"), "--codebook-size", "16",
                 "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "collision rate 0.0000%" in text and "CF-nearest pairs" in text
    assert json.loads((tmp_path / "r.json").read_text())["items"] == 200
    assert (tmp_path / "p.png").stat().st_size > 0


def test_tokenize_errors_are_one_line(tmp_path, capsys):
    catalog = make_synthetic_catalog(num_items=64, num_users=60, dim=8, seed=2)
    folder = catalog.save(tmp_path / "data")
    save_tensor(torch.randn(40, 8), tmp_path / "short.npy")
    cases = [
        (["tokenize"], "give a data set"),
        (["tokenize", str(folder)], "--embeddings is required"),
        (["tokenize", str(folder), "--embeddings", str(tmp_path / "nope.npy")], "not found"),
        (["tokenize", str(folder), "--embeddings", str(tmp_path / "short.npy"), "--variant", "rqvae"], "40"),
        (["tokenize", str(folder), "--embeddings", str(tmp_path / "short.npy")], None),
        (["tokenize", "--synthetic", "--variant", "best"], "variant must be one of"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        if expected:
            assert expected in err, (argv, err)


def test_tokenize_takes_the_reference_chain_and_init_flags(tmp_path, capsys):
    """--codebook-init / --residual-chain reach the model, settings.toml and best.pt; --print-config writes them and
    --config reads them back; an unknown value is a one-line error."""
    from letter_fast.tokenizer.train import load_tokenizer

    catalog = make_synthetic_catalog(num_items=200, num_users=300, dim=24, cf_dim=8, seed=1)
    folder = catalog.save(tmp_path / "data")
    save_tensor(catalog.embeddings["semantic"], tmp_path / "sem.npy")
    save_tensor(catalog.embeddings["cf_planted"], tmp_path / "cf.pt")
    flags = ["--codebook-init", "constrained-kmeans", "--residual-chain", "straight-through"]
    base = ["tokenize", str(folder), "--embeddings", str(tmp_path / "sem.npy"), "--cf", str(tmp_path / "cf.pt")]
    assert main([*base, *FAST, *flags, "--print-config"]) == 0
    (tmp_path / "c.toml").write_text(capsys.readouterr().out)
    out = tmp_path / "tok"
    assert main([*base, "--config", str(tmp_path / "c.toml"), "--out-dir", str(out)]) == 0
    saved = load_settings(TokenizeConfig, out)
    assert (saved.codebook_init, saved.residual_chain, saved.epochs) == ("constrained-kmeans", "straight-through", 3)
    model = load_tokenizer(out / "best.pt")
    assert (model.codebook_init, model.residual_chain) == ("constrained-kmeans", "straight-through")
    capsys.readouterr()
    assert main([*base, *FAST, "--residual-chain", "detached", "--out-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "residual_chain must be one of" in err
