"""Training: the paper's recipe, ``train_one_epoch``, the ``Run`` it belongs to, and ``fit(cfg)``.

The run directory receives ``config.json`` (the resolved config), one line of
``metrics.jsonl`` per epoch, ``checkpoint.pt`` after every epoch (atomically; also
inside an epoch with ``--checkpoint-every``, and before stopping on SIGTERM/SIGINT),
and ``model.safetensors`` at the end. ``fit(cfg, resume=True)`` continues from
``checkpoint.pt``; because every random draw of an epoch (order, crops, flips,
colour noise, dropout) is seeded from (seed, epoch), and a checkpoint taken inside an
epoch holds the random states and sums of the steps so far (``EpochState``), a
resumed CPU run repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import budget, distributed, graphs
from ..models import fastconv
from .board import Board
from .checkpoint import RunState, load_model, load_state, metadata_record, save_weights, unwrap
from .config import (OptimConfig, TrainConfig, adopt_classes, adopt_weights, apply_overrides, from_dict,
                     milestones, model_options, resolve_defaults, to_dict, validate)
from ..data import loader as data_loader
from ..data.transforms import EvalCrops, Normalizer, TrainAugment
from ..errors import AlexNetError
from .graphs import GraphedStep
from .evaluate import EvalResult, evaluate
from .curves import smooth_window, steps_to
from ..models.registry import create_model
from .preempt import Cadence, StopRequest
from ..progress import Progress
from .rundir import RunDir
from .runtime import Runtime, resolve_runtime
from ..models.towers import TwoTowerAlexNet


# ---------------------------------------------------------------------------
# The learning-rate schedule.

class LRSchedule:
    """The paper's schedule and two alternatives, with optional linear warm-up.

    ``plateau`` (paper): divide by 10 when validation error has not improved for
    ``patience`` epochs, at most ``max_drops`` times. ``step``: divide by 10 every
    ``step_epochs``, at most ``max_drops`` times. ``multistep``: divide by 10 after each
    of the ``milestones`` epochs. ``cosine``: per-step cosine decay to zero over the
    run, for short budgets.
    """

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int) -> None:
        if cfg.lr <= 0:
            raise AlexNetError("the schedule needs a learning rate: resolve --lr 0 (the network's own) with "
                               "config.resolve_defaults first")
        self.cfg, self.steps_per_epoch = cfg, max(steps_per_epoch, 1)
        self.drops, self.best, self.bad_epochs = 0, math.inf, 0
        self.milestones = milestones(cfg)

    def lr(self, epoch: int, step: int) -> float:
        c, base = self.cfg, base_lr(self.cfg)
        t = epoch + step / self.steps_per_epoch  # epochs elapsed, fractional
        if c.schedule == "cosine":
            lr = 0.5 * base * (1 + math.cos(math.pi * min(t / c.epochs, 1.0)))
        elif c.schedule == "step":
            lr = base * 0.1 ** min(int(t // c.step_epochs), c.max_drops)
        elif c.schedule == "multistep":
            lr = base * 0.1 ** sum(t >= m for m in self.milestones)
        else:
            lr = base * 0.1 ** self.drops
        if c.warmup_epochs > 0 and t < c.warmup_epochs:
            lr *= (t + 1 / self.steps_per_epoch) / c.warmup_epochs
        return lr

    def end_epoch(self, val_error: float) -> bool:
        """Record an epoch's validation error; True when the lr was just divided."""
        if val_error < self.best - 1e-4:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.cfg.schedule == "plateau" and self.bad_epochs > self.cfg.patience and self.drops < self.cfg.max_drops:
            self.drops, self.bad_epochs = self.drops + 1, 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d: dict) -> None:
        self.drops, self.best, self.bad_epochs = int(d["drops"]), float(d["best"]), int(d["bad_epochs"])


def base_lr(cfg: OptimConfig) -> float:
    """The initial learning rate; with ``scale_lr`` the linear scaling rule of Goyal et al.
    (2017): lr grows with the batch, relative to the paper's batch of 128."""
    return cfg.lr * cfg.batch_size / 128 if cfg.scale_lr else cfg.lr


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (paper, section 5), in the parameter groups of
    ``param_groups``; a rate or decay left to the network (0, -1) is the network's own."""
    impl = {"fused": True} if cfg.fused else {"foreach": True}
    lr, decay = getattr(unwrap(model), "DEFAULT_LR", 0.01), getattr(unwrap(model), "DEFAULT_WEIGHT_DECAY", 5e-4)
    cfg = dataclasses.replace(cfg, lr=cfg.lr or lr, weight_decay=decay if cfg.weight_decay == -1 else cfg.weight_decay)
    return torch.optim.SGD(param_groups(model, cfg), lr=base_lr(cfg), momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, **impl)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters grouped by learning-rate multiplier and weight decay.

    Biases learn at ``bias_lr_mult`` (2) times the rate and decay at ``bias_decay_mult`` (0)
    times the weight decay, as in cuda-convnet's layer files (epsB = 2 epsW, no decay on
    biases) and Caffe's bvlc_alexnet (lr_mult 2, decay_mult 0); the paper's text does not
    say. The last layer (fc8) carries ``head_lr_mult`` on top, and a network whose layer file
    gives each layer its own decay (cuda-convnet's CIFAR nets) its ``DECAY_MULT``. Each group's
    ``lr_mult`` is applied by the schedule at every step."""
    head = {id(p) for p in model.head_parameters()}
    layer_decay = getattr(model, "DECAY_MULT", {})
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        bias = name.endswith(".bias")
        lr_mult = (cfg.head_lr_mult if id(p) in head else 1.0) * (cfg.bias_lr_mult if bias else 1.0)
        decay = cfg.weight_decay * (cfg.bias_decay_mult if bias else layer_decay.get(name.rpartition(".")[0], 1.0))
        groups.setdefault((lr_mult, decay), []).append(p)
    return [{"params": params, "lr_mult": lr_mult, "weight_decay": decay}
            for (lr_mult, decay), params in groups.items()]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate, times each group's multiplier (biases, fc8)."""
    for group in optimizer.param_groups:
        value = lr * group.get("lr_mult", 1.0)
        if isinstance(group["lr"], torch.Tensor):  # a CUDA graph reads the rate where it is (graphs.py)
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def freeze(model: nn.Module, what: str) -> None:
    """Fix parameters for fine-tuning: ``features`` (the five convolutions) or
    ``all-but-fc8`` (everything but the new last layer)."""
    if what == "none":
        return
    head = {id(p) for p in model.head_parameters()}
    frozen = model.features.parameters() if what == "features" else (
        p for p in model.parameters() if id(p) not in head)
    for p in frozen:
        p.requires_grad_(False)


# ---------------------------------------------------------------------------
# One epoch.

def _saved_draws(own: dict) -> tuple[str, list[torch.Tensor]]:
    """The kind of device a process's mid-epoch draws were saved on, and its GPUs' dropout
    states. Older checkpoints name no kind (a CUDA generator's state is 16 bytes, a CPU one's
    more) and hold one GPU's state or none."""
    cuda = own["cuda_rng"]
    cuda = [] if cuda is None else [cuda] if isinstance(cuda, torch.Tensor) else cuda
    return own.get("device", "cuda" if own["augment"].numel() == 16 else "cpu"), cuda


def seed_epoch(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed the global RNG (dropout) and return the augmentation generator for an epoch."""
    torch.manual_seed(seed * 1_000_003 + epoch * 7919 + rank)
    return torch.Generator(device=device).manual_seed(seed * 1_000_033 + epoch * 104_729 + rank)


def make_scaler(rt: Runtime) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (a no-op otherwise): training and the benchmark use this one."""
    return torch.amp.GradScaler(rt.device.type, enabled=rt.dtype is torch.float16)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rt: Runtime,
               x: torch.Tensor, labels: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under the runtime's autocast, backward through the scaler, update. Returns the
    loss and logits, detached, still on the device. ``weight`` 0 makes a step that changes
    nothing by itself, for a process with no images to take part in the others' step."""
    loss, logits = forward_backward(model, optimizer, scaler, rt, x, labels, weight)
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def forward_backward(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rt: Runtime,
                     x: torch.Tensor, labels: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of a step, not yet applied: ``train_step`` without the update."""
    with rt.autocast():
        logits = model(x)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss * weight if weight != 1.0 else loss).backward()
    return loss.detach(), logits.detach()


def guarded_step(model, optimizer, scaler, rt: Runtime, x, labels,
                 weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``train_step`` that leaves the weights alone when the loss is not finite on any process
    (a host sync per step): (loss, logits, whether the update was applied)."""
    loss, logits = forward_backward(model, optimizer, scaler, rt, x, labels, weight)
    bad = distributed.all_reduce_sum((~torch.isfinite(loss)).double().reshape(1))
    if bad.item() > 0:
        optimizer.zero_grad(set_to_none=True)
        return loss, logits, False
    scaler.step(optimizer)
    scaler.update()
    return loss, logits, True


def _idle_step(model, optimizer, scaler, rt: Runtime, crop: int, guarded: bool) -> None:
    """Under DistributedDataParallel every process must join every step's gradient
    all-reduce: a process whose whole batch was unreadable steps on one blank image with
    zero weight, so it contributes nothing and applies the others' average like them; with
    --skip-nonfinite (``guarded``) it also joins their vote on whether the loss was finite."""
    x = rt.prepare(torch.zeros(1, 3, crop, crop, device=rt.device))
    labels = torch.zeros(1, dtype=torch.long, device=rt.device)
    (guarded_step if guarded else train_step)(model, optimizer, scaler, rt, x, labels, weight=0.0)


@dataclass
class EpochState:
    """The loop's state inside an epoch, which a checkpoint taken mid-epoch holds: the next
    step and the epoch's sums so far (on the device: no host sync per step)."""

    step: int
    sums: torch.Tensor  # (2,) float64: loss sum, correct
    trace: torch.Tensor  # (steps, 3) float64: each step's loss sum, correct, images; (0, 3) without --trace-steps
    images: int = 0
    skipped: int = 0
    skipped_files: list = field(default_factory=list)
    elapsed: float = 0.0  # seconds of this epoch before the current process took it up
    nonfinite: int = 0  # batches skipped because their loss was not finite (--skip-nonfinite)
    bad: torch.Tensor | None = None  # the first step whose loss was not finite (-1: none), on the device

    def __post_init__(self) -> None:
        if self.bad is None:
            self.bad = torch.full((), -1, dtype=torch.long, device=self.sums.device)

    def check_finite(self, epoch: int) -> None:
        """Stop on a non-finite loss, naming its step (a host sync: called every 10 steps and
        before any checkpoint, so that no checkpoint ever holds the diverged weights)."""
        bad = int(self.bad)
        if bad >= 0:
            raise AlexNetError(f"training diverged: the loss was not finite at step {bad + 1} of epoch {epoch + 1}; "
                               "the last checkpoint is kept as it was; lower --lr or add --warmup-epochs")

    @classmethod
    def fresh(cls, steps: int, trace: bool, device: torch.device) -> "EpochState":
        return cls(0, torch.zeros(2, dtype=torch.float64, device=device),
                   torch.zeros(steps if trace else 0, 3, dtype=torch.float64, device=device))

    def state_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("step", "images", "skipped", "skipped_files", "elapsed", "nonfinite")},
                "sums": self.sums.cpu(), "trace": self.trace.cpu()}

    @classmethod
    def from_state_dict(cls, d: dict, device: torch.device) -> "EpochState":
        return cls(d["step"], d["sums"].to(device), d["trace"].to(device), d["images"], d["skipped"],
                   list(d["skipped_files"]), d["elapsed"], d.get("nonfinite", 0))


@dataclass
class Learner:
    """What every training step uses, built once per run: the network as the loop calls it
    (under DDP and torch.compile), its optimiser, schedule and loss scaler, the augmentation,
    the runtime, and how a step runs. ``skip_nonfinite`` N > 0: a batch whose loss is not finite
    is skipped (the weights untouched), up to N an epoch. ``step_fn``: ``train_step`` or its
    CUDA-graphed replay (``graphs.GraphedStep``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    augment: TrainAugment
    rt: Runtime
    step_fn: Callable = train_step
    skip_nonfinite: int = 0


def train_one_epoch(learner: Learner, batches: data_loader.Batches, epoch: int, generator: torch.Generator,
                    state: EpochState | None = None, after_step: Callable[[EpochState], None] | None = None,
                    trace: bool = False, progress: bool = True, log_every: float = 30.0) -> dict:
    """One pass over ``batches``, from ``state``'s step when resuming inside the epoch; with
    ``trace`` the record also holds every step's training loss and error (``trace_loss``,
    ``trace_error``: the curves of the paper's Fig. 1). ``after_step(state)`` runs after
    every step (mid-epoch checkpoints, stopping on a signal)."""
    rt = learner.rt
    learner.model.train()
    state = state or EpochState.fresh(len(batches), trace, rt.device)
    batches.set_epoch(epoch, state.step)
    bar = Progress(len(batches), f"epoch {epoch + 1}", enabled=progress and rt.env.is_main, log_every=log_every,
                   start=state.step)
    start = time.perf_counter() - state.elapsed
    for batch in batches:
        _one_step(learner, batch, epoch, generator, state)
        state.step += 1
        if state.step % 10 == 0 or state.step == len(batches):
            state.check_finite(epoch)
        if bar.enabled and (state.step % 10 == 1 or state.step == len(batches)):  # a host sync every 10 steps
            loss_sum, correct = state.sums.tolist()
            seen = max(state.images, 1)  # the first batches may all have been unreadable
            bar.update(state.step - bar.count, loss=loss_sum / seen, acc=correct / seen,
                       img_s=f"{state.images * rt.env.world / (time.perf_counter() - start):.0f}")
        if after_step is not None:
            state.elapsed = time.perf_counter() - start
            after_step(state)
    bar.close()
    return (_epoch_stats(state.sums, state.images, state.skipped, state.skipped_files, start, epoch, rt)
            | _trace(state.trace) | ({"nonfinite_skipped": state.nonfinite} if learner.skip_nonfinite else {}))


def _endless(batches: data_loader.Batches):
    """Epoch 0's batches, over and over (the planning steps of a small data set)."""
    batches.set_epoch(0)
    while True:
        yield from batches


def _one_step(learner: Learner, batch, epoch: int, generator: torch.Generator, state: EpochState) -> None:
    model, optimizer, scaler, rt = learner.model, learner.optimizer, learner.scaler, learner.rt
    step = state.step
    state.skipped += len(batch.skipped)
    state.skipped_files += batch.skipped[: 10 - len(state.skipped_files)]
    set_lr(optimizer, learner.schedule.lr(epoch, step))
    if batch.labels.numel() == 0:
        if distributed.is_active():
            _idle_step(model, optimizer, scaler, rt, learner.augment.crop, learner.skip_nonfinite > 0)
        return
    x = rt.prepare(learner.augment(batch.images, generator))  # (B, 3, crop, crop)
    if learner.skip_nonfinite:
        loss, logits, applied = guarded_step(model, optimizer, scaler, rt, x, batch.labels)
        if not applied:
            _skip_nonfinite(state, epoch, step, learner.skip_nonfinite, rt)
            return
    else:
        loss, logits = learner.step_fn(model, optimizer, scaler, rt, x, batch.labels)
    state.bad = torch.where((state.bad < 0) & ~torch.isfinite(loss), step, state.bad)  # no host sync
    state.images += batch.labels.numel()
    step_stats = torch.stack([loss.double() * batch.labels.numel(), (logits.argmax(1) == batch.labels).sum()])
    state.sums += step_stats
    if len(state.trace):
        state.trace[step, :2] = step_stats
        state.trace[step, 2] = batch.labels.numel()


def _skip_nonfinite(state: EpochState, epoch: int, step: int, cap: int, rt: Runtime) -> None:
    state.nonfinite += 1
    if state.nonfinite > cap:
        raise AlexNetError(f"training diverged: {state.nonfinite} batches of epoch {epoch + 1} had a loss that was "
                           f"not finite, more than --skip-nonfinite {cap}; the last checkpoint is kept as it was")
    if rt.env.is_main:
        print(f"alexnet: skipped step {step + 1} of epoch {epoch + 1}: its loss was not finite "
              f"({state.nonfinite} of at most {cap} this epoch)", flush=True)


def _trace(steps: torch.Tensor) -> dict:
    """Per-step training loss and error, over all processes (steps with no images left out)."""
    if not len(steps):
        return {}
    steps = distributed.all_reduce_sum(steps.clone()).cpu()
    steps = steps[steps[:, 2] > 0]
    return {"trace_loss": [round(v, 5) for v in (steps[:, 0] / steps[:, 2]).tolist()],
            "trace_error": [round(v, 5) for v in (1 - steps[:, 1] / steps[:, 2]).tolist()]}


def _epoch_stats(dev_stats: torch.Tensor, images: int, skipped: int, skipped_files: list[str], start: float,
                 epoch: int, rt: Runtime) -> dict:
    """The epoch's figures, summed over processes."""
    counts = torch.tensor([float(images), float(skipped)], dtype=torch.float64)
    stats = torch.cat([dev_stats, counts.to(rt.device)])
    stats = distributed.all_reduce_sum(stats).cpu()  # the host waits for the epoch's work here
    elapsed = time.perf_counter() - start
    skipped_files = distributed.gather_lists(skipped_files)[:10]
    images = max(int(stats[2]), 1)
    return {"train_loss": float(stats[0]) / images, "train_top1": float(stats[1]) / images,
            "train_images": int(stats[2]), "skipped": int(stats[3]), "skipped_files": skipped_files,
            "epoch_time": elapsed, "images_per_sec": images / elapsed}


# ---------------------------------------------------------------------------
# The whole run.

def _log(rt: Runtime, *args) -> None:
    if rt.env.is_main:
        print(*args, flush=True)


def _prepare_run(cfg: TrainConfig, resume: bool, overrides: dict | None) -> tuple[TrainConfig, RunState | None]:
    """The config to run with (a resumed run's own, with ``overrides``), and the checkpoint when resuming."""
    ckpt = None
    if resume:
        ckpt = RunState.load(RunDir(cfg.out).checkpoint)
        saved = from_dict(ckpt.config)
        saved.out = cfg.out
        cfg = saved
        if saved.optim.time_budget and overrides:
            overrides = _keep_plan(saved.optim, overrides)
    if overrides:
        cfg = apply_overrides(from_dict(to_dict(cfg)), overrides)  # on a copy: the caller's stays as it was
    return cfg, ckpt


def _keep_plan(saved: OptimConfig, overrides: dict) -> dict:
    """A resumed run that planned its epochs to a time budget keeps them: the same command
    again (``--resume auto``) continues as planned, and ``--epochs`` can only lower them;
    ``--time-budget 0`` with ``--epochs`` sets them anew."""
    given = overrides.get("time_budget", saved.time_budget)
    if given == 0:
        return overrides
    if given != saved.time_budget:
        raise AlexNetError(f"this run planned {saved.epochs} epochs to --time-budget {saved.time_budget:g}; a "
                           "resumed run keeps its plan: resume with the same budget, or with --time-budget 0 "
                           "and --epochs N")
    return {**overrides, "epochs": min(overrides.get("epochs", saved.epochs), saved.epochs),
            "epoch_steps": saved.epoch_steps}


def _check_out(out: Path, resumed: bool, overwrite: bool) -> None:
    if resumed or overwrite:
        return
    taken = distributed.broadcast_object(RunDir(out).checkpoint.exists()  # rank 0 looks: other nodes
                                         if distributed.from_environment().is_main else None)  # may not share its disk
    if taken:
        raise AlexNetError(f"{out} already holds a run; continue it with --resume {out}, "
                           "or pass --overwrite or another --out")


@dataclass
class Start:
    """What a run starts from, resolved once before anything is built (``resolve``)."""

    cfg: TrainConfig  # final, but for the epochs a --time-budget plans (Run.plan_epochs), then recorded
    ckpt: RunState | None  # the checkpoint a resumed run continues from
    pretrained: tuple[nn.Module, Normalizer] | None  # the weights a fine-tuning run starts from
    rt: Runtime
    splits: data_loader.Splits


def resolve(cfg: TrainConfig, resume: bool, overrides: dict | None, overwrite: bool) -> Start:
    """The configuration in one pass, each step on a copy: a resumed run's own (with
    ``overrides``); the runtime, and a refusal of an ``--out`` that holds another run; then what
    the weights it starts from fix (network, sizes, structure); then the networks' defaults;
    every flag checked before any data are read; then the data, which fix the class count."""
    cfg, ckpt = _prepare_run(cfg, resume, overrides)
    rt = resolve_runtime(cfg)  # the device and the process group: nothing it reads comes from the weights
    _check_out(Path(cfg.out), ckpt is not None, overwrite)  # before any weights are loaded, or downloaded
    pretrained = None
    if cfg.model.weights and ckpt is None:
        model, normalizer, meta = load_model(cfg.model.weights)
        cfg, pretrained = adopt_weights(cfg, meta), (model, normalizer)
    cfg = resolve_defaults(cfg)
    validate(cfg)
    rt = dataclasses.replace(rt, graphed=graphs.wanted(cfg, rt.device, rt.env.world))
    splits = _splits(cfg, rt)
    return Start(adopt_classes(cfg, splits.classes), ckpt, pretrained, rt, splits)


def _splits(cfg: TrainConfig, rt: Runtime) -> data_loader.Splits:
    d, o = cfg.data, cfg.optim
    req = data_loader.Request(splits=("train", "val"), batch_size=o.batch_size, holdout=d.holdout,
                              limit_train=d.limit_train, limit_val=d.limit_val, workers=d.workers,
                              gpu_decode=d.gpu_decode, cache=d.cache, cache_format=d.cache_format, seed=cfg.seed, rank=rt.env.rank, world=rt.env.world,
                              fashion_mnist_dir=d.fashion_mnist_dir or None)
    splits = data_loader.build(d.data, d.resize, rt.device, req)
    splits.train.max_batches = o.epoch_steps
    if len(splits.train) == 0:
        splits.close()
        raise AlexNetError(f"too few training images for one batch of {o.batch_size}")
    return splits


def mean_image(batches: data_loader.Batches, samples: int) -> torch.Tensor:
    """The mean preprocessed training image, (3, S, S) in [0, 1], over ``samples`` images in a
    fixed random order (the paper uses the whole training set; 10,000 images give the mean
    to well under a grey level). Each process sums its share; the sums are added up."""
    total, count = data_loader.image_sum(batches, -(-samples // batches.world))
    stats = torch.cat([total.flatten(), torch.tensor([float(count)], dtype=torch.float64, device=total.device)])
    stats = distributed.all_reduce_sum(stats)
    return (stats[:-1].view_as(total) / stats[-1] / 255).float().cpu()


def _model(cfg: TrainConfig, splits: data_loader.Splits, ckpt: RunState | None,
           pretrained: tuple | None) -> tuple[nn.Module, Normalizer]:
    """The network (fresh, resumed or to fine-tune) and its normaliser."""
    torch.manual_seed(cfg.seed)
    if pretrained is not None:
        model, normalizer = pretrained
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.model.dropout  # a training choice: the run's, not the weights'
        if model.num_classes != cfg.model.num_classes:
            model.reset_classifier(cfg.model.num_classes)  # a new fc8 for the new classes
    else:
        model = create_model(cfg.model.variant, cfg.model.num_classes, **model_options(cfg.model))
        if ckpt is not None:
            load_state(model, ckpt.model, str(RunDir(cfg.out).checkpoint))
            normalizer = Normalizer.from_state_dict(ckpt.normalizer)
        elif cfg.data.normalize == "channel":
            normalizer = Normalizer.channel()
        else:
            normalizer = Normalizer.mean_image(mean_image(splits.train, cfg.data.mean_samples))
    freeze(model, cfg.model.freeze)
    return model, normalizer


def _place(model: nn.Module, rt: Runtime) -> nn.Module:
    """The network on its device(s), in its memory format."""
    model = TwoTowerAlexNet(model, rt.towers) if rt.towers else model.to(rt.device)  # tower t on rt.towers[t]
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def _wrap(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> nn.Module:
    """What the loop calls: the network under DistributedDataParallel (several processes) and
    torch.compile (--compile)."""
    if rt.env.world > 1:
        # A module spanning two devices (--model-parallel) takes no device_ids. Gradients live in
        # DDP's buckets (views, in each parameter's own layout): no copy into the buckets per step.
        single_gpu = rt.device.type == "cuda" and not rt.towers
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if single_gpu else None,
                                                    gradient_as_bucket_view=True)
    return torch.compile(model) if cfg.compile else model


class Run:
    """One training run: built once from the config (and a checkpoint when resuming), then
    trained an epoch at a time, checkpointed (at epoch ends, inside epochs, on a signal) and
    finished. Everything the loop needs lives here, so each of those is a method of a few lines.

    ``model`` is the plain network (what is saved); ``train_model`` what the loop calls (under
    DDP and torch.compile); ``position`` where a mid-epoch checkpoint left ``start_epoch``."""

    def __init__(self, start: Start) -> None:
        cfg, ckpt = start.cfg, start.ckpt
        self.cfg, self.rt, self.splits, self.resumed = cfg, start.rt, start.splits, ckpt is not None
        self.out, self.rundir = Path(cfg.out), RunDir(cfg.out)
        model, self.normalizer = _model(cfg, self.splits, ckpt, start.pretrained)
        step_mode = fastconv.mode(cfg.compile, self.rt.graphed)
        choices = fastconv.resolve(cfg.model.variant, self.rt.device.type, step_mode, cfg.tower_conv, cfg.conv1,
                                   cfg.pools, self.rt.channels_last)
        self.model = fastconv.use(_place(model, self.rt), **choices)  # the same parameters
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = LRSchedule(cfg.optim, len(self.splits.train))
        self.history, self.start_epoch, self.position = [], 0, None
        if ckpt is not None:
            self._load_state(ckpt)
        self.train_model = _wrap(self.model, cfg, self.rt)
        self.meta_base = dict(variant=cfg.model.variant, classes=self.splits.classes, crop=cfg.data.crop,
                              resize=cfg.data.resize)
        d, norm = cfg.data, self.normalizer.to(self.rt.device)
        augment = TrainAugment(norm, d.crop, d.random_crop, d.flip, d.lighting, self.rt.dtype, self.rt.channels_last)
        self.learner = Learner(self.train_model, self.optimizer, self.schedule, make_scaler(self.rt), augment, self.rt,
                               GraphedStep(train_step) if self.rt.graphed else train_step, cfg.optim.skip_nonfinite)
        self.center = EvalCrops(norm, d.crop, ten_crop=False)
        self.final_crops = EvalCrops(norm, d.crop, ten_crop=cfg.ten_crop)
        self.board: Board | None = None  # TensorBoard (--tensorboard), opened with the run directory

    def _load_state(self, ckpt: RunState) -> None:
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except ValueError:  # the parameters are laid out differently (one device or two, groups)
            raise AlexNetError(f"{self.rundir.checkpoint}: the optimizer state does not fit these parameter "
                               "groups; resume with the run's own --model-parallel, --freeze and multiplier "
                               "settings") from None
        self.schedule.load_state_dict(ckpt.schedule)
        self.history, self.start_epoch = list(ckpt.history), int(ckpt.epoch)
        self.position = ckpt.position

    def plan_epochs(self, started: float) -> budget.Plan:
        """--time-budget: the epochs set to as many as fit (training/budget.py), timed on the
        first epoch's first steps, which are then undone; before config.json and the schedule
        see them. A resumed run keeps the epochs it planned."""
        generator = seed_epoch(self.cfg.seed, 0, self.rt.env.rank, self.rt.device)
        state = EpochState.fresh(len(self.splits.train), False, self.rt.device)
        learner = dataclasses.replace(self.learner, skip_nonfinite=0)  # the per-epoch count is the run's
        batches = _endless(self.splits.train)
        try:
            plan = budget.fit_to_budget(lambda: _one_step(learner, next(batches), 0, generator, state),
                                        learner, self.splits, self.cfg, started)
        finally:
            batches.close()
        if isinstance(self.learner.step_fn, GraphedStep):  # its graph holds the optimiser state put back
            self.learner.step_fn = GraphedStep(train_step)
        self.cfg.optim.epochs = plan.epochs  # the schedule reads the same OptimConfig
        if plan.epoch_steps:  # shorter epochs: the loader's and the schedule's
            self.cfg.optim.epoch_steps = self.splits.train.max_batches = plan.epoch_steps
            self.schedule.steps_per_epoch = len(self.splits.train)
        return plan

    # -- the run directory --------------------------------------------------------------

    def open(self) -> None:
        """config.json and metrics.jsonl (exactly the epochs the checkpoint has: a kill between
        the two writes loses nothing); a fresh run (--overwrite) removes the earlier run's files,
        so a directory never mixes two runs. Then the run's first line."""
        if self.rt.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not self.resumed:
                self.rundir.clear()
            self.rundir.write_config(to_dict(self.cfg))
            self.rundir.write_metrics(self.history)
        steps = len(self.splits.train)
        done = self.start_epoch * steps + (self.position["ranks"][0]["state"]["step"] if self.position else 0)
        self.board = Board(self.rundir.board, self.cfg.tensorboard and self.rt.env.is_main, steps, resume_step=done)
        self._announce()

    def _announce(self) -> None:
        cfg, rt, d = self.cfg, self.rt, self.cfg.data
        crop = d.crop
        where = ", ".join(map(str, rt.towers)) + " (two towers)" if rt.towers else str(rt.device)
        where += ", the step replayed from a CUDA graph" if rt.graphed else ""
        if self.position:
            state = f"resuming in epoch {self.start_epoch + 1} after step {self.position['ranks'][0]['state']['step']}"
        else:
            state = f"resuming after epoch {self.start_epoch}" if self.resumed else f"run directory {self.out}"
        _log(rt, f"alexnet: {cfg.model.variant} network, {sum(p.numel() for p in self.model.parameters()):,} "
                 f"parameters, {cfg.model.num_classes} classes, input {crop}x{crop} from {d.resize}x{d.resize}; "
                 f"{self.splits.train.num_images:,} training images; {self.splits.describe_val()}; device {where}"
                 f"{f' x {rt.env.world} processes' if rt.env.world > 1 else ''}; {state}")

    # -- an epoch -------------------------------------------------------------------------

    def epoch(self, epoch: int, cadence: Cadence) -> tuple[dict, EvalResult]:
        """Train one epoch (from where a mid-epoch checkpoint left it) and validate: the epoch's
        record, and its validation result."""
        cfg, rt = self.cfg, self.rt
        generator = seed_epoch(cfg.seed, epoch, rt.env.rank, rt.device)
        state = self._restore(generator) if self.position else None
        self.position = None
        lr = self.schedule.lr(epoch, 0)
        stats = train_one_epoch(self.learner, self.splits.train, epoch, generator, state=state,
                                after_step=lambda st: self._after_step(epoch, generator, st, cadence),
                                trace=cfg.trace_steps, log_every=cfg.log_every)
        val = self.validate(self.center)
        dropped = self.schedule.end_epoch(val.top1_error)
        record = {"epoch": epoch + 1, "lr": lr, **stats, "val_loss": val.loss, "val_top1": val.top1,
                  "val_top5": val.top5, "val_top1_error": val.top1_error, "val_top5_error": val.top5_error,
                  "val_skipped": val.skipped}
        self._log_epoch(record, val, dropped)
        return record, val

    def validate(self, crops: EvalCrops) -> EvalResult:
        rt = self.rt
        return evaluate(self.train_model, self.splits.val, crops, split="val", autocast=rt.autocast(),
                        channels_last=rt.channels_last, progress=rt.env.is_main, log_every=self.cfg.log_every)

    def _log_epoch(self, record: dict, val: EvalResult, dropped: bool) -> None:
        _log(self.rt, f"epoch {record['epoch']}/{self.cfg.optim.epochs}: train loss {record['train_loss']:.4f} "
                      f"top-1 {100 * record['train_top1']:.2f}% | val top-1 {100 * val.top1:.2f}% "
                      f"top-5 {100 * val.top5:.2f}% | lr {record['lr']:.3g} | {record['epoch_time']:.0f}s "
                      f"{record['images_per_sec']:.0f} img/s"
                      + (f" | skipped {record['skipped']} unreadable" if record["skipped"] else "")
                      + (" | lr divided by 10" if dropped else ""))
        for path in record["skipped_files"]:  # "PATH (why)", the first ten
            _log(self.rt, f"  skipped {path}")

    # -- checkpoints ----------------------------------------------------------------------

    def save_epoch(self, record: dict) -> None:
        """The checkpoint (atomically), then the epoch's line of metrics.jsonl."""
        self.history.append(record)
        self.board.epoch(record, self.model)
        if self.rt.env.is_main:
            self.checkpoint(record["epoch"])
            self.rundir.append_metrics(record)
        distributed.barrier()

    def checkpoint(self, epochs_done: int, position: dict | None = None) -> None:
        """Everything the run needs to continue, atomically; ``position``: the place inside the
        next epoch (a checkpoint taken mid-epoch)."""
        RunState(config=to_dict(self.cfg), epoch=epochs_done, model=unwrap(self.model).state_dict(),
                 optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
                 normalizer=self.normalizer.state_dict(), history=self.history,
                 meta=metadata_record(self.model, **self.meta_base), position=position).save(self.rundir.checkpoint)

    def _position(self, epoch: int, generator: torch.Generator, state: EpochState) -> dict:
        """Every process's place inside ``epoch``: its sums so far and the random states (dropout,
        augmentation) the rest of the epoch draws from, so that it continues exactly."""
        own = {"state": state.state_dict(), "rng": torch.get_rng_state(), "device": generator.device.type,
               "augment": generator.get_state().cpu(),
               "cuda_rng": [torch.cuda.get_rng_state(d) for d in self._cuda_devices()]}  # dropout, each tower's
        return {"epoch": epoch, "ranks": distributed.gather_lists([own])}

    def _cuda_devices(self) -> list[torch.device]:
        return [d for d in dict.fromkeys(self.rt.devices) if d.type == "cuda"]

    def _restore(self, generator: torch.Generator) -> EpochState:
        """This process's random states and sums from a mid-epoch checkpoint."""
        ranks, rt = self.position["ranks"], self.rt
        if len(ranks) != rt.env.world:
            raise AlexNetError(f"the checkpoint was taken inside an epoch by {len(ranks)} process(es); "
                               f"resume it with as many (this run has {rt.env.world})")
        own = ranks[rt.env.rank]
        torch.set_rng_state(own["rng"])
        self._restore_draws(own, generator)
        return EpochState.from_state_dict(own["state"], rt.device)

    def _restore_draws(self, own: dict, generator: torch.Generator) -> None:
        """The augmentation's and the GPUs' dropout states, where they can seed this run's: a CPU
        generator's state cannot seed a CUDA one, nor the reverse."""
        kind, cuda = _saved_draws(own)
        where = f"the checkpoint was taken inside epoch {self.position['epoch'] + 1} on {kind} and continues"
        if kind != generator.device.type:
            self._warn(f"{where} on {generator.device.type}: the rest of that epoch draws other crops, flips and "
                       "dropout masks than an uninterrupted run (an exact resume needs the same kind of device)")
            return
        generator.set_state(own["augment"])  # a ByteTensor on the host, for a CUDA generator too
        devices = self._cuda_devices()
        for state, device in zip(cuda, devices):  # tower 1's first: older checkpoints hold its alone
            torch.cuda.set_rng_state(state, device)
        if len(cuda) != len(devices):
            self._warn(f"{where} with the dropout state of {len(cuda)} GPU(s) for {len(devices)}: the rest of that "
                       "epoch draws other dropout masks on the others than an uninterrupted run")

    def _warn(self, message: str) -> None:
        if self.rt.env.is_main:
            print(f"alexnet: warning: {message}", file=sys.stderr)

    def _after_step(self, epoch: int, generator: torch.Generator, state: EpochState, cadence: Cadence) -> None:
        """TensorBoard's training points; a checkpoint inside the epoch when ``--checkpoint-every``
        says so, and the stop on a signal."""
        self.board.step(epoch, state)
        save, stop = cadence.check()
        if not save or (state.step == len(self.splits.train) and not stop):  # the epoch's own checkpoint follows
            return
        state.check_finite(epoch)
        position = self._position(epoch, generator, state)
        if self.rt.env.is_main:
            self.checkpoint(epoch, position)
        distributed.barrier()
        if stop:
            self._stop(cadence.stop.signum, epoch, state.step)

    def _stop(self, signum: int, epoch: int, step: int) -> None:
        _log(self.rt, f"alexnet: stopped by {signal.Signals(signum).name} in epoch {epoch + 1} after step {step}/"
                      f"{len(self.splits.train)}; checkpoint {self.rundir.checkpoint}; continue with: "
                      f"alexnet train --resume {self.out}")
        self.board.close()
        self.splits.close()
        distributed.teardown()
        raise SystemExit(128 + signum)

    # -- the end --------------------------------------------------------------------------

    def finish(self, last_val: EvalResult | None) -> dict:
        """The final validation figure (10-crop with --ten-crop) and the weights file."""
        cfg, rt = self.cfg, self.rt
        # the last epoch's center-crop validation is the final center-crop result
        final = self.validate(self.final_crops) if cfg.ten_crop or last_val is None else last_val
        _log(rt, f"final: {final.summary()}")
        if rt.env.is_main:
            meta = metadata_record(self.model, **self.meta_base, accuracy=final.as_dict(), epochs=len(self.history),
                                   holdout=self.splits.holdout, config=to_dict(cfg))
            save_weights(self.rundir.weights, self.model, self.normalizer, meta)
            _log(rt, f"weights: {self.rundir.weights}")
        self.board.finish(to_dict(cfg), final.as_dict())
        self.splits.close()
        distributed.barrier()  # the group ends together, not with one process gone while another writes
        distributed.teardown()
        return {"final": final.as_dict(), "history": self.history, "out": str(self.out)}


def reached_train_error(cfg: TrainConfig, history: list[dict]) -> bool:
    """Whether ``--stop-at-train-error`` is set and the smoothed training error has reached it."""
    target = cfg.optim.stop_at_train_error
    if not target:
        return False
    trace = [e for h in history for e in h.get("trace_error", [])]
    return steps_to(trace, target, smooth_window(len(history[0].get("trace_error", [])))) is not None


def fit(cfg: TrainConfig, resume: bool = False, overrides: dict | None = None, overwrite: bool = False,
        started: float | None = None) -> dict:
    """Train as ``cfg`` says, validating every epoch; returns the final metrics.

    Validation uses the data's val split, or images held out of the training set
    (``--holdout``); a test split is never looked at here (``alexnet evaluate --split test``).
    With ``resume``, the config stored in ``cfg.out``'s checkpoint is used, with
    ``overrides`` (flag name -> value, e.g. ``{"epochs": 120}``) applied on top.
    A new run refuses an ``out`` that already holds one, unless ``overwrite``.
    A ``--time-budget`` counts from ``started`` (a ``time.perf_counter()`` reading; the
    commands pass their own start, so that their imports count), else from this call.
    """
    started = time.perf_counter() if started is None else started
    run = Run(resolve(cfg, resume, overrides, overwrite))
    cfg = run.cfg
    try:
        plan = run.plan_epochs(started) if cfg.optim.time_budget and not run.resumed else None
    except BaseException:  # nothing written yet; the loader's processes and the group end here
        run.splits.close()
        distributed.teardown()
        raise
    run.open()
    if plan is not None:
        _log(run.rt, plan.describe(cfg.optim.time_budget))
    last_val = None
    try:
        with StopRequest() as stop:
            cadence = Cadence(cfg.checkpoint_every, stop, run.rt.env.world, run.rt.device)
            for epoch in range(run.start_epoch, cfg.optim.epochs):
                if run.history and reached_train_error(cfg, run.history):  # checked here too for a resumed run
                    _log(run.rt, f"training error reached {cfg.optim.stop_at_train_error:.0%} "
                                 f"(--stop-at-train-error): stopped after epoch {epoch}")
                    break
                record, last_val = run.epoch(epoch, cadence)
                run.save_epoch(record)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint of this epoch
        _log(run.rt, f"\ninterrupted; continue with: alexnet train --resume {run.out}")
        raise SystemExit(130) from None
    return run.finish(last_val)
