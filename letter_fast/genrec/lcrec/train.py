"""Training LC-Rec: LoRA (or full) fine-tuning of a causal LLM on instruction examples, selection by validation NDCG@10.

The LETTER-LC-Rec recipe (docs/reference_settings.md#lc-rec): AdamW (lr 1e-4, weight decay 0.01), a cosine
learning-rate schedule over the planned steps with 1% linear warm-up, 4 epochs, an effective batch of 128 examples
(``micro_batch_size`` per forward, gradient accumulation up to ``batch_size`` over all processes), LoRA r 8 /
alpha 32 / dropout 0.05 on every projection; the loss is the ranking-guided generation loss, cross-entropy over
``logits / tau`` at the response tokens (:func:`~letter_fast.genrec.lcrec.loss.lcrec_loss`, LM head applied only
where a label is).

* **Examples** (:func:`~letter_fast.genrec.lcrec.examples.build_examples`): the ``tasks`` (``seqrec`` by default;
  ``item2index``, ``index2item`` and the ``fusionseqrec`` pair when the data set has item text). Every epoch draws
  each example's template afresh (seeded by the run's seed and the epoch), as LC-Rec draws one per example read.
* **Length-bucketed micro-batches** (:func:`letter_fast.genrec.train.bucketed_batches`): examples shuffled, sorted
  by token length inside windows of ``bucket_window`` micro-batches, chunked, the micro-batches shuffled again;
  right padding to each micro-batch's longest row only.
* **Gradient accumulation equals one big batch**: each micro-batch's loss is weighted by its number of target
  tokens (:meth:`_LCRecTask.batch_weight`), so ``k`` accumulated micro-batches give the gradient of the mean over
  all their target tokens, what one batch of their union gives (a test checks it).
* **Selection** by NDCG@10 on a fixed seeded subset of ``valid_users`` validation users (``seqrec``, template 0),
  decoded by :class:`~letter_fast.genrec.lcrec.decoder.LCRecDecoder` (trie-constrained beam search,
  ``num_beams``), after every ``eval_every_epochs`` epoch(s) and every ``eval_every_steps`` steps.
* **Files** in ``out_dir`` (the loop is :func:`letter_fast.training.fit`): ``checkpoint.pt`` (format
  ``letter_fast.lcrec.checkpoint``: the trainable weights only -- LoRA adapters and the trained code-token rows,
  or every weight with ``full_finetune`` --, optimizer, scheduler, every rank's random streams, the position in
  the epoch, the best score, the learning curve), ``best.pt`` (the best trainable weights), ``history.json``,
  ``timing.json`` and, once training ends, ``best/``: the best model saved the peft way
  (:func:`~letter_fast.genrec.lcrec.model.save_model`: adapters, tokenizer, code-token metadata; written into a
  temporary folder and renamed into place), which :func:`~letter_fast.genrec.lcrec.model.load_model` and
  ``letter-fast evaluate`` read. The base model is rebuilt from ``base_model`` on resume (deterministically), so a
  run killed with ``kill -9`` and started again with the same command ends, on CPU, with the same bytes.
* **Mixed precision**: on CUDA the base model is loaded in bfloat16 (``dtype = "auto"``) and runs under bf16
  autocast (``bf16``); peft keeps the adapters in float32. CPU runs are float32.
* **Multi-process**: under ``torchrun`` or ``accelerate launch`` (both set ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
  accelerate's own wrapping is not used) the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on
  CUDA) by :class:`letter_fast.training.Distributed`: every rank draws the same micro-batch list and takes every
  ``world``-th one; ``batch_size`` stays the effective batch over all ranks (the accumulation shrinks), validation
  and test users are split over the ranks; rank 0 writes the files::

      torchrun --nproc_per_node 2 -m letter_fast.cli train-lcrec instruments --model smollm2
      accelerate launch --num_processes 2 -m letter_fast.cli train-lcrec instruments --model smollm2
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from letter_fast.config import setting, subconfig
from letter_fast.genrec.lcrec.model import LCRecModelConfig
from letter_fast.training import (
    THREADS_HELP,
    CheckpointError,
    Distributed,
    FitSettings,
    TrainTask,
    check_same_settings,
    cpu_threads,
    derive_seed,
    fit,
    seed_everything,
    seeded,
)

CHECKPOINT_KIND, MODEL_KIND, VERSION = "lcrec.checkpoint", "lcrec.model", 1
BEST_FOLDER, TRAIN_SETTINGS = "best", "train_settings.toml"
# settings that only change how the run is watched may differ on resume
_FREE_SETTINGS = ("progress", "device", "threads", "eval_batch_size", "time_budget_s", "patience", "test_templates",
                  "test_users")


@dataclass
class LCRecTrainConfig(LCRecModelConfig):
    """LC-Rec (a causal LLM with code tokens, LoRA) with the ranking-guided loss: the model and its training."""

    # data
    tasks: tuple = setting(("seqrec",), "training tasks: seqrec, item2index, index2item, fusion_title, fusion_index "
                                        "or the group fusionseqrec; all but seqrec need item text")
    max_history: int = setting(20, "history items kept per prompt (the most recent)")
    max_length: int = setting(1024, "cut prompt + response + EOS to this many tokens on the right (LC-Rec's "
                                    "truncation; 0 = no cut)")
    loss_scope: str = setting("response", "labelled positions: response (response + EOS), sequence (prompt too), "
                                          "letter (every position, padding included: the LETTER code's default)")
    # loss
    tau: float = setting(1.0, "ranking-guided loss temperature: cross-entropy over logits / tau (1.0 = plain "
                              "cross-entropy)")
    # optimization
    lr: float = setting(1e-4, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and norm gains)")
    warmup_ratio: float = setting(0.01, "share of the planned steps spent in linear warm-up")
    epochs: int = setting(4, "epochs")
    batch_size: int = setting(128, "examples per optimizer step over all processes (the effective batch)")
    micro_batch_size: int = setting(8, "examples per forward pass; batch_size / (micro_batch_size x processes) "
                                       "micro-batches are accumulated per step")
    grad_clip: float = setting(1.0, "maximum gradient norm (0 = no clipping)")
    bucket_window: int = setting(50, "micro-batches per length-sorting window of the bucketed sampler")
    gradient_checkpointing: bool = setting(False, "recompute the decoder layers' activations in backward (less "
                                                  "memory, about a third more compute)")
    max_steps: int = setting(0, "stop after this many optimizer steps; also the schedule length (0 = no limit)")
    time_budget_s: float = setting(0.0, "stop training after this many seconds (0 = no limit); breaks exact "
                                        "repetition: prefer max_steps / epochs")
    # validation / selection
    patience: int = setting(0, "validations without a better NDCG@10 before stopping (0 = never stop early)")
    eval_every_epochs: int = setting(1, "validate after every N-th epoch (and after the last)")
    eval_every_steps: int = setting(0, "also validate every N steps inside an epoch (0 = only at epoch ends)")
    valid_users: int = setting(1000, "validate on this fixed, seeded subset of validation users (0 = all)")
    num_beams: int = setting(20, "beams of the trie-constrained beam search")
    eval_batch_size: int = setting(16, "users per beam-search batch")
    test_templates: str = setting("all", "seqrec templates the test evaluation reports (LC-Rec reports per "
                                         "template): all, or a comma list such as 0,2")
    test_users: int = setting(0, "test on this fixed, seeded subset of test users (0 = all; a CPU-budget study "
                                 "setting: the metrics are then those of the subset)")
    # run
    seed: int = setting(0, "random seed (template draws, batch order, LoRA init, dropout, validation users)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    threads: int = setting(1, THREADS_HELP)
    bf16: bool = setting(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self):
        super().__post_init__()
        self.tasks = tuple(self.tasks)

    def model_config(self) -> LCRecModelConfig:
        return subconfig(self, LCRecModelConfig)

    def validate(self) -> None:
        from letter_fast.genrec.lcrec.collate import LOSS_SCOPES
        from letter_fast.genrec.lcrec.templates import expand_tasks

        expand_tasks(self.tasks)
        if self.loss_scope not in LOSS_SCOPES:
            raise ValueError(f"loss_scope must be one of {', '.join(LOSS_SCOPES)}, got {self.loss_scope!r}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        for name in ("batch_size", "micro_batch_size", "eval_batch_size", "epochs", "bucket_window",
                     "eval_every_epochs", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_beams < 10:
            raise ValueError(f"num_beams must be >= 10 to score NDCG@10, got {self.num_beams}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 0 or self.valid_users < 0 or self.test_users < 0:
            raise ValueError("max_length, valid_users and test_users must be >= 0")

    def accumulation(self, world: int = 1) -> int:
        """Micro-batches per optimizer step and process: ``batch_size / (micro_batch_size x world)``."""
        per_step = self.micro_batch_size * world
        if self.batch_size % per_step:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size x processes = "
                             f"{self.micro_batch_size} x {world}; change --batch-size or --micro-batch-size")
        return self.batch_size // per_step


# --------------------------------------------------------------------------------------------------- the model


def codes_digest(codes: torch.Tensor) -> str:
    return hashlib.sha256(codes.long().contiguous().numpy().tobytes()).hexdigest()


def build_lcrec_model(codes: torch.Tensor, config: LCRecTrainConfig, device, model=None, tokenizer=None):
    """``(peft model or full model, tokenizer, code_tokens)``: the base LLM (``config.base_model`` unless
    ``model``/``tokenizer`` are given) with the code tokens of ``codes`` added and made trainable as ``config`` says.

    Deterministic for a given seed (the LoRA initialization and a ``normal`` row initialization are seeded), so a
    resumed run rebuilds the same starting point and loads its trained weights over it.
    """
    from letter_fast.genrec.lcrec.model import load_causal_lm, prepare_model
    from letter_fast.genrec.lcrec.tokens import add_code_tokens

    if (model is None) != (tokenizer is None):
        raise ValueError("give both model and tokenizer, or neither (then config.base_model is loaded)")
    if model is None:
        model, tokenizer = load_causal_lm(config.base_model, device=device, dtype=config.dtype,
                                          attn_implementation=config.attn_implementation)
    else:
        model = model.to(device)
    gen = torch.Generator().manual_seed(derive_seed(config.seed, "embedding_init"))
    code_tokens = add_code_tokens(tokenizer, model, codes=codes, order=config.code_token_order,
                                  init=config.embedding_init, generator=gen)
    code_tokens.check_tokenizer(tokenizer)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    with seeded(derive_seed(config.seed, "adapters")):
        model = prepare_model(model, code_tokens, config.model_config())
    return model.to(device), tokenizer, code_tokens


class _LossModule(torch.nn.Module):
    """The LLM with the LC-Rec loss as its forward: DistributedDataParallel must see the forward that builds the
    loss (the loss calls the decoder body and the head directly, not the model's own forward)."""

    def __init__(self, lm, tau: float):
        super().__init__()
        self.lm, self.tau = lm, tau

    def forward(self, input_ids, attention_mask, labels):
        from letter_fast.genrec.lcrec.loss import lcrec_loss

        return lcrec_loss(self.lm, input_ids, attention_mask, labels, tau=self.tau)


# --------------------------------------------------------------------------------------------------- training


@dataclass
class LCRecRun:
    """What :func:`train_lcrec` returns: the best model (eval mode), its tokenizer and code tokens, the curve."""

    model: torch.nn.Module
    tokenizer: object
    code_tokens: object
    history: list
    best_metrics: dict
    best_step: int
    stopped: str
    train_samples_per_s: float


def train_lcrec(dataset, codes: Optional[torch.Tensor] = None, config: Optional[LCRecTrainConfig] = None,
                out_dir=None, *, model=None, tokenizer=None, resume: bool = True, log=print) -> LCRecRun:
    """Fine-tune LC-Rec on ``dataset`` (a ``letter_fast.data.Dataset``) with item identifiers ``codes [V, L]``.

    ``model`` / ``tokenizer``: a base causal LM and its tokenizer to use instead of loading ``config.base_model``
    (tests; they are changed in place). ``out_dir`` receives the files of the module docstring; with ``resume`` a
    checkpoint there is continued (the same settings and identifiers required).
    """
    from letter_fast.genrec.evaluate import build_index

    config = config or LCRecTrainConfig()
    config.validate()
    with cpu_threads(config.threads):
        codes = dataset.codes if codes is None else codes
        if codes is None:
            raise ValueError(f"data set {dataset.name!r} has no item codes: pass the identifiers (--index)")
        dist = Distributed(config.device)
        device = dist.device
        accumulate = config.accumulation(dist.world)
        lm, tokenizer, code_tokens = build_lcrec_model(codes, config, device, model=model, tokenizer=tokenizer)
        index = build_index(codes, max(code_tokens.num_codes), device=device)
        # dropout stream (LoRA dropout): seeded per rank, restored from the checkpoint on resume
        seed_everything(derive_seed(config.seed, "dropout") % 2 ** 62, rank=dist.rank)
        task = _LCRecTask(config, lm, tokenizer, code_tokens, index, dataset, codes, dist, accumulate)
        settings = FitSettings(epochs=config.epochs, select="ndcg@10", mode="max", patience=config.patience,
                               max_steps=config.max_steps, time_budget_s=config.time_budget_s,
                               eval_every_epochs=config.eval_every_epochs, eval_every_steps=config.eval_every_steps,
                               accumulate=accumulate, grad_clip=config.grad_clip, progress=config.progress,
                               count_name="valid_users", log_metrics=("recall@10", "ndcg@10"))
        if out_dir is not None and dist.main:
            _remove_partial_folders(Path(out_dir))
        result = fit(task, settings, out_dir, dist=dist, resume=resume, log=log)
        if out_dir is not None and dist.main:
            save_best(lm, tokenizer, code_tokens, config, Path(out_dir) / BEST_FOLDER)
        dist.barrier()
        return LCRecRun(model=lm, tokenizer=tokenizer, code_tokens=code_tokens, history=result.history,
                        best_metrics=result.best_metrics, best_step=result.best_step, stopped=result.stopped,
                        train_samples_per_s=result.train_samples_per_s)


def _remove_partial_folders(out_dir: Path) -> None:
    # what a kill inside save_model leaves: its temporary folder (best.tmp-<pid>), or the replaced one (best.old-<pid>)
    for leftover in list(out_dir.glob(f"{BEST_FOLDER}.tmp-*")) + list(out_dir.glob(f"{BEST_FOLDER}.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def save_best(model, tokenizer, code_tokens, config: LCRecTrainConfig, folder: Path) -> Path:
    """The model the peft way (:func:`~letter_fast.genrec.lcrec.model.save_model`) plus the training settings."""
    from letter_fast.config import save_settings
    from letter_fast.genrec.lcrec.model import save_model

    save_model(model, tokenizer, code_tokens, folder, config.model_config())
    save_settings(config, folder, name=TRAIN_SETTINGS)
    return folder


def load_lcrec(folder, *, device=None, dtype: str = "auto", base_model=None):
    """``(model in eval mode, tokenizer, code_tokens, LCRecTrainConfig)`` from a ``best/`` folder (or the run folder
    holding it). The training settings come from ``train_settings.toml`` when present (else the model's)."""
    from letter_fast.config import load_settings
    from letter_fast.genrec.lcrec.model import load_model

    folder = Path(folder)
    if (folder / BEST_FOLDER / "lcrec.json").is_file():
        folder = folder / BEST_FOLDER
    model, tokenizer, code_tokens, model_config = load_model(folder, base_model=base_model, device=device,
                                                             dtype=dtype)
    if (folder / TRAIN_SETTINGS).is_file():
        config = load_settings(LCRecTrainConfig, folder / TRAIN_SETTINGS)
    else:
        config = LCRecTrainConfig(**dataclasses.asdict(model_config))
    return model, tokenizer, code_tokens, config


class _LCRecTask(TrainTask):
    """LC-Rec's side of :func:`letter_fast.training.fit`: per-epoch examples, bucketed micro-batches weighted by
    their target tokens, the LC-Rec loss, beam-search validation on this rank's share of the validation users."""

    checkpoint_kind, model_kind, version = CHECKPOINT_KIND, MODEL_KIND, VERSION

    def __init__(self, config: LCRecTrainConfig, lm, tokenizer, code_tokens, index, dataset, codes, dist,
                 accumulate: int):
        from letter_fast.genrec.lcrec.collate import TrainCollator
        from letter_fast.genrec.lcrec.evaluate import prompt_token_ids
        from letter_fast.genrec.lcrec.examples import build_examples
        from letter_fast.genrec.train import cosine_with_warmup

        self.config, self.lm, self.tokenizer, self.code_tokens, self.index = config, lm, tokenizer, code_tokens, index
        self.dataset, self.codes, self.dist = dataset, codes, dist
        self.model = _LossModule(lm, config.tau)
        self.collator = TrainCollator(tokenizer, config.loss_scope, config.max_length or None)
        self.use_bf16 = config.bf16 and dist.device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if self.use_bf16 else None
        self._epoch, self._tokens = None, None

        named = [(n, p) for n, p in lm.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("nothing to train: every parameter is frozen (check embeddings / full_finetune)")
        decay = [p for n, p in named if p.dim() >= 2]
        no_decay = [p for n, p in named if p.dim() < 2]   # biases, norm gains (full fine-tuning)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        n = len(build_examples(dataset, codes, "train", config.tasks, max_history=config.max_history, seed=0))
        if n == 0:
            raise ValueError("no training examples: every user needs at least 4 interactions to give one")
        micro = math.ceil(n / config.micro_batch_size)
        if dist.enabled:
            micro = micro // dist.world
        steps_per_epoch = max(1, math.ceil(micro / accumulate))
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        self.scheduler = cosine_with_warmup(self.optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

        valid = build_examples(dataset, codes, "valid", ("seqrec",), max_history=config.max_history, template_ids=0)
        if config.valid_users and config.valid_users < len(valid):
            pick = torch.randperm(len(valid), generator=torch.Generator().manual_seed(
                derive_seed(config.seed, "valid_users") % 2 ** 62))
            valid = valid[pick[: config.valid_users].sort().values]
        self.valid_prompts = prompt_token_ids(tokenizer, valid.prompt)
        self.valid_targets = valid.target

    # --- batches
    def _epoch_tokens(self, epoch: int):
        from letter_fast.genrec.lcrec.collate import tokenize_examples
        from letter_fast.genrec.lcrec.examples import build_examples

        if self._epoch != epoch:
            examples = build_examples(self.dataset, self.codes, "train", self.config.tasks,
                                      max_history=self.config.max_history,
                                      seed=derive_seed(self.config.seed, "templates", epoch) % 2 ** 62)
            self._tokens = tokenize_examples(self.tokenizer, examples.prompt, examples.response,
                                             max_length=self.config.max_length or None)
            self._epoch = epoch
        return self._tokens

    def batches(self, epoch: int) -> list:
        from letter_fast.genrec.train import bucketed_batches

        tokens = self._epoch_tokens(epoch)
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, "batches", epoch) % 2 ** 62)
        batches = bucketed_batches(tokens.lengths(), self.config.micro_batch_size, gen, self.config.bucket_window)
        return [(epoch, b) for b in batches]

    def _collate(self, batch) -> dict:
        from letter_fast.genrec.lcrec.collate import collate_train

        epoch, rows = batch
        tokens = self._epoch_tokens(epoch)
        rows = rows.tolist()
        return collate_train([tokens.input_ids[i] for i in rows], [tokens.prompt_lengths[i] for i in rows],
                             self.collator.pad_id, self.config.loss_scope)

    def batch_weight(self, batch) -> float:
        """Target tokens of the micro-batch (next-token labels that are not -100): accumulation = one big batch."""
        labels = self._collate(batch)["labels"]
        return float((labels[:, 1:] != -100).sum())

    def batch_samples(self, batch) -> int:
        return len(batch[1])

    def train_step(self, model, batch) -> torch.Tensor:
        b = {k: v.to(self.dist.device) for k, v in self._collate(batch).items()}
        with torch.autocast(self.dist.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.use_bf16):
            return model(b["input_ids"], b["attention_mask"], b["labels"])

    # --- validation
    def validate(self):
        from letter_fast.genrec.lcrec.evaluate import KS, rank_users
        from letter_fast.metrics import topk_metrics

        rows = list(range(self.dist.rank, len(self.valid_prompts), self.dist.world))
        if not rows:
            return {f"{m}@{k}": 0.0 for k in KS for m in ("recall", "ndcg")}, 0
        ranks = rank_users(self.lm, self.index, self.code_tokens.code_token_ids(),
                           [self.valid_prompts[i] for i in rows], self.valid_targets[rows],
                           eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.collator.pad_id,
                           num_beams=self.config.num_beams, batch_size=self.config.eval_batch_size,
                           autocast_dtype=self.autocast_dtype)
        return {k: v * len(rows) for k, v in topk_metrics(ranks["identifier"], KS).items()}, len(rows)

    # --- weights and checkpoints
    def weights(self) -> dict:
        """The trainable parameters only (LoRA adapters and trained embedding rows; everything with
        ``full_finetune``), by their names in the (peft) model."""
        return {n: p.detach() for n, p in self.lm.named_parameters() if p.requires_grad}

    def load_weights(self, state) -> None:
        want = set(self.weights())
        if set(state) != want:
            missing, extra = sorted(want - set(state)), sorted(set(state) - want)
            raise CheckpointError(f"the saved LC-Rec weights do not match this model (missing {missing[:3]}, "
                                  f"unexpected {extra[:3]}): another model or setting; start afresh (--no-resume)")
        params = dict(self.lm.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def payload(self) -> dict:
        return dict(model=self.weights(), config=dataclasses.asdict(self.config),
                    code_tokens=self.code_tokens.to_dict(), codes_sha256=codes_digest(self.codes))

    def check_resume(self, path, checkpoint) -> None:
        check_same_settings(path, checkpoint["config"], dataclasses.asdict(self.config), _FREE_SETTINGS)
        if checkpoint.get("codes_sha256") != codes_digest(self.codes):
            raise CheckpointError(f"{path} was trained on other item identifiers (another --index); use another "
                                  "output folder or start afresh (--no-resume)")


def train_and_evaluate_lcrec(dataset, codes: Optional[torch.Tensor] = None, config: Optional[LCRecTrainConfig] = None,
                             out_dir=None, *, model=None, tokenizer=None, resume: bool = True, log=print) -> dict:
    """The whole LC-Rec stage: train (selection on validation NDCG@10), then evaluate on test per template.

    Returns the test metrics averaged over ``config.test_templates`` (``recall@5``, ``ndcg@5``, ``recall@10``,
    ``ndcg@10``, item-level ``item_*`` variants when identifiers collide), ``per_template`` (the same per template),
    ``templates``, ``best_valid_ndcg@10``, ``stopped`` and ``test_users``: values that repeat exactly (the training
    speed is in ``out_dir/timing.json``).
    """
    from letter_fast.genrec.lcrec.evaluate import evaluate_lcrec

    config = config or LCRecTrainConfig()
    with cpu_threads(config.threads):
        codes = dataset.codes if codes is None else codes
        run = train_lcrec(dataset, codes, config, out_dir, model=model, tokenizer=tokenizer, resume=resume, log=log)
        device = next(run.model.parameters()).device
        dist = Distributed(config.device)
        users = None
        if config.test_users and config.test_users < dataset.num_users:
            # one subset for every run whatever its seed, so runs compare on the same users (one test example per user)
            users = torch.randperm(dataset.num_users, generator=torch.Generator().manual_seed(
                derive_seed(0, "test_users") % 2 ** 62))[: config.test_users].sort().values
        result = evaluate_lcrec(run.model, run.tokenizer, run.code_tokens, dataset, codes, split="test",
                                templates=config.test_templates, num_beams=config.num_beams,
                                batch_size=config.eval_batch_size, max_history=config.max_history,
                                autocast_dtype=torch.bfloat16 if config.bf16 and device.type == "cuda" else None,
                                users=users, dist=dist)
        metrics = dict(result["metrics"])
        metrics.update({"per_template": result["per_template"], "templates": result["templates"],
                        "best_valid_ndcg@10": run.best_metrics.get("ndcg@10", float("nan")),
                        "stopped": run.stopped, "test_users": result["users"]})
        return metrics


__all__ = ["LCRecTrainConfig", "LCRecRun", "train_lcrec", "train_and_evaluate_lcrec", "build_lcrec_model",
           "load_lcrec", "save_best", "CHECKPOINT_KIND", "MODEL_KIND", "VERSION", "BEST_FOLDER"]
