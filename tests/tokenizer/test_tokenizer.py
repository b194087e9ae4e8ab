"""LetterTokenizer: losses, variants, diversity sampling, training, resume, collision-free output."""

import json

import pytest
import torch

from letter_fast.data import make_synthetic_catalog
from letter_fast.data.formats import read_index_json
from letter_fast.tokenizer.collisions import collision_rate
from letter_fast.tokenizer.diagnostics import cf_neighbour_code_similarity
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.pipeline import tokenize_items
from letter_fast.tokenizer.train import TokenizerTrainConfig, load_tokenizer, train_tokenizer
from letter_fast.training import CheckpointError, load_checkpoint

SMALL = dict(hidden_dims=(64, 32), latent_dim=8, num_levels=3, codebook_size=32,
             diversity_clusters=4, diversity_cluster_sizes=(4, 16))


def small_model(**overrides):
    torch.manual_seed(0)
    return LetterTokenizer(input_dim=64, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def catalog():
    return make_synthetic_catalog(num_items=512, num_users=1024, dim=64, cf_dim=8, seed=3)  # cf_dim = latent_dim


def test_loss_terms_and_variants(catalog):
    s, cf = catalog.embeddings["semantic"][:200], catalog.embeddings["cf_planted"][:200]
    plain = small_model(alpha=0.0, beta=0.0)
    plain.init_codebooks(s)
    out = plain(s)  # no CF embeddings needed for the plain RQ-VAE
    assert out["cf"] == 0 and out["diversity"] == 0 and out["codes"].shape == (200, 3)
    full = small_model(alpha=0.1, beta=0.01)
    full.init_codebooks(s)
    full.refresh_code_clusters()
    out = full(s, cf)
    assert out["cf"] > 0 and out["diversity"] > 0 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="needs the batch's CF embeddings"):
        full(s)
    with pytest.raises(RuntimeError, match="not initialized"):
        small_model()(s)


def test_cf_loss_reaches_the_codebooks_with_encoder_plus_codebooks(catalog):
    s, cf = catalog.embeddings["semantic"][:128], catalog.embeddings["cf_planted"][:128]
    grads = []
    for alpha in (0.0, 1.0):
        m = small_model(alpha=alpha, beta=0.0, sinkhorn_last_level=False, cf_gradient="encoder+codebooks")
        m.init_codebooks(s)
        m(s, cf)["loss"].backward()
        grads.append(m.codebooks.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_commitment_acts_on_every_level(catalog):
    s = catalog.embeddings["semantic"][:64]
    m = small_model(alpha=0.0, beta=0.0)
    m.init_codebooks(s)
    m(s)["loss"].backward()
    assert (m.codebooks.grad.abs().sum(dim=(1, 2)) > 0).all()  # each level's codebook is trained


def test_same_cluster_sampling():
    m = small_model(beta=0.01)
    m.codebooks.data.normal_()
    m.refresh_code_clusters()
    codes = torch.randint(0, 32, (5000, 3))
    g = torch.Generator().manual_seed(1)
    pos = m.sample_same_cluster_codes(codes, g)
    levels = torch.arange(3).expand_as(codes)
    assert torch.equal(m.code_clusters[levels, pos], m.code_clusters[levels, codes])
    assert (pos != codes).all()  # every cluster has >= 4 members, so a different code exists
    # uniform over the other members: every member of code 0's cluster shows up
    members = (m.code_clusters[0] == m.code_clusters[0, 0]).nonzero().squeeze(1).tolist()
    drawn = set(m.sample_same_cluster_codes(torch.zeros(4000, 3, dtype=torch.long), g)[:, 0].tolist())
    assert drawn == set(members) - {0}


@pytest.mark.parametrize("batch", [7, 32, 300])  # 7 < N: the per-item kernel; else the Gram form
def test_diversity_loss_equals_per_item_contrastive(batch):
    from letter_fast.ops import codebook_diversity_loss, residual_code_embeddings

    m = small_model(beta=0.01)
    m.codebooks.data.normal_()
    m.refresh_code_clusters()
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 32, (batch, 3), generator=g)
    positives = m.sample_same_cluster_codes(codes, g)
    got = m.diversity_loss(codes, positives)
    (got_grad,) = torch.autograd.grad(got, m.codebooks)
    e = residual_code_embeddings(codes, m.codebooks)
    want = torch.stack([codebook_diversity_loss(e[:, level], m.codebooks[level], codes[:, level], positives[:, level],
                                                backend="reference") for level in range(3)]).mean()
    (want_grad,) = torch.autograd.grad(want, m.codebooks)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


def test_bf16_mlp_keeps_quantization_and_losses_float32(catalog):
    s, cf = catalog.embeddings["semantic"][:128], catalog.embeddings["cf_planted"][:128]
    fp32, bf16 = small_model(alpha=0.1, beta=0.01), small_model(alpha=0.1, beta=0.01, mlp_precision="bf16")
    for m in (fp32, bf16):
        m.init_codebooks(s)
        m.refresh_code_clusters()
    out = bf16(s, cf)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in bf16.parameters())
    # same weights, bfloat16 matmuls: the loss moves by bfloat16 rounding, not more
    assert out["recon"] == pytest.approx(float(fp32(s, cf)["recon"]), rel=0.05)
    assert LetterTokenizer(**bf16.settings()).mlp_precision == "bf16"
    with pytest.raises(ValueError, match="mlp_precision"):
        small_model(mlp_precision="fp16")


def test_invalid_cluster_settings():
    with pytest.raises(ValueError, match="cannot form 10 clusters"):
        LetterTokenizer(input_dim=8, codebook_size=32, beta=0.1)


def test_training_resume_and_selection(catalog, tmp_path):
    s, cf = catalog.embeddings["semantic"], catalog.embeddings["cf_planted"]
    cfg = TokenizerTrainConfig(epochs=6, batch_size=256, eval_every=2, checkpoint_every=3, progress=False)
    full = train_tokenizer(small_model(alpha=0.05, beta=1e-3), s, cf, cfg, tmp_path / "a")
    assert full["history"][-1]["loss"] < full["history"][0]["loss"]
    assert (tmp_path / "a" / "best.pt").exists()
    # an interrupted run (3 epochs) resumed to 6 ends in the same state as the uninterrupted one
    short = TokenizerTrainConfig(**{**cfg.__dict__, "epochs": 3})
    train_tokenizer(small_model(alpha=0.05, beta=1e-3), s, cf, short, tmp_path / "b")
    resumed = train_tokenizer(small_model(alpha=0.05, beta=1e-3), s, cf, cfg, tmp_path / "b")
    # (the short run also evaluated collisions at its last epoch, 3: compare the training losses)
    def losses(history):
        return [{k: v for k, v in rec.items() if k != "collision_rate"} for rec in history]

    assert losses(resumed["history"]) == losses(full["history"])
    a = load_checkpoint(tmp_path / "a" / "tokenizer.ckpt", "tokenizer.checkpoint", 1)["model"]
    b = load_checkpoint(tmp_path / "b" / "tokenizer.ckpt", "tokenizer.checkpoint", 1)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model = load_tokenizer(tmp_path / "a" / "best.pt")
    assert model.settings() == small_model(alpha=0.05, beta=1e-3).settings()
    # other model settings: no continuation of that checkpoint
    with pytest.raises(CheckpointError, match="other settings .*model"):
        train_tokenizer(small_model(alpha=0.5, beta=1e-3), s, cf, cfg, tmp_path / "b")
    with pytest.raises(CheckpointError, match="other settings .*lr"):
        train_tokenizer(small_model(alpha=0.05, beta=1e-3), s, cf, TokenizerTrainConfig(
            **{**cfg.__dict__, "lr": 0.1}), tmp_path / "b")
    # timings stay out of the files that must repeat
    assert "seconds_per_epoch" not in json.loads((tmp_path / "a" / "training.json").read_text())
    assert json.loads((tmp_path / "a" / "timing.json").read_text())["epochs_timed"] == 6


def test_pipeline_writes_collision_free_index(catalog, tmp_path):
    s = catalog.embeddings["semantic"].clone()
    s[1] = s[0]  # identical items: only re-assignment can separate them
    cfg = TokenizerTrainConfig(epochs=4, batch_size=256, eval_every=2, progress=False)
    report = tokenize_items(s, None, tmp_path, "Toy", dict(SMALL, alpha=0.0, beta=0.0), cfg)
    codes = read_index_json(tmp_path / "Toy.index.json")
    assert codes.shape == (512, 3) and collision_rate(codes) == 0.0
    assert torch.equal(codes, torch.load(tmp_path / "Toy.codes.pt"))
    assert report["collision_rate"] == 0.0 and report["collision_rate_before_reassignment"] > 0
    assert json.loads((tmp_path / "tokenizer_report.json").read_text())["items"] == 512
    assert (tmp_path / "first_level_codes.png").stat().st_size > 0


@pytest.mark.slow
def test_cf_regularizer_moves_identifiers_towards_collaborative_groups(catalog, tmp_path):
    """The planted CF groups are independent of the semantic clusters: with alpha > 0 the
    identifiers of CF-nearest items must agree more often than without (LETTER Table 4)."""
    s, cf = catalog.embeddings["semantic"], catalog.embeddings["cf_planted"]
    cfg = TokenizerTrainConfig(epochs=150, batch_size=256, eval_every=150, progress=False)
    similarity = {}
    for alpha in (0.0, 1.0):
        model = small_model(alpha=alpha, beta=0.0)
        train_tokenizer(model, s, cf, cfg, tmp_path / str(alpha), resume=False)
        codes, _ = model.encode_items(s)
        similarity[alpha] = cf_neighbour_code_similarity(codes, cf)
    assert similarity[1.0] > 1.5 * similarity[0.0], similarity


def test_forward_is_the_rqvae_letter_loss_written_out(catalog):
    """The tokenizer built from letter_fast.nn modules computes the loss of the module docstring: the
    same terms and gradients as the formula written out in plain PyTorch."""
    import torch.nn.functional as F

    s, cf = catalog.embeddings["semantic"][:128], catalog.embeddings["cf_planted"][:128]
    m = small_model(alpha=0.1, beta=0.01, sinkhorn_last_level=False, cf_gradient="encoder+codebooks")
    m.init_codebooks(s)
    m.refresh_code_clusters()
    out = m(s, cf, generator=torch.Generator().manual_seed(4))
    (grad,) = torch.autograd.grad(out["loss"], m.codebooks)
    codes = out["codes"]
    z = m.encoder(s)
    e = torch.stack([m.codebooks[level][codes[:, level]] for level in range(3)], dim=1)
    residuals = z[:, None] - (torch.cumsum(e.detach(), 1) - e.detach())
    codebook = F.mse_loss(e, residuals.detach()) + m.commitment * F.mse_loss(e.detach(), residuals)
    recon = F.mse_loss(m.decoder(z + (e.sum(1) - z).detach()), s)
    cf_loss = F.cross_entropy((e.sum(1) + z - z.detach()) @ cf.T, torch.arange(128))
    positives = m.sample_same_cluster_codes(codes, torch.Generator().manual_seed(4))
    div = torch.stack([
        F.cross_entropy((m.codebooks[level][codes[:, level]] @ m.codebooks[level].T).masked_fill(
            F.one_hot(codes[:, level], 32).bool(), float("-inf")), positives[:, level]) for level in range(3)
    ]).mean()
    want = {"recon": recon, "codebook": codebook, "cf": cf_loss, "diversity": div,
            "loss": recon + codebook + m.beta * div + m.alpha * cf_loss}
    for key, value in want.items():
        torch.testing.assert_close(out[key], value.detach(), rtol=1e-5, atol=1e-6, msg=key)
    (want_grad,) = torch.autograd.grad(want["loss"], m.codebooks)
    torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-7)


def test_checkpoint_with_top_level_codebook_keys_loads():
    """State dicts written before the codebooks moved into the quantizer submodule still load."""
    m = small_model()
    m.codebooks.data.normal_()
    m.initialized.fill_(True)
    old = {("codebooks" if k == "quantizer.codebooks" else "initialized" if k == "quantizer.initialized" else k): v
           for k, v in m.state_dict().items()}
    assert "codebooks" in old and "quantizer.codebooks" not in old
    fresh = small_model()
    fresh.load_state_dict(old)
    assert torch.equal(fresh.codebooks, m.codebooks) and bool(fresh.initialized)


# ------------------------------------------------------------------------ where the CF loss's gradient goes


def _cf_term(m, s, cf):
    """``(L_CF, z, z_hat, codes)`` of one batch, through the model's own pieces (as in forward)."""
    z = m.encoder(s)
    codes = m.quantize(z)
    _, _, _, all_codes = m.quantizer(z, codes=codes, return_all_codes=True)
    z_hat = all_codes.sum(dim=0)
    return m.cf_loss_fn(m.cf_input(z, z_hat), cf), z, z_hat, codes


def _cf_grad_by_hand(z_hat, cf):
    """dL_CF/dz_hat of L_CF = CE(z_hat @ cf^T, arange(B)): (softmax(z_hat cf^T) - I) cf / B."""
    B = z_hat.shape[0]
    p = torch.softmax(z_hat.detach().double() @ cf.double().T, dim=1)
    return ((p - torch.eye(B, dtype=torch.float64)) @ cf.double() / B).float()


@pytest.mark.parametrize("cf_gradient", ["encoder", "encoder+codebooks"])
def test_cf_gradient_reaches_what_the_setting_says(catalog, cf_gradient):
    s, cf = catalog.embeddings["semantic"][:128], catalog.embeddings["cf_planted"][:128]
    m = small_model(alpha=1.0, beta=0.0, sinkhorn_last_level=False, cf_gradient=cf_gradient)
    m.init_codebooks(s)
    loss, z, z_hat, codes = _cf_term(m, s, cf)
    encoder = list(m.encoder.parameters())
    grad_cb, *grad_enc = torch.autograd.grad(loss, [m.codebooks, *encoder], allow_unused=True, retain_graph=True)
    g = _cf_grad_by_hand(z_hat, cf)                                   # dL/dz_hat = dL/dz (straight through)
    want_enc = torch.autograd.grad(z, encoder, grad_outputs=g)
    for got, want in zip(grad_enc, want_enc):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    if cf_gradient == "encoder":
        assert grad_cb is None or not grad_cb.any()                   # exactly zero: no path to the codebooks
    else:  # every level's chosen code gets the gradient of the items that chose it
        want_cb = torch.zeros_like(m.codebooks)
        for level in range(m.num_levels):
            want_cb[level].index_add_(0, codes[:, level], g)
        torch.testing.assert_close(grad_cb, want_cb, rtol=1e-4, atol=1e-7)


def test_cf_gradient_encoder_leaves_the_codebooks_to_the_other_terms(catalog):
    """With cf_gradient="encoder" the full loss's codebook gradient is bit for bit the one without L_CF, the
    encoder's differs from it by alpha times the hand-computed CF gradient, and the loss values are the same
    bits as with "encoder+codebooks"."""
    s, cf = catalog.embeddings["semantic"][:128], catalog.embeddings["cf_planted"][:128]
    runs = {}
    for name, alpha, where in (("none", 0.0, "encoder"), ("encoder", 0.5, "encoder"),
                               ("both", 0.5, "encoder+codebooks")):
        m = small_model(alpha=alpha, beta=0.0, cf_gradient=where)   # Sinkhorn last level on, as in training
        m.init_codebooks(s)
        out = m(s, cf)
        out["loss"].backward()
        runs[name] = (m, out)
    (m0, out0), (m1, out1), (m2, out2) = runs["none"], runs["encoder"], runs["both"]
    assert torch.equal(out0["codes"], out1["codes"])
    assert torch.equal(m1.codebooks.grad, m0.codebooks.grad)
    assert not torch.equal(m2.codebooks.grad, m0.codebooks.grad)
    for key in ("loss", "recon", "codebook", "cf"):
        assert torch.equal(out1[key], out2[key]), key
    # encoder: alpha * dL_CF/dz pulled back through the encoder, on top of the alpha = 0 gradient
    z = m1.encoder(s)
    z_hat = m1.codebooks.detach()[torch.arange(3), out1["codes"]].sum(1)
    extra = torch.autograd.grad(z, list(m1.encoder.parameters()), grad_outputs=0.5 * _cf_grad_by_hand(z_hat, cf))
    for p0, p1, e in zip(m0.encoder.parameters(), m1.encoder.parameters(), extra):
        torch.testing.assert_close(p1.grad - p0.grad, e, rtol=1e-3, atol=1e-6)


def test_cf_gradient_setting_is_checked_and_saved():
    with pytest.raises(ValueError, match="cf_gradient must be one of"):
        small_model(cf_gradient="codebooks")
    from letter_fast.tokenizer.config import TokenizeConfig

    with pytest.raises(ValueError, match="cf_gradient must be one of"):
        TokenizeConfig(cf_gradient="decoder").check()
    m = small_model(cf_gradient="encoder")
    assert m.settings()["cf_gradient"] == "encoder"
    assert LetterTokenizer(input_dim=64, **{k: v for k, v in m.settings().items() if k != "input_dim"}
                           ).cf_gradient == "encoder"


def test_reference_chain_and_init_settings_are_checked_saved_and_used(catalog):
    """codebook_init and residual_chain: refused when unknown, saved in settings() (so in checkpoints), passed to
    the quantizer; the straight-through chain changes only the encoder's gradient, the constrained init only
    the start."""
    from letter_fast.nn.kmeans import constrained_kmeans, reference_cluster_sizes
    from letter_fast.tokenizer.config import TokenizeConfig

    for key, bad in (("codebook_init", "random"), ("residual_chain", "detached")):
        with pytest.raises(ValueError, match=f"{key} must be one of"):
            small_model(**{key: bad})
        with pytest.raises(ValueError, match=f"{key} must be one of"):
            TokenizeConfig(**{key: bad}).check()
    s = catalog.embeddings["semantic"][:256]
    models = {}
    for init, chain in (("kmeans", "stopped"), ("kmeans", "straight-through"), ("constrained-kmeans", "stopped")):
        m = small_model(alpha=0.0, beta=0.0, sinkhorn_last_level=False, codebook_init=init, residual_chain=chain)
        assert (m.settings()["codebook_init"], m.settings()["residual_chain"]) == (init, chain)
        assert (m.quantizer.codebook_init, m.quantizer.residual_chain) == (init, chain)
        rebuilt = LetterTokenizer(input_dim=64, **{k: v for k, v in m.settings().items() if k != "input_dim"})
        assert (rebuilt.codebook_init, rebuilt.residual_chain) == (init, chain)
        m.init_codebooks(s)
        out = m(s)
        out["loss"].backward()
        models[init, chain] = (m, out)
    (m0, out0), (m1, out1) = models["kmeans", "stopped"], models["kmeans", "straight-through"]
    assert torch.equal(m0.codebooks, m1.codebooks) and torch.equal(out0["codes"], out1["codes"])
    assert torch.equal(out0["loss"], out1["loss"])                            # same values
    assert torch.equal(m0.codebooks.grad, m1.codebooks.grad)                  # same codebook gradient
    assert not torch.allclose(m0.encoder[0].weight.grad, m1.encoder[0].weight.grad)
    # the start: the constrained k-means clusters (not the nearest codes, which can differ) hold at most hi items
    m2, _ = models["constrained-kmeans", "stopped"]
    lo, hi = reference_cluster_sizes(256, 32)                                  # (0, 8)
    z = m2.encoder(s).detach()
    _, labels = constrained_kmeans(z, 32, lo, hi, iters=25, seed=0, init_iters=0)
    torch.testing.assert_close(m2.codebooks[0], torch.zeros(32, 8).index_add_(0, labels, z)
                               / torch.bincount(labels, minlength=32).clamp_min(1)[:, None])
    nearest = [torch.bincount(m.encode_items(s)[0][:, 0], minlength=32) for m in (m0, m2)]
    assert nearest[1].max() < nearest[0].max()                                # more even than plain k-means
