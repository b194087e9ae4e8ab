"""Tokenizer training under torchrun: 2 CPU processes (gloo) with a global batch of B train the model one process
trains with batch B (same parameters to float rounding, same codes), and a checkpoint resumes with another number of
ranks.

The Sinkhorn last level runs over the global batch on every rank, yet it is not continuous: a balanced transport
splits the items at a code's capacity between two codes, and the assignment (the larger share) of such an item flips
on a rounding-level change of its distances. Two ranks and one process compute the encoder's matrix products on
other row blocks, so their trained parameters agree to rounding only until the first flip, and when that comes
depends on the CPU (within the first epoch on an AVX-512 AMD EPYC; not before the end of it on earlier machines). So
the many-epoch equality is tested with the nearest-code last level (CF negatives and diversity draws over the global
batch still on), and the Sinkhorn run checks the property itself: the ranks agree with each other after an epoch,
and on the same latents the sharded quantization gives exactly the one-process codes of the whole batch.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from letter_fast.data import make_synthetic_catalog
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.pipeline import tokenize_items
from letter_fast.tokenizer.stream import encode_all, encode_codes
from letter_fast.tokenizer.train import TokenizerTrainConfig, load_tokenizer, train_tokenizer
from letter_fast.training import seeded

ROOT = Path(__file__).resolve().parents[2]
# LETTER with every coupling term on: Sinkhorn last level, CF negatives, diversity draws; 101 items in batches of 32
# leave a last batch of 5, split 3 + 2 (unequal shards)
SETTINGS = dict(hidden_dims=(32, 16), latent_dim=8, num_levels=3, codebook_size=16, alpha=0.05, beta=1e-3,
                diversity_clusters=2, diversity_cluster_sizes=(4, 12))
ITEMS, BATCH, EPOCHS = 101, 32, 6


def catalog():
    c = make_synthetic_catalog(num_items=ITEMS, num_users=256, dim=24, cf_dim=8, seed=5)
    return c.embeddings["semantic"], c.embeddings["cf_planted"]


def build(sinkhorn: bool = False):
    with seeded(0):
        return LetterTokenizer(input_dim=24, **SETTINGS, sinkhorn_last_level=sinkhorn)


def config(epochs=EPOCHS):
    return TokenizerTrainConfig(epochs=epochs, batch_size=BATCH, eval_every=3, checkpoint_every=3, progress=False)


WORKER = """
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from tests.tokenizer.test_distributed import EPOCHS, SETTINGS, build, catalog, config
from letter_fast.tokenizer.pipeline import tokenize_items
from letter_fast.tokenizer.stream import encode_all, encode_codes
from letter_fast.tokenizer.distributed import BatchShard
from letter_fast.tokenizer.train import train_tokenizer
from letter_fast.training import Distributed

out = Path(sys.argv[1])
dist = Distributed("cpu")
s, cf = catalog()
# "resumed" continues the 1-process checkpoint there; "sinkhorn": one epoch with the Sinkhorn last level
for run, resume, sinkhorn, epochs in (("fresh", False, False, EPOCHS), ("resumed", True, False, EPOCHS),
                                      ("sinkhorn", False, True, 1)):
    model = build(sinkhorn)
    summary = train_tokenizer(model, s, cf, config(epochs), out / run, resume=resume, dist=dist)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.world)]
    torch.distributed.all_gather(gathered, flat)
    codes, last = encode_all(model, s, chunk_rows=16, dist=dist)   # 7 chunks: 4 on rank 0, 3 on rank 1
    assert (codes is None) == (not dist.main)
    # the balanced last level over a global batch: this rank's rows of the same latents, the transport over all
    with torch.no_grad():
        z = model.encoder(s)
    shard, _ = BatchShard.split(torch.arange(len(s)), dist.rank, dist.world)
    sharded = shard.gather(model.quantize(z[shard.start:shard.stop], balanced_last_level=True, shard=shard))
    whole = model.quantize(z, balanced_last_level=True)
    if dist.main:
        torch.save({"state": model.state_dict(), "codes": encode_codes(model, s),
                    "split_codes": torch.from_numpy(codes), "split_last": torch.from_numpy(last),
                    "sharded_sinkhorn": sharded, "whole_sinkhorn": whole}, out / run / "final.pt")
    (out / run / f"rank{dist.rank}.json").write_text(json.dumps({
        "same_params": all(torch.equal(g, gathered[0]) for g in gathered), "history": summary["history"]}))
report = tokenize_items(s, cf, out / "pipeline", "Tiny", {**SETTINGS, "sinkhorn_last_level": False}, config())
assert ("rank" in report) == (not dist.main)
torch.distributed.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_relative(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30))
               for k in b if b[k].is_floating_point())


@pytest.mark.slow
def test_two_ranks_train_the_one_process_model(tmp_path):
    s, cf = catalog()
    single = build()
    train_tokenizer(single, s, cf, config(), tmp_path / "single")
    # a 1-process run stopped after 3 epochs, for the 2 ranks to resume
    train_tokenizer(build(), s, cf, config(epochs=3), tmp_path / "resumed")

    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(tmp_path / "worker.py"), str(tmp_path), str(ROOT)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the Sinkhorn run has no one-process twin: past the first assignment flip they need not agree (docstring)
    for run, want, want_dir in (("fresh", single, "single"), ("resumed", single, "single"), ("sinkhorn", None, None)):
        ranks = [json.loads((tmp_path / run / f"rank{r}.json").read_text()) for r in range(2)]
        assert all(r["same_params"] for r in ranks)
        assert ranks[0]["history"] == ranks[1]["history"]
        got = torch.load(tmp_path / run / "final.pt")
        # the encoding split over the ranks (chunks of 16) is the one-process encoding of the same model, bit for bit
        model = build()
        model.load_state_dict(got["state"])
        codes, last = encode_all(model, s, chunk_rows=16)
        assert np.array_equal(got["split_codes"].numpy(), codes) and np.array_equal(got["split_last"].numpy(), last)
        assert torch.equal(got["sharded_sinkhorn"], got["whole_sinkhorn"]), run
        if want is None:
            continue
        rel = max_relative(got["state"], want.state_dict())
        print(f"{run}: max relative parameter difference {rel:.2e}")
        assert rel < 1e-5, (run, rel)
        assert torch.equal(got["codes"], encode_codes(want, s))
        history = json.loads((tmp_path / want_dir / "training.json").read_text())["history"]
        assert len(history) == len(ranks[0]["history"])
        for mine, theirs in zip(ranks[0]["history"], history):
            assert mine.keys() == theirs.keys()
            for k in mine:
                assert mine[k] == pytest.approx(theirs[k], rel=1e-5, abs=1e-7), (run, mine["epoch"], k)
        # rank 0 wrote the files; best.pt loads
        assert (tmp_path / run / "tokenizer.ckpt").exists()
        load_tokenizer(tmp_path / run / "best.pt")

    # and the other way: one process continues the 2-rank checkpoint as it continues its own
    longer = []
    for run in ("single", "fresh"):
        model = build()
        train_tokenizer(model, s, cf, config(epochs=EPOCHS + 2), tmp_path / run)
        longer.append(model.state_dict())
    assert max_relative(longer[1], longer[0]) < 1e-5

    # `tokenize` under torchrun: rank 0 writes the identifiers a single process writes
    tokenize_items(s, cf, tmp_path / "pipeline_single", "Tiny", {**SETTINGS, "sinkhorn_last_level": False}, config())
    for name in ("Tiny.index.json", "Tiny.codes.npy", "tokenizer_report.json"):
        assert (tmp_path / "pipeline" / name).read_bytes() == (tmp_path / "pipeline_single" / name).read_bytes(), name


def test_batch_shard_split_and_weights():
    from letter_fast.tokenizer.distributed import BatchShard

    idx = torch.arange(10, 15)
    shards = [BatchShard.split(idx, r, 2) for r in range(2)]
    assert [s.sizes for s, _ in shards] == [(3, 2), (3, 2)]
    assert torch.equal(torch.cat([local for _, local in shards]), idx)
    assert sum(s.weight for s, _ in shards) / 2 == pytest.approx(1.0)
    assert shards[1][0].positives("cpu").tolist() == [3, 4]


def test_too_many_ranks_for_the_last_batch_is_a_clear_error(tmp_path):
    from letter_fast.training import Distributed

    class Fake(Distributed):   # a 4-rank context that never talks to anyone (the check runs first)
        def __init__(self):
            self.world, self.rank, self.enabled, self.device = 4, 0, True, torch.device("cpu")

    s, cf = catalog()
    cfg = TokenizerTrainConfig(epochs=1, batch_size=99, progress=False)   # last batch: 2 items for 4 ranks
    with pytest.raises(ValueError, match="at least one item per rank"):
        train_tokenizer(build(), s, cf, cfg, tmp_path, dist=Fake())
