"""SASRec: causality, padding, the loss written out, learning planted structure, exact resume, config, CLI."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from letter_fast.cf import SASRec, SASRecConfig, evaluate_ranking, train_sasrec
from letter_fast.cli import main as cli_main
from letter_fast.config import config_from_mapping
from letter_fast.data import PAD, leave_one_out, make_synthetic_catalog
from letter_fast.data.embeddings import load_item_embeddings
from letter_fast.io import load_tensor
from tests.data.real import data_folder

torch.set_num_threads(1)


def small_model(V=50, **kw):
    torch.manual_seed(0)
    return SASRec(V, dim=16, num_blocks=2, num_heads=2, dropout=0.0, max_len=8, **kw).eval()


def test_causal_and_padding():
    m = small_model()
    h = torch.tensor([[PAD, PAD, 3, 4, 5, 6, 7, 8]])
    changed = h.clone()
    changed[0, -1] = 9
    a, b = m(h), m(changed)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6), "a later item changed earlier states"
    assert not torch.allclose(a[:, -1], b[:, -1])
    # shorter inputs are left-padded, longer ones cut to the last max_len items: same scores
    assert torch.allclose(m.score_next(h[:, 2:]), m.score_next(h), atol=1e-6)
    longer = torch.cat([torch.tensor([[11, 12, 13]]), h[:, 2:]], 1)
    longer = torch.cat([torch.tensor([[1, 2]]), longer], 1)  # 11 items: the first 3 fall off
    assert torch.allclose(m.score_next(longer), m.score_next(longer[:, -8:]), atol=1e-6)
    # padded rows do not leak: the same real items give the same last state whatever the batch
    assert torch.isfinite(m(torch.full((2, 8), PAD))).all()


def test_loss_written_out():
    m = small_model()
    inputs = torch.tensor([[PAD, PAD, PAD, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13]])
    targets = torch.tensor([[PAD, PAD, PAD, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14]])
    loss = m.bce_loss(inputs, targets, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    offset = torch.randint(1, 50, targets.shape, generator=g)
    neg = (targets.clamp(min=0) + offset) % 50
    states = m(inputs)
    e = m.item_embeddings()
    valid = targets != PAD
    pos_logit = (states * e[targets.clamp(min=0)]).sum(-1)
    neg_logit = (states * e[neg]).sum(-1)
    expected = -(torch.log(torch.sigmoid(pos_logit)) + torch.log(1 - torch.sigmoid(neg_logit)))[valid].mean()
    assert torch.allclose(loss, expected, atol=1e-5), (float(loss), float(expected))
    assert bool((neg != targets.clamp(min=0)).all())


def test_ce_loss_written_out():
    m = small_model()
    inputs = torch.tensor([[PAD, PAD, PAD, 1, 2, 3, 4, 5]])
    targets = torch.tensor([[PAD, PAD, PAD, 2, 3, 4, 5, 6]])
    logits = m(inputs)[0, 3:] @ m.item_embeddings().T
    expected = -torch.log_softmax(logits, -1)[torch.arange(5), targets[0, 3:]].mean()
    assert torch.allclose(m.ce_loss(inputs, targets), expected, atol=1e-5)


def test_evaluate_ranking_uses_full_ranking():
    m = small_model(V=20)
    split = leave_one_out([[1, 2, 3, 4, 5], [6, 7, 8, 9]], 20, max_history=8)
    metrics = evaluate_ranking(m, split.test)
    scores = m.score_next(split.test.history)
    ranks = (scores > scores.gather(1, split.test.target[:, None])).sum(1)
    assert metrics["recall@10"] == pytest.approx(float((ranks < 10).float().mean()))


@pytest.fixture(scope="module")
def catalog():
    return make_synthetic_catalog(num_items=200, num_users=800, num_semantic_clusters=4, num_collab_groups=5,
                                  max_length=12, seed=2)


def quick_config(**kw):
    base = dict(dim=16, num_blocks=1, num_heads=1, dropout=0.1, max_len=12, batch_size=64, epochs=12, patience=20,
                lr=5e-3, seed=0)
    base.update(kw)
    return SASRecConfig(**base)


def test_learns_the_planted_structure(catalog):
    result = train_sasrec(catalog.histories, catalog.num_items, quick_config(), progress=False, log_fn=lambda s: None)
    # random full ranking over 200 items: Recall@10 = 0.05
    assert result.test_metrics["recall@10"] > 0.25, result.test_metrics
    assert result.embeddings.shape == (200, 16) and result.embeddings.dtype == torch.float32
    # items' nearest neighbours (cosine) share the planted collab group far above chance (1/5)
    e = F.normalize(result.embeddings, dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-2)
    group = catalog.labels["collab_group"]
    same = float((group[sim.argmax(1)] == group).float().mean())
    assert same > 0.6, same


def test_ce_training_learns(catalog):
    result = train_sasrec(catalog.histories, catalog.num_items, quick_config(loss="ce", epochs=6), progress=False,
                          log_fn=lambda s: None)
    assert result.test_metrics["recall@10"] > 0.25, result.test_metrics


def test_resume_is_exact(catalog, tmp_path):
    cfg = quick_config(epochs=4, checkpoint_every=1)
    full = train_sasrec(catalog.histories, catalog.num_items, cfg, progress=False, log_fn=lambda s: None)
    ckpt = tmp_path / "ck.pt"
    train_sasrec(catalog.histories, catalog.num_items, dataclasses.replace(cfg, epochs=2), checkpoint=ckpt,
                 progress=False, log_fn=lambda s: None)
    resumed = train_sasrec(catalog.histories, catalog.num_items, cfg, checkpoint=ckpt, progress=False,
                           log_fn=lambda s: None)
    assert resumed.epochs_run == 4
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in full.log]
    assert torch.equal(resumed.embeddings, full.embeddings)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        train_sasrec(catalog.histories, catalog.num_items, cfg, checkpoint=broken, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train_sasrec(catalog.histories, catalog.num_items, dataclasses.replace(cfg, dim=8), checkpoint=ckpt,
                     progress=False, log_fn=lambda s: None)




def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'dimm'"):
        config_from_mapping(SASRecConfig, {"dimm": 3}, "x.toml")
    with pytest.raises(ValueError, match="key 'dim': expected int"):
        config_from_mapping(SASRecConfig, {"dim": "big"}, "x.toml")
    with pytest.raises(ValueError, match="num_heads"):
        SASRecConfig(dim=10, num_heads=3).check()


def test_cli(catalog, tmp_path, capsys):
    folder = catalog.save(tmp_path / "syn")
    cfg = tmp_path / "c.toml"
    cfg.write_text("dim = 8\nepochs = 3\nbatch_size = 128\n")
    out = tmp_path / "out"
    rc = cli_main(["train-cf", str(folder), "--config", str(cfg), "--epochs", "2", "--out-dir", str(out),
                   "--no-progress"])
    assert rc == 0
    emb = load_tensor(out / "Synthetic.sasrec-emb8.pt")
    assert emb.shape == (200, 8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["config"]["dim"] == 8 and "ndcg@10" in metrics["test"]
    assert (out / "sasrec.ckpt.pt").exists()
    # a user-supplied file of the wrong size: one clear line, exit 2
    bad = tmp_path / "bad.pt"
    torch.save(torch.zeros(7, 8), bad)
    capsys.readouterr()
    assert cli_main(["train-cf", str(folder), "--use-file", str(bad), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "7 rows" in err and "200 items" in err
    assert cli_main(["train-cf", str(tmp_path / "nope"), "--out-dir", str(out)]) == 2
    assert "data set not found" in capsys.readouterr().err
    assert cli_main(["train-cf", str(folder), "--dim", "x"]) == 2
    assert "expected int" in capsys.readouterr().err


def test_user_supplied_embeddings(tmp_path):
    t = torch.randn(5, 4)
    torch.save(t, tmp_path / "e.pt")
    assert torch.equal(load_item_embeddings(tmp_path / "e.pt", 5, dim=4), t)
    with pytest.raises(ValueError, match="expected 3"):
        load_item_embeddings(tmp_path / "e.pt", 5, dim=3)
    t[2, 1] = float("nan")
    torch.save(t, tmp_path / "n.pt")
    with pytest.raises(ValueError, match="row 2"):
        load_item_embeddings(tmp_path / "n.pt", 5)
    torch.save({"x": 1}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="could not read|holds a dict"):
        load_item_embeddings(tmp_path / "d.pt", 5)


def test_released_instruments_embeddings():
    emb = load_item_embeddings(data_folder("instruments") / "Instruments.sasrec-emb32.pt", 9922, dim=32)
    assert emb.shape == (9922, 32)
