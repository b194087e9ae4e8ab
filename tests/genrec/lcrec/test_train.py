"""LC-Rec training: the loss goes down, accumulation equals one big batch, resume, the CLI, one-line errors, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from letter_fast.cli import main as cli_main  # noqa: E402
from letter_fast.data import write_index_json  # noqa: E402
from letter_fast.genrec.lcrec.testing import (  # noqa: E402
    save_tiny_base,
    tiny_causal_lm,
    tiny_codes,
    tiny_dataset,
    tiny_tokenizer,
)
from letter_fast.genrec.lcrec.tokens import CodeTokenError  # noqa: E402
from letter_fast.genrec.lcrec.train import (  # noqa: E402
    LCRecTrainConfig,
    _LCRecTask,
    build_lcrec_model,
    load_lcrec,
    train_lcrec,
)
from letter_fast.training import Distributed, FitSettings, fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def tiny_config(**kw):
    base = dict(device="cpu", epochs=2, batch_size=8, micro_batch_size=4, lr=5e-3, num_beams=10, valid_users=0,
                progress=False, test_templates="0")
    return LCRecTrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny base model, a tiny data set folder and its identifiers."""
    root = tmp_path_factory.mktemp("lcrec_train")
    save_tiny_base(root / "base", seed=1)
    tiny_dataset(num_users=8).save(root / "Tiny")
    write_index_json(root / "tiny.index.json", tiny_codes())
    write_index_json(root / "four.index.json", torch.cat([tiny_codes(), torch.zeros(12, 1, dtype=torch.long)], 1))
    return root


def test_loss_goes_down_on_a_tiny_task():
    tok = tiny_tokenizer()
    run = train_lcrec(tiny_dataset(num_users=8), tiny_codes(), tiny_config(epochs=6, lr=1e-2, eval_every_epochs=3),
                      model=tiny_causal_lm("llama", len(tok), seed=1), tokenizer=tok, log=lambda *a: None)
    losses = [h["train_loss"] for h in run.history]
    assert len(losses) == 2 and losses[1] < losses[0] - 0.3, losses
    assert run.stopped == "epochs done" and 0 <= run.best_metrics["ndcg@10"] <= 1


def _task(config):
    tok = tiny_tokenizer()
    data, codes = tiny_dataset(num_users=8), tiny_codes()
    lm, tok, ct = build_lcrec_model(codes, config, torch.device("cpu"),
                                    model=tiny_causal_lm("llama", len(tok), seed=3), tokenizer=tok)
    from letter_fast.genrec.evaluate import build_index

    task = _LCRecTask(config, lm, tok, ct, build_index(codes, max(ct.num_codes)), data, codes, Distributed("cpu"),
                      config.accumulation())
    # plain SGD, no schedule: the update is the gradient itself (AdamW's first step would hide small differences)
    task.optimizer = torch.optim.SGD([p for p in lm.parameters() if p.requires_grad], lr=1.0)
    task.scheduler = None
    return task


def test_accumulation_equals_one_big_batch():
    """Four micro-batches of ragged lengths, weighted by their target tokens = one batch of the eight examples."""
    cfg = tiny_config(lora_dropout=0.0, grad_clip=0.0, loss_scope="sequence")  # ragged target counts
    results, rows = [], torch.arange(8)
    for micro in (8, 2):
        task = _task(cfg)
        task.batches = lambda epoch, micro=micro: [(epoch, r) for r in rows.split(micro)]
        weights = [task.batch_weight(b) for b in task.batches(0)]
        fit(task, FitSettings(epochs=1, select="ndcg@10", max_steps=1, accumulate=8 // micro, progress=False), None,
            log=lambda *a: None)
        results.append(task.weights())
        if micro == 2:
            assert len(set(weights)) > 1, "the micro-batches should differ in target tokens"
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], atol=2e-6, rtol=1e-5)


def test_resume_after_a_finished_run_and_best_folder(files, tmp_path):
    cfg = tiny_config(base_model=str(files / "base"))
    from letter_fast.data import load_dataset, read_index_json

    data = load_dataset(files / "Tiny")
    codes = read_index_json(files / "tiny.index.json", num_items=data.num_items)
    run = train_lcrec(data, codes, cfg, tmp_path / "run", log=lambda *a: None)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    again = train_lcrec(data, codes, cfg, tmp_path / "run", log=lambda *a: None)  # finished: nothing more to do
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before and again.history == run.history
    model, tok, ct, saved = load_lcrec(tmp_path / "run")
    assert saved == cfg
    for name, value in run.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    with pytest.raises(ValueError, match="other settings"):
        train_lcrec(data, codes, tiny_config(base_model=str(files / "base"), lr=1e-3), tmp_path / "run",
                    log=lambda *a: None)


def test_cli_train_then_evaluate(files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train-lcrec", str(files / "Tiny"), "--index", str(files / "tiny.index.json"), "--model",
            str(files / "base"), "--out-dir", str(out), "--device", "cpu", "--epochs", "1", "--batch-size", "8",
            "--micro-batch-size", "4", "--num-beams", "10", "--test-templates", "0,1", "--no-progress"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| LC-Rec on Tiny, template 1 |" in printed and "mean of 2 templates" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["users"] == 8 and set(metrics["per_template"]) == {"0", "1"}
    assert 0 <= metrics["metrics"]["ndcg@10"] <= metrics["metrics"]["recall@10"] <= 1
    assert (out / "best" / "adapter_model.safetensors").is_file() and (out / "best" / "lcrec.json").is_file()
    evaluate = ["evaluate", str(files / "Tiny"), "--index", str(files / "tiny.index.json"), "--checkpoint",
                str(out / "best"), "--split", "valid", "--num-beams", "10", "--device", "cpu", "--no-progress"]
    assert cli_main(evaluate) == 0
    result = json.loads((out / "valid_metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    # the reloaded best model scores what training's validation saw (all 8 users, template 0)
    assert result["users"] == 8 and result["templates"] == [0]
    assert result["metrics"]["ndcg@10"] == pytest.approx(history[-1]["valid_ndcg@10"], abs=1e-6)
    capsys.readouterr()
    assert cli_main(evaluate) == 0 and "result reused" in capsys.readouterr().out
    # the kind is detected; insisting on the other one is a one-line error
    assert cli_main(evaluate[:5] + [str(out), "--recommender", "tiger", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "LC-Rec model folder" in err
    # identifiers of another shape than the model's code tokens
    assert cli_main(["evaluate", str(files / "Tiny"), "--index", str(files / "four.index.json"), "--checkpoint",
                     str(out / "best"), "--num-beams", "10", "--device", "cpu", "--no-resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "4 levels but the tokenizer holds code tokens for 3" in err


def _one_line_error(capsys, argv, fragment):
    assert cli_main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and fragment in err, err


def test_bad_model_path_is_one_line(files, tmp_path, capsys):
    _one_line_error(capsys, ["train-lcrec", str(files / "Tiny"), "--index", str(files / "tiny.index.json"),
                             "--model", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "r"), "--device",
                             "cpu"], "not a causal-LM folder")


class SplittingTokenizer:
    """A tokenizer whose code tokens come out as two ids (as if they had not been added as single tokens)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)

    def __call__(self, texts, **kw):
        out = self.inner(texts, **kw)
        single = isinstance(texts, str)
        rows = [out["input_ids"]] if single else out["input_ids"]
        rows = [[t for i in row for t in ((i, i) if i >= self.inner_base else (i,))] for row in rows]
        return {"input_ids": rows[0] if single else rows}


def test_a_tokenizer_that_splits_code_tokens_is_one_line(files, tmp_path, capsys, monkeypatch):
    import letter_fast.genrec.lcrec.model as model_module

    def load(path, **kw):
        tok = tiny_tokenizer()
        wrapped = SplittingTokenizer(tok)
        wrapped.__dict__["inner_base"] = len(tok)
        return tiny_causal_lm("llama", len(tok), seed=1), wrapped

    monkeypatch.setattr(model_module, "load_causal_lm", load)
    with pytest.raises(CodeTokenError, match="encodes to 2 token ids"):
        train_lcrec(tiny_dataset(num_users=8), tiny_codes(), tiny_config(), log=lambda *a: None)
    _one_line_error(capsys, ["train-lcrec", str(files / "Tiny"), "--index", str(files / "tiny.index.json"),
                             "--out-dir", str(tmp_path / "r"), "--device", "cpu"], "encodes to 2 token ids")


def test_accumulation_must_divide_the_batch():
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size"):
        tiny_config(batch_size=10, micro_batch_size=4).accumulation()
    with pytest.raises(ValueError, match="unknown LC-Rec task"):
        tiny_config(tasks=("seqrec", "chat")).validate()


@pytest.mark.slow    # two processes importing transformers + peft, and a one-process run to compare with
def test_two_processes_under_torchrun(files, tmp_path):
    argv = ["train-lcrec", str(files / "Tiny"), "--index", str(files / "tiny.index.json"), "--model",
            str(files / "base"), "--device", "cpu", "--epochs", "2", "--batch-size", "8", "--micro-batch-size", "2",
            "--lr", "0.005", "--num-beams", "10", "--test-templates", "0", "--lora-dropout", "0", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29517", "-m", "letter_fast.cli", *argv, "--out-dir", str(tmp_path / "ddp")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli_main(argv + ["--out-dir", str(tmp_path / "one")]) == 0
    ddp, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one"))
    assert set(ddp["metrics"]) == set(one["metrics"]) and ddp["users"] == one["users"] == 8
    h_ddp, h_one = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("ddp", "one"))
    assert [h["valid_users"] for h in h_ddp] == [8, 8]      # the ranks' validation shares summed
    # the same micro-batches per step; DDP averages the ranks' token-weighted means, one process weights all
    # tokens at once: the curves agree to the ragged-length difference
    for a, b in zip(h_ddp, h_one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-3)
    assert (tmp_path / "ddp" / "best" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_cli_tasks_flag_and_test_user_subset(files, tmp_path):
    """``--tasks seqrec,index2item`` trains both tasks (the flag is a comma list); ``--test-users 5`` tests a fixed
    seeded subset of 5 of the 8 users (the same subset for another seed)."""
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        argv = ["train-lcrec", str(files / "Tiny"), "--index", str(files / "tiny.index.json"), "--model",
                str(files / "base"), "--out-dir", str(out), "--device", "cpu", "--epochs", "1", "--batch-size", "8",
                "--micro-batch-size", "4", "--num-beams", "10", "--test-templates", "0", "--tasks",
                "seqrec,index2item", "--test-users", "5", "--seed", str(seed), "--no-progress"]
        assert cli_main(argv) == 0
        outs.append(json.loads((out / "metrics.json").read_text()))
        assert (out / "settings.toml").read_text().count('"index2item"') == 1
    assert outs[0]["users"] == outs[1]["users"] == 5
