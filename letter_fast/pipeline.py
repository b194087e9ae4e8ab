"""The whole pipeline as one library call (what ``letter-fast run`` wraps), like RecBole's ``run_recbole``.

    semantic embeddings -> CF embeddings (SASRec) -> LETTER tokenizer -> TIGER or LC-Rec -> evaluation

    from letter_fast.pipeline import run_pipeline
    result = run_pipeline()                                    # synthetic catalog, runs/synthetic/pipeline
    result = run_pipeline("scientific", out_dir="runs/sci", embeddings="sci.npy", tiger_max_steps=20000)
    result["test"]["TIGER on letter identifiers"]["ndcg@10"]
    result = run_pipeline("scientific", recommender="lcrec", lcrec_model="smollm2")   # LC-Rec instead of TIGER

Every budget is a count (SASRec epochs, tokenizer epochs, TIGER / LC-Rec optimizer steps), never a time, so the same
call repeats exactly. Each stage writes into its folder under ``out_dir`` (``sasrec/``, ``tokenizer/``, ``tiger/`` or
``lcrec/``, each with its own ``settings.toml``) and resumes from what it finds there; ``out_dir/settings.toml`` holds
the :class:`PipelineConfig` and ``out_dir/results.json`` the result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from letter_fast.config import config_from_mapping, save_settings, setting
from letter_fast.training import THREADS_HELP

# TIGER sizes: "small" trains in minutes on a CPU; "paper" is TIGER's 4+4 layers at d_model 128.
TIGER_SIZES = {
    "small": dict(num_layers=2, num_decoder_layers=2, d_model=64, d_ff=256, num_heads=4, d_kv=16, batch_size=128),
    "paper": {},
}


@dataclass
class PipelineConfig:
    """The pipeline: SASRec CF embeddings, the LETTER tokenizer, TIGER or LC-Rec, evaluation; budgets in epochs and
    steps."""

    recommender: str = setting("tiger", "the generative recommender: tiger (T5 from scratch) | lcrec (an LLM with "
                                        "code tokens and LoRA; needs the lcrec extra)")
    variant: str = setting("letter", "tokenizer variant: rqvae | cf | diversity | letter")
    sasrec_epochs: int = setting(50, "SASRec epochs (early stopping on validation NDCG@10 may end it sooner)")
    tokenizer_epochs: int = setting(300, "tokenizer epochs")
    tiger_max_steps: int = setting(1000, "TIGER optimizer steps (also the learning-rate schedule's length)")
    tiger_eval_every_steps: int = setting(0, "also validate TIGER every N steps inside an epoch to pick the best "
                                             "model (0 = after each epoch and at the end only)")
    tau: float = setting(0.7, "TIGER's ranking-guided loss temperature")
    tiger_size: str = setting("auto", "paper: TIGER's 4+4 layers, d_model 128; small: 2+2 layers, d_model 64 "
                                      "(trains in minutes on a CPU); auto: small for the synthetic catalog, paper "
                                      "otherwise")
    lcrec_model: str = setting("smollm2", "LC-Rec's base LLM: a local Hugging Face causal-LM folder or smollm2")
    lcrec_max_steps: int = setting(0, "LC-Rec optimizer steps (also the schedule's length; 0 = the recipe's 4 "
                                      "epochs)")
    seed: int = setting(0, "random seed of every stage (and of the synthetic catalog)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    threads: int = setting(1, THREADS_HELP)

    def check(self) -> PipelineConfig:
        from letter_fast.tokenizer.config import VARIANTS

        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.recommender not in ("tiger", "lcrec"):
            raise ValueError(f"recommender must be tiger or lcrec, got {self.recommender!r}")
        if self.lcrec_max_steps < 0:
            raise ValueError(f"lcrec_max_steps must be >= 0, got {self.lcrec_max_steps}")
        if self.tiger_size not in ("auto", *TIGER_SIZES):
            raise ValueError(f"tiger_size must be auto, small or paper, got {self.tiger_size!r}")
        for name in ("sasrec_epochs", "tokenizer_epochs", "tiger_max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        return self


def _quiet(*_args, **_kwargs) -> None:
    pass


def run_pipeline(
    dataset=None,
    out_dir=None,
    *,
    config: Optional[PipelineConfig] = None,
    data_root=None,
    embeddings=None,
    cf=None,
    resume: bool = True,
    progress: bool = True,
    log: Optional[Callable[..., None]] = print,
    sasrec_config=None,
    tokenizer_config=None,
    tiger_config=None,
    lcrec_config=None,
    **settings,
) -> dict:
    """Run every stage on ``dataset`` and return the result (also written to ``out_dir/results.json``).

    ``dataset``: a :class:`letter_fast.data.Dataset`, a folder / ``<Name>.inter.json`` / name under ``data_root``,
    or None for the synthetic catalog (planted semantic and collaborative structure, no files). ``embeddings``:
    a semantic embeddings file (else the data set's own, else its item text embedded with all-MiniLM-L6-v2,
    cached). ``cf``: a CF embeddings file instead of training SASRec. ``config`` and/or keyword ``settings``
    (the fields of :class:`PipelineConfig`: ``seed=``, ``tiger_max_steps=`` ...) give the settings; ``resume=False``
    starts every stage afresh; ``log=None`` prints nothing.
    ``sasrec_config`` (:class:`~letter_fast.cf.sasrec.SASRecConfig`),
    ``tokenizer_config`` (:class:`~letter_fast.tokenizer.config.TokenizeConfig`) and ``tiger_config``
    (:class:`~letter_fast.genrec.train.TigerTrainConfig`) and ``lcrec_config``
    (:class:`~letter_fast.genrec.lcrec.train.LCRecTrainConfig`) set everything else of a stage; the pipeline's settings
    (budgets, variant, tau (TIGER's), LC-Rec's base model, seed, device; and the TIGER size unless ``tiger_config`` is
    given) are applied over them.

    Returns ``{"dataset", "settings", "tokenizer": {collision rates, ...}, "test": {model: Recall/NDCG@5/10},
    "tiger": {...}}`` (``"lcrec"`` instead of ``"tiger"`` with ``recommender="lcrec"``).
    """
    from letter_fast.cf.sasrec import SASRecConfig, save_result, train_sasrec
    from letter_fast.data import Dataset, load_dataset, make_synthetic_catalog
    from letter_fast.data.embeddings import embed_items, load_item_embeddings
    from letter_fast.genrec.train import TigerTrainConfig, resolve_device, train_and_evaluate_tiger
    from letter_fast.io import atomic_write, load_tensor
    from letter_fast.metrics import format_metrics
    from letter_fast.tokenizer.config import TokenizeConfig
    from letter_fast.tokenizer.pipeline import tokenize_items

    log = log or _quiet
    base = dataclasses.asdict(config) if config is not None else {}
    cfg = config_from_mapping(PipelineConfig, {**base, **settings}, "run_pipeline settings").check()
    device = str(resolve_device(cfg.device))
    synthetic = dataset is None
    if synthetic:
        dataset = make_synthetic_catalog(seed=cfg.seed)
    elif not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset, data_root)
    out = Path(out_dir) if out_dir else Path("runs") / dataset.name.lower() / "pipeline"
    log(f"== {dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{dataset.num_interactions} interactions -> {out}")
    save_settings(cfg, out)

    # 1. semantic embeddings
    if embeddings is not None:
        semantic = load_item_embeddings(embeddings, dataset.num_items, what="semantic embeddings")
    elif "semantic" in dataset.embeddings:
        semantic = dataset.embeddings["semantic"]
    elif dataset.items is not None:
        log("== semantic embeddings (all-MiniLM-L6-v2, cached)")
        semantic = embed_items(dataset.items, out / f"{dataset.name}.emb-minilm.npy", device=device,
                               overwrite=not resume, progress=progress)
    else:
        raise ValueError(f"{dataset.name} has no item text (.item.json): pass embeddings=FILE (--embeddings)")

    # 2. CF embeddings
    tcfg = dataclasses.replace(tokenizer_config or TokenizeConfig(), variant=cfg.variant, epochs=cfg.tokenizer_epochs,
                               seed=cfg.seed, device=device, threads=cfg.threads,
                               progress=progress).check()
    sasrec_test = None
    if cf is not None:
        cf_emb = load_item_embeddings(cf, dataset.num_items, dim=tcfg.latent_dim, what="CF embeddings")
    else:
        log(f"== SASRec CF embeddings ({cfg.sasrec_epochs} epochs at most)")
        scfg = dataclasses.replace(sasrec_config or SASRecConfig(), dim=tcfg.latent_dim, epochs=cfg.sasrec_epochs,
                                   seed=cfg.seed, device=device, threads=cfg.threads).check()
        save_settings(scfg, out / "sasrec")
        result = train_sasrec(dataset.histories, dataset.num_items, scfg, checkpoint=out / "sasrec" / "sasrec.ckpt.pt",
                              resume=resume, progress=progress)
        save_result(result, out / "sasrec", dataset.name, scfg)
        cf_emb, sasrec_test = result.embeddings, result.test_metrics

    # 3. tokenizer
    log(f"== LETTER tokenizer ({cfg.variant}, {cfg.tokenizer_epochs} epochs)")
    save_settings(tcfg, out / "tokenizer")
    report = tokenize_items(semantic, cf_emb, out / "tokenizer", dataset.name, tcfg.model_settings(),
                            tcfg.train_config(), resume=resume)
    codes = load_tensor(out / "tokenizer" / f"{dataset.name}.codes.pt", "codes").long()

    # 4. TIGER or LC-Rec + evaluation
    if cfg.recommender == "lcrec":
        name, stage = "LC-Rec", "lcrec"
        genrec = _lcrec_stage(cfg, dataset, codes, out, lcrec_config, resume, progress, log)
    else:
        name, stage = "TIGER", "tiger"
        size = cfg.tiger_size if cfg.tiger_size != "auto" else ("small" if synthetic else "paper")
        log(f"== TIGER (tau {cfg.tau}, {cfg.tiger_max_steps} steps, {'given' if tiger_config else size} size)")
        # epochs high enough that the step budget is what ends training (early stopping aside)
        base = tiger_config or TigerTrainConfig(**TIGER_SIZES[size])
        tiger_cfg = dataclasses.replace(base, tau=cfg.tau, max_steps=cfg.tiger_max_steps, epochs=10_000,
                                        eval_every_steps=cfg.tiger_eval_every_steps, seed=cfg.seed, device=cfg.device,
                                        threads=cfg.threads, progress=progress)
        if not resume and (out / "tiger" / "checkpoint.pt").exists():
            (out / "tiger" / "checkpoint.pt").unlink()
        save_settings(tiger_cfg, out / "tiger")
        genrec = train_and_evaluate_tiger(dataset, codes, tiger_cfg, out_dir=out / "tiger", log=log)

    rows = {}
    if sasrec_test is not None:
        rows["SASRec"] = sasrec_test
    rows[f"{name} on {cfg.variant} identifiers"] = {k: v for k, v in genrec.items()
                                                    if k.split("@")[0] in ("recall", "ndcg")}
    summary = {"dataset": dataset.name, "settings": dataclasses.asdict(cfg), "tokenizer": {k: report[k] for k in (
        "collision_rate_before_reassignment", "collision_rate", "first_level_gini", "cf_neighbour_code_similarity")},
        "test": rows,
        # timings vary from run to run: they stay out of the result so that a repeated run writes the same file
        stage: {k: v for k, v in genrec.items() if not (isinstance(v, float) and v != v) and "per_s" not in k}}
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    log(f"\n== results on {dataset.name} (test split, full ranking)")
    for name, metrics in rows.items():
        log(f"{name:<34} {format_metrics(metrics)}")
    log(f"tokenizer: collisions {report['collision_rate_before_reassignment']:.2%} -> {report['collision_rate']:.2%}, "
        f"CF-pair code similarity {report['cf_neighbour_code_similarity']:.3f}")
    log(f"wrote {out / 'results.json'}")
    return summary


def _lcrec_stage(cfg: PipelineConfig, dataset, codes, out: Path, lcrec_config, resume: bool, progress: bool,
                 log) -> dict:
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig, train_and_evaluate_lcrec

    base = lcrec_config or LCRecTrainConfig()
    budget = dict(max_steps=cfg.lcrec_max_steps, epochs=10_000) if cfg.lcrec_max_steps else {}
    lcrec_cfg = dataclasses.replace(base, base_model=cfg.lcrec_model, seed=cfg.seed, device=cfg.device,
                                    threads=cfg.threads, progress=progress, **budget)
    log(f"== LC-Rec ({lcrec_cfg.base_model}, "
        f"{f'{cfg.lcrec_max_steps} steps' if cfg.lcrec_max_steps else f'{lcrec_cfg.epochs} epochs'})")
    if not resume and (out / "lcrec" / "checkpoint.pt").exists():
        (out / "lcrec" / "checkpoint.pt").unlink()
    save_settings(lcrec_cfg, out / "lcrec")
    return train_and_evaluate_lcrec(dataset, codes, lcrec_cfg, out_dir=out / "lcrec", resume=resume, log=log)


__all__ = ["PipelineConfig", "run_pipeline", "TIGER_SIZES"]
