"""The pipeline: ``letter_fast.pipeline.run_pipeline`` from Python, and ``letter-fast run`` that wraps it."""

import json

import pytest
import torch

from letter_fast.cli import main
from letter_fast.config import load_settings

pytest.importorskip("transformers")


def tiny_stage_configs():
    from letter_fast.cf.sasrec import SASRecConfig
    from letter_fast.genrec.train import TigerTrainConfig
    from letter_fast.tokenizer.config import TokenizeConfig

    return dict(
        sasrec_config=SASRecConfig(batch_size=64, eval_batch_size=64),
        tokenizer_config=TokenizeConfig(hidden_dims=(16,), latent_dim=8, num_levels=3, codebook_size=16,
                                        diversity_clusters=2, diversity_min_size=4, diversity_max_size=12,
                                        batch_size=64, eval_every=1),
        tiger_config=TigerTrainConfig(num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8,
                                      batch_size=32, num_beams=10, eval_batch_size=64),
    )


def test_run_pipeline_from_python(tmp_path):
    from letter_fast.data import make_synthetic_catalog
    from letter_fast.pipeline import PipelineConfig, run_pipeline

    catalog = make_synthetic_catalog(num_items=64, num_users=80, dim=16, cf_dim=8, num_semantic_clusters=4,
                                     num_collab_groups=4, min_length=5, max_length=8, seed=0)
    out = tmp_path / "run"
    settings = dict(sasrec_epochs=2, tokenizer_epochs=3, tiger_max_steps=6, tiger_eval_every_steps=3, seed=1,
                    device="cpu")
    lines = []
    result = run_pipeline(catalog, out, progress=False, log=lines.append, **settings, **tiny_stage_configs())
    assert result["dataset"] == "Synthetic" and set(result["test"]) == {"SASRec", "TIGER on letter identifiers"}
    for metrics in result["test"].values():
        assert 0.0 <= metrics["ndcg@10"] <= metrics["recall@10"] <= 1.0
    assert result["tokenizer"]["collision_rate"] == 0.0
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result))
    assert any("results on Synthetic" in line for line in lines)
    # every stage's settings are saved and read back into their dataclasses
    assert load_settings(PipelineConfig, out) == PipelineConfig(**settings)
    from letter_fast.genrec.train import TigerTrainConfig
    from letter_fast.tokenizer.config import TokenizeConfig

    tiger = load_settings(TigerTrainConfig, out / "tiger")
    assert (tiger.max_steps, tiger.d_model, tiger.seed) == (6, 16, 1)
    assert load_settings(TokenizeConfig, out / "tokenizer").epochs == 3
    # a second call resumes every finished stage: the same identifiers and the same result
    codes = torch.load(out / "tokenizer" / "Synthetic.codes.pt")
    again = run_pipeline(catalog, out, progress=False, log=None, **settings, **tiny_stage_configs())
    assert torch.equal(torch.load(out / "tokenizer" / "Synthetic.codes.pt"), codes)
    assert again == result


def test_run_pipeline_checks_its_settings(tmp_path):
    from letter_fast.pipeline import run_pipeline

    with pytest.raises(ValueError, match="unknown key 'tiger_minutes'"):
        run_pipeline(out_dir=tmp_path, tiger_minutes=3)
    with pytest.raises(ValueError, match="tiger_max_steps must be >= 1"):
        run_pipeline(out_dir=tmp_path, tiger_max_steps=0)
    with pytest.raises(ValueError, match="variant must be one of"):
        run_pipeline(out_dir=tmp_path, variant="best")


@pytest.mark.slow
def test_run_command_on_the_synthetic_catalog(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--out-dir", str(out), "--tokenizer-epochs", "3", "--sasrec-epochs", "1",
            "--tiger-max-steps", "20", "--tiger-eval-every-steps", "10", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["test"]) == {"SASRec", "TIGER on letter identifiers"}
    assert results["settings"]["tiger_max_steps"] == 20
    assert "results on Synthetic" in capsys.readouterr().out
    # the saved settings repeat the run: --config <out-dir>/settings.toml gives the same settings
    assert main(["run", "--config", str(out / "settings.toml"), "--print-config"]) == 0
    assert "tiger_max_steps = 20" in capsys.readouterr().out


def test_run_pipeline_with_lcrec(tmp_path):
    pytest.importorskip("peft")
    from letter_fast.data import make_synthetic_catalog
    from letter_fast.genrec.lcrec.testing import save_tiny_base
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig
    from letter_fast.pipeline import run_pipeline

    base = save_tiny_base(tmp_path / "base", seed=1)
    catalog = make_synthetic_catalog(num_items=64, num_users=40, dim=16, cf_dim=8, num_semantic_clusters=4,
                                     num_collab_groups=4, min_length=5, max_length=8, seed=0)
    stages = tiny_stage_configs()
    stages.pop("tiger_config")
    lcrec = LCRecTrainConfig(batch_size=8, micro_batch_size=8, lr=5e-3, num_beams=10, valid_users=8,
                             eval_batch_size=16, test_templates="0")
    result = run_pipeline(catalog, tmp_path / "run", progress=False, log=None, sasrec_epochs=1, tokenizer_epochs=2,
                          recommender="lcrec", lcrec_model=str(base), lcrec_max_steps=2, seed=1, device="cpu",
                          lcrec_config=lcrec, **stages)
    assert set(result["test"]) == {"SASRec", "LC-Rec on letter identifiers"} and "lcrec" in result
    assert result["lcrec"]["test_users"] == 40 and result["lcrec"]["stopped"] == "step budget"
    assert load_settings(LCRecTrainConfig, tmp_path / "run" / "lcrec").base_model == str(base)
    assert (tmp_path / "run" / "lcrec" / "best" / "lcrec.json").is_file()
