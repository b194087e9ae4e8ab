"""The tokenizer at scale, at tiny sizes: memory-mapped training and chunked encoding give exactly the in-memory
results; the vectorized collision re-assignment is collision-free, bounded to N codes per level, and equals the
original (scipy) algorithm wherever that one is defined."""

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from letter_fast.data.formats import DataFormatError, read_codes, read_index_json, write_index_json
from letter_fast.io import save_tensor
from letter_fast.tokenizer.assign import batched_assignment, collision_rate_np, reassign_collisions, row_keys
from letter_fast.tokenizer.collisions import collision_rate, resolve_collisions_reference
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.pipeline import collision_free_codes
from letter_fast.tokenizer.stream import RowSource, encode_all, init_codebooks_sampled, open_embeddings
from letter_fast.tokenizer.train import TokenizerTrainConfig, train_tokenizer
from letter_fast.training import seeded

SMALL = dict(hidden_dims=(32, 16), latent_dim=8, num_levels=3, codebook_size=16, diversity_clusters=2,
             diversity_cluster_sizes=(4, 12))


def _model(D, **kw):
    with seeded(0):
        return LetterTokenizer(input_dim=D, **{**SMALL, **kw})


@pytest.fixture
def catalog(tmp_path):
    g = torch.Generator().manual_seed(5)
    s = torch.randn(300, 12, generator=g)
    path = tmp_path / "emb.npy"
    np.save(path, s.numpy())
    return s, path


@pytest.mark.parametrize("sample", [0, 100])
def test_memmap_training_equals_in_memory_training_bitwise(catalog, tmp_path, sample):
    s, path = catalog
    cfg = TokenizerTrainConfig(epochs=2, batch_size=64, eval_every=1, checkpoint_every=2, progress=False, seed=3,
                               kmeans_sample=sample)
    runs = []
    for name, emb in (("memory", s), ("memmap", open_embeddings(path, 300))):
        model = _model(12, alpha=0.0, beta=1e-4)
        train_tokenizer(model, emb, None, cfg, tmp_path / name, resume=False)
        runs.append((model.state_dict(), json.loads((tmp_path / name / "training.json").read_text())))
    (a, ha), (b, hb) = runs
    assert ha == hb
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampled_kmeans_uses_all_items_up_to_the_sample_size(catalog):
    s, _ = catalog
    full, sampled = _model(12), _model(12)
    full.init_codebooks(s, seed=0)
    assert init_codebooks_sampled(sampled, s, seed=0, sample=300) is None
    assert torch.equal(full.codebooks, sampled.codebooks)
    idx = init_codebooks_sampled(_model(12), s, seed=0, sample=50)
    assert idx.shape == (50,) and np.all(np.diff(idx) > 0)


def test_row_source_gathers_in_the_order_asked(catalog):
    s, path = catalog
    rows = RowSource(open_embeddings(path, 300), release_bytes=1)   # unmapped after every read
    idx = torch.tensor([299, 3, 150, 0, 42])
    assert torch.equal(rows.rows(idx), s[idx])
    assert torch.equal(rows.slice(10, 20), s[10:20])


@pytest.mark.parametrize("chunk", [1, 37, 300])
def test_chunked_encode_equals_one_shot_encode(catalog, chunk):
    s, path = catalog
    model = _model(12)
    model.init_codebooks(s, seed=1)
    model.eval()
    with torch.no_grad():
        codes, latents = model.encode_items(s)
        before_last = latents - model.codebooks[torch.arange(2), codes[:, :2]].sum(1)
    got, residuals = encode_all(model, open_embeddings(path, 300), chunk_rows=chunk)
    assert np.array_equal(got, codes.numpy())
    assert np.allclose(residuals, before_last.numpy(), atol=1e-6)
    fixed, before = collision_free_codes(model, s)
    assert torch.equal(before, codes) and collision_rate(fixed) == 0


# ------------------------------------------------------------------------------------------ re-assignment

@pytest.mark.parametrize("m,n", [(1, 4), (2, 2), (3, 7), (9, 16), (20, 20)])
def test_batched_assignment_equals_scipy(m, n):
    cost = np.random.default_rng(m * 100 + n).random((30, m, n))
    cols = batched_assignment(cost)
    for g in range(30):
        assert np.array_equal(cols[g], linear_sum_assignment(cost[g])[1])


def _random_case(rng):
    V, L, N = int(rng.integers(10, 300)), int(rng.integers(2, 4)), int(rng.integers(4, 32))
    codes = rng.integers(0, max(2, N // 2), (V, L))
    codes[:, -1] = rng.integers(0, N, V)
    return torch.from_numpy(codes), torch.from_numpy(rng.standard_normal((V, 3))).float(), \
        torch.from_numpy(rng.standard_normal((N, 3))).float()


def test_reassignment_matches_the_original_where_it_is_defined():
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(60):
        codes, residuals, codebook = _random_case(rng)
        old = resolve_collisions_reference(codes, residuals, codebook)
        exact = reassign_collisions(codes, residuals, codebook, exact_max_group=codebook.shape[0])
        if old.shape == codes.shape:   # no colliding prefix group over N: the original is defined
            assert np.array_equal(exact, old.numpy())
            compared += 1
            if _prefix_sizes(codes.numpy()).max() <= 16:   # the default solves groups up to 16 items exactly
                assert np.array_equal(reassign_collisions(codes, residuals, codebook), exact)
    assert compared > 10


def test_greedy_placement_of_large_groups_is_collision_free_and_near_optimal():
    rng = np.random.default_rng(7)
    N, V = 64, 60
    codes = torch.zeros(V, 2, dtype=torch.long)
    codes[:, 1] = torch.from_numpy(rng.integers(0, 4, V))
    residuals, codebook = torch.randn(V, 4), torch.randn(N, 4)
    greedy, stats = reassign_collisions(codes, residuals, codebook, return_stats=True)
    exact = reassign_collisions(codes, residuals, codebook, exact_max_group=N)
    assert stats["greedy_items"] == V and collision_rate_np(greedy) == 0.0

    def total(c):
        return float(((residuals - codebook[torch.from_numpy(c[:, 1])]) ** 2).sum())
    assert total(exact) <= total(greedy) + 1e-4


def _prefix_sizes(codes):
    _, counts = np.unique(row_keys(codes[:, :-1]), return_counts=True)
    return counts


def test_reassignment_is_collision_free_and_bounded():
    rng = np.random.default_rng(1)
    for _ in range(60):
        codes, residuals, codebook = _random_case(rng)
        N = codebook.shape[0]
        new, stats = reassign_collisions(codes, residuals, codebook, return_stats=True)
        L = codes.shape[1]
        assert collision_rate_np(new) == 0.0
        assert new.min() >= 0 and new.max() < N                          # every level a vocabulary of N
        over = _prefix_sizes(codes.numpy()).max() > N
        assert (new.shape[1] > L) == over and stats["extra_levels"] == new.shape[1] - L
        assert np.array_equal(new[:, : L - 1], codes[:, : L - 1].numpy())  # only the last level (and extras) move


@pytest.mark.parametrize("V,N,levels", [(4, 4, 2), (5, 4, 3), (16, 4, 3), (17, 4, 4), (64, 4, 4), (65, 4, 5)])
def test_a_larger_group_takes_one_more_level(V, N, levels):
    codes = torch.zeros(V, 2, dtype=torch.long)   # all on one identifier
    new = reassign_collisions(codes, torch.zeros(V, 2), torch.randn(N, 2))
    assert new.shape == (V, levels) and collision_rate_np(new) == 0.0 and new.max() < N


def test_one_level_identifiers():
    codes = torch.tensor([[1], [1], [2]])
    new = reassign_collisions(codes, torch.tensor([[0.0], [0.1], [2.0]]), torch.tensor([[0.0], [1.0], [2.0]]))
    assert new[:, 0].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------ files and bad input

def test_index_json_streams_the_json_dump_bytes(tmp_path):
    from letter_fast.data.formats import codes_to_index

    codes = torch.randint(0, 300, (1000, 5), generator=torch.Generator().manual_seed(0))
    path = write_index_json(tmp_path / "X.index.json", codes, chunk_rows=77)
    assert path.read_text() == json.dumps(codes_to_index(codes), ensure_ascii=False)
    assert torch.equal(read_index_json(path, num_items=1000), codes)
    edited = path.read_text().replace(", ", ",  ", 1)  # still valid json, another layout: the general reader
    (tmp_path / "Y.index.json").write_text(edited)
    assert torch.equal(read_index_json(tmp_path / "Y.index.json"), codes)


def test_codes_that_do_not_fit_the_tokenizer(tmp_path):
    codes = torch.tensor([[0, 1, 2], [3, 300, 1]])
    write_index_json(tmp_path / "X.index.json", codes)
    save_tensor(codes, tmp_path / "X.codes.npy")
    for path in (tmp_path / "X.index.json", tmp_path / "X.codes.npy"):
        assert torch.equal(read_codes(path, 2, num_levels=3, codebook_size=512), codes)
        with pytest.raises(DataFormatError, match="item 1, level 1: code 300 is outside"):
            read_codes(path, num_levels=3, codebook_size=256)
        with pytest.raises(DataFormatError, match="3 levels, the tokenizer has 4"):
            read_codes(path, num_levels=4)
        with pytest.raises(DataFormatError, match="3 levels, the tokenizer has 2$"):
            read_codes(path, num_levels=2, extra_levels=False)


def test_negative_codes_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="item 1 level 0"):
        write_index_json(tmp_path / "X.index.json", torch.tensor([[0, 1], [-1, 2]]))
    assert list(tmp_path.iterdir()) == []


def test_bad_embedding_files(tmp_path):
    good = np.zeros((10, 4), dtype=np.float16)
    np.save(tmp_path / "ok.npy", good)
    assert open_embeddings(tmp_path / "ok.npy", 10).dtype == np.float16
    with pytest.raises(ValueError, match="have 10 rows, but the data set has 11 items"):
        open_embeddings(tmp_path / "ok.npy", 11)
    np.save(tmp_path / "int.npy", good.astype(np.int32))
    with pytest.raises(ValueError, match="must be float16, float32 or float64, got int32"):
        open_embeddings(tmp_path / "int.npy", 10)
    bad = good.astype(np.float32)
    bad[7, 2] = np.nan
    bad[9, 0] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="row 7 holds NaN/Inf"):
        open_embeddings(tmp_path / "nan.npy", 10, chunk_rows=3)
    (tmp_path / "ok.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be a .npy file"):
        open_embeddings(tmp_path / "ok.pt")


def test_pipeline_on_a_memory_map_writes_the_same_files(catalog, tmp_path):
    from letter_fast.tokenizer.pipeline import tokenize_items

    s, path = catalog
    cfg = TokenizerTrainConfig(epochs=2, batch_size=64, eval_every=1, checkpoint_every=2, progress=False, seed=0)
    settings = dict(SMALL, alpha=0.0, beta=0.0)
    tokenize_items(s, None, tmp_path / "a", "Toy", settings, cfg)
    tokenize_items(open_embeddings(path, 300), None, tmp_path / "b", "Toy", settings, cfg)
    for name in ("Toy.index.json", "Toy.codes.pt", "Toy.codes.npy", "tokenizer_report.json", "best.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert torch.equal(read_codes(tmp_path / "a" / "Toy.codes.npy", 300, num_levels=3, codebook_size=16),
                       read_index_json(tmp_path / "a" / "Toy.index.json"))
