"""Training: the paper's recipe, ``train_one_epoch``, and ``fit(cfg)``.

The run directory receives ``config.json`` (the resolved config), one line of
``metrics.jsonl`` per epoch, ``checkpoint.pt`` after every epoch (atomically),
and ``model.safetensors`` at the end. ``fit(cfg, resume=True)`` continues from
``checkpoint.pt``; because every random draw of an epoch (order, crops, flips,
colour noise, dropout) is seeded from (seed, epoch), a resumed CPU run repeats
the uninterrupted run's later epochs exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .checkpoint import (CHECKPOINT_NAME, WEIGHTS_NAME, atomic_write_text, load_checkpoint, load_model,
                         load_state, metadata_record, save_checkpoint, save_weights, unwrap)
from .config import OptimConfig, TrainConfig, apply_overrides, crop_size, from_dict, to_dict, validate
from .data import loader as data_loader
from .data.transforms import EvalCrops, Normalizer, TrainAugment
from .errors import AlexNetError
from .evaluate import evaluate
from .models import create_model
from .progress import Progress
from .towers import TwoTowerAlexNet, resolve_devices


# ---------------------------------------------------------------------------
# Runtime switches: device, precision, memory format, each decided in one place.

@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool
    env: distributed.Env
    towers: tuple[torch.device, torch.device] | None = None  # --model-parallel: the two towers' devices

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlexNetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError("--device cuda was asked for, but no CUDA device is available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    env = distributed.from_environment()
    towers = resolve_devices(cfg.model_parallel, env.local_rank) if cfg.model_parallel else None
    # With the towers split, the batch, the loss and the metrics live on tower 1's device.
    device = towers[0] if towers else resolve_device(cfg.device, env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise AlexNetError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    env = distributed.setup(device)
    return Runtime(device, dtype, channels_last, env, towers)


# ---------------------------------------------------------------------------
# The learning-rate schedule.

class LRSchedule:
    """The paper's schedule and two alternatives, with optional linear warm-up.

    ``plateau`` (paper): divide by 10 when validation error has not improved for
    ``patience`` epochs, at most ``max_drops`` times. ``step``: divide by 10 every
    ``step_epochs``, at most ``max_drops`` times. ``cosine``: per-step cosine
    decay to zero over the run, for short budgets.
    """

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int) -> None:
        self.cfg, self.steps_per_epoch = cfg, max(steps_per_epoch, 1)
        self.drops, self.best, self.bad_epochs = 0, math.inf, 0

    def lr(self, epoch: int, step: int) -> float:
        c, base = self.cfg, base_lr(self.cfg)
        t = epoch + step / self.steps_per_epoch  # epochs elapsed, fractional
        if c.schedule == "cosine":
            lr = 0.5 * base * (1 + math.cos(math.pi * min(t / c.epochs, 1.0)))
        elif c.schedule == "step":
            lr = base * 0.1 ** min(int(t // c.step_epochs), c.max_drops)
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
    """SGD with momentum and weight decay on every trainable parameter, as in the paper
    (section 5); the last layer's group carries ``head_lr_mult``."""
    impl = {"fused": True} if cfg.fused else {"foreach": True}
    head = _head_ids(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in head], "lr_mult": 1.0},
              {"params": [p for p in trainable if id(p) in head], "lr_mult": cfg.head_lr_mult}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=base_lr(cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay, **impl)


def _head_ids(model: nn.Module) -> set[int]:
    """The last layer's parameters (fc8: ``classifier.fc8`` or ``classifier.6``)."""
    return {id(p) for p in model.head_parameters()}


def freeze(model: nn.Module, what: str) -> None:
    """Fix parameters for fine-tuning: ``features`` (the five convolutions) or
    ``all-but-fc8`` (everything but the new last layer)."""
    if what == "none":
        return
    head = _head_ids(model)
    frozen = model.features.parameters() if what == "features" else (
        p for p in model.parameters() if id(p) not in head)
    for p in frozen:
        p.requires_grad_(False)


# ---------------------------------------------------------------------------
# One epoch.

def seed_epoch(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed the global RNG (dropout) and return the augmentation generator for an epoch."""
    torch.manual_seed(seed * 1_000_003 + epoch * 7919 + rank)
    return torch.Generator(device=device).manual_seed(seed * 1_000_033 + epoch * 104_729 + rank)


def train_one_epoch(model: nn.Module, batches: data_loader.Batches, augment: TrainAugment,
                    optimizer: torch.optim.Optimizer, schedule: LRSchedule, epoch: int, rt: Runtime,
                    generator: torch.Generator, scaler: torch.amp.GradScaler, progress: bool = True,
                    log_every: float = 30.0) -> dict:
    model.train()
    batches.set_epoch(epoch)
    stats = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 correct, images, skipped
    dev_stats = torch.zeros(2, device=rt.device)  # loss sum, correct (kept on device: no sync per step)
    bar = Progress(len(batches), f"epoch {epoch + 1}", enabled=progress and rt.env.is_main, log_every=log_every)
    start = time.perf_counter()
    skipped_files: list[str] = []
    for step, batch in enumerate(batches):
        stats[3] += len(batch.skipped)
        skipped_files += batch.skipped[: 10 - len(skipped_files)]
        n = batch.labels.numel()
        if n == 0:
            continue
        lr = schedule.lr(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        x = rt.prepare(augment(batch.images, generator))  # (B, 3, crop, crop)
        with rt.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            dev_stats[0] += loss.detach().float() * n
            dev_stats[1] += (logits.argmax(1) == batch.labels).sum()
        stats[2] += n
        if bar.enabled and (step % 10 == 0 or step == len(batches) - 1):  # a host sync every 10 steps
            loss_sum, correct = dev_stats.tolist()
            seen = stats[2].item()
            bar.update(step + 1 - bar.count, loss=loss_sum / seen, acc=correct / seen,
                       img_s=f"{seen * rt.env.world / (time.perf_counter() - start):.0f}")
    bar.close()
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    elapsed = time.perf_counter() - start
    stats[0], stats[1] = dev_stats.double().cpu()
    if distributed.is_active():
        stats = distributed.all_reduce_sum(stats.to(rt.device if rt.device.type == "cuda" else "cpu")).cpu()
        skipped_files = distributed.gather_lists(skipped_files)[:10]
    if not math.isfinite(stats[0].item()):
        raise AlexNetError(f"training diverged in epoch {epoch + 1} (loss is not finite); lower --lr")
    images = max(int(stats[2]), 1)
    return {"train_loss": float(stats[0]) / images, "train_top1": float(stats[1]) / images,
            "train_images": int(stats[2]), "skipped": int(stats[3]), "skipped_files": skipped_files,
            "epoch_time": elapsed,
            "images_per_sec": images / elapsed}


# ---------------------------------------------------------------------------
# The whole run.

def _log(rt: Runtime, *args) -> None:
    if rt.env.is_main:
        print(*args, flush=True)


def _prepare_run(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, dict | None]:
    """The config to run with, and the checkpoint when resuming."""
    if not resume:
        return cfg, None
    ckpt = load_checkpoint(Path(cfg.out) / CHECKPOINT_NAME)
    saved = from_dict(ckpt["config"])
    saved.out = cfg.out
    return saved, ckpt


def _start_from(cfg: TrainConfig) -> tuple[nn.Module, Normalizer]:
    """Load ``cfg.model.weights`` (fine-tuning) and make the config agree with them:
    variant, input sizes and network options come from the weights."""
    model, normalizer, meta = load_model(cfg.model.weights)
    cfg.model.variant = meta["variant"]
    cfg.data.resize, cfg.data.crop = meta["resize"], meta["input_size"]
    kwargs = meta.get("model_kwargs", {})
    cfg.model.lrn = kwargs.get("lrn", cfg.model.lrn)
    cfg.model.lrn_k = kwargs.get("lrn_k", cfg.model.lrn_k)
    cfg.model.lrn_span = kwargs.get("lrn_span", "all")
    return model, normalizer


def fit(cfg: TrainConfig, resume: bool = False, overrides: dict | None = None, overwrite: bool = False) -> dict:
    """Train as ``cfg`` says, validating every epoch; returns the final metrics.

    With ``resume``, the config stored in ``cfg.out``'s checkpoint is used, with
    ``overrides`` (flag name -> value, e.g. ``{"epochs": 120}``) applied on top.
    A new run refuses an ``out`` that already holds one, unless ``overwrite``.
    """
    cfg, ckpt = _prepare_run(cfg, resume)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    pretrained = _start_from(cfg) if cfg.model.weights and ckpt is None else None
    validate(cfg)
    rt = resolve_runtime(cfg)
    out = Path(cfg.out)
    if ckpt is None and not overwrite:  # rank 0 looks: other nodes may not share its disk
        taken = distributed.broadcast_object((out / CHECKPOINT_NAME).exists() if rt.env.is_main else None)
        if taken:
            raise AlexNetError(f"{out} already holds a run; continue it with --resume {out}, "
                               "or pass --overwrite or another --out")
    crop = crop_size(cfg)
    d, o = cfg.data, cfg.optim

    splits = data_loader.build(
        d.data, d.resize, o.batch_size, rt.device, workers=d.workers, seed=cfg.seed, rank=rt.env.rank,
        world=rt.env.world, limit_train=d.limit_train, limit_val=d.limit_val,
        fashion_mnist_dir=d.fashion_mnist_dir or None, gpu_decode=d.gpu_decode)
    if len(splits.train) == 0:
        raise AlexNetError(f"too few training images for one batch of {o.batch_size}")
    num_classes = cfg.model.num_classes or len(splits.classes)
    if num_classes != len(splits.classes):
        raise AlexNetError(f"--num-classes {num_classes} does not match the data's {len(splits.classes)} classes")
    cfg.model.num_classes = num_classes
    model_kwargs = {"dropout": cfg.model.dropout, "init": cfg.model.init}
    if cfg.model.variant == "paper":
        model_kwargs.update(lrn=cfg.model.lrn, lrn_k=cfg.model.lrn_k, lrn_span=cfg.model.lrn_span)

    torch.manual_seed(cfg.seed)
    if pretrained is not None:
        model, normalizer = pretrained
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)  # a new fc8 for the new classes
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.model.dropout
    else:
        model = create_model(cfg.model.variant, num_classes, **model_kwargs)
        if ckpt is not None:
            load_state(model, ckpt["model"], str(out / CHECKPOINT_NAME))
            normalizer = Normalizer.from_state_dict(ckpt["normalizer"])
        elif d.normalize == "channel":
            normalizer = Normalizer.channel()
        else:
            normalizer = Normalizer.mean_image(data_loader.estimate_mean_image(splits.train, d.mean_samples))
    freeze(model, cfg.model.freeze)
    if rt.towers:
        model = TwoTowerAlexNet(model, rt.towers)  # the same network, tower t on rt.towers[t]
    else:
        model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, o)
    schedule = LRSchedule(o, len(splits.train))
    history: list[dict] = []
    start_epoch = 0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError:  # the parameters are laid out differently (one device or two)
            raise AlexNetError(f"{out / CHECKPOINT_NAME}: the optimizer state does not fit; resume with the "
                               "run's own --model-parallel setting") from None
        schedule.load_state_dict(ckpt["schedule"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])

    train_model: nn.Module = model
    if rt.env.world > 1:
        # A module spanning two devices (--model-parallel) takes no device_ids.
        single_gpu = rt.device.type == "cuda" and not rt.towers
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if single_gpu else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    dev_norm = normalizer.to(rt.device)
    augment = TrainAugment(dev_norm, crop, d.random_crop, d.flip, d.lighting)
    center = EvalCrops(dev_norm, crop, ten_crop=False)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype is torch.float16)
    meta_base = dict(variant=cfg.model.variant, classes=splits.classes, crop=crop, resize=d.resize,
                     model_kwargs={k: v for k, v in model_kwargs.items() if k != "init"})

    if rt.env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt is None:  # --overwrite: the earlier run's files go, so the directory never mixes two runs
            for name in (CHECKPOINT_NAME, WEIGHTS_NAME):
                (out / name).unlink(missing_ok=True)
        atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
        # The log holds exactly the epochs the checkpoint has (a kill between the two writes loses nothing).
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    n_params = sum(p.numel() for p in model.parameters())
    _log(rt, f"alexnet: {cfg.model.variant} network, {n_params:,} parameters, {num_classes} classes, "
             f"input {crop}x{crop} from {d.resize}x{d.resize}; {splits.train.num_images:,} "
             f"training images; device {', '.join(map(str, rt.towers)) + ' (two towers)' if rt.towers else rt.device}"
             f"{f' x {rt.env.world} processes' if rt.env.world > 1 else ''}; "
             f"{'resuming after epoch ' + str(start_epoch) if ckpt else 'run directory ' + str(out)}")

    try:
        for epoch in range(start_epoch, o.epochs):
            generator = seed_epoch(cfg.seed, epoch, rt.env.rank, rt.device)
            lr = schedule.lr(epoch, 0)
            train_stats = train_one_epoch(train_model, splits.train, augment, optimizer, schedule, epoch, rt,
                                          generator, scaler, log_every=cfg.log_every)
            val = evaluate(train_model, splits.val, center, split=splits.val_name, autocast=rt.autocast(),
                           channels_last=rt.channels_last, progress=rt.env.is_main, log_every=cfg.log_every)
            dropped = schedule.end_epoch(val.top1_error)
            record = {"epoch": epoch + 1, "lr": lr, **train_stats, "val_loss": val.loss, "val_top1": val.top1,
                      "val_top5": val.top5, "val_top1_error": val.top1_error, "val_top5_error": val.top5_error,
                      "val_skipped": val.skipped}
            history.append(record)
            _log(rt, f"epoch {epoch + 1}/{o.epochs}: train loss {record['train_loss']:.4f} "
                     f"top-1 {100 * record['train_top1']:.2f}% | {splits.val_name} top-1 {100 * val.top1:.2f}% "
                     f"top-5 {100 * val.top5:.2f}% | lr {lr:.3g} | {record['epoch_time']:.0f}s "
                     f"{record['images_per_sec']:.0f} img/s"
                     + (f" | skipped {record['skipped']} unreadable" if record["skipped"] else "")
                     + (" | lr divided by 10" if dropped else ""))
            for path in record["skipped_files"]:
                _log(rt, f"  skipped unreadable file: {path}")
            if rt.env.is_main:
                save_checkpoint(out / CHECKPOINT_NAME, {
                    "config": to_dict(cfg), "epoch": epoch + 1, "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "normalizer": normalizer.state_dict(), "history": history,
                    "meta": metadata_record(model, **meta_base)})
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            distributed.barrier()
    except KeyboardInterrupt:
        _log(rt, f"\ninterrupted; continue with: alexnet train --resume {out}")
        raise SystemExit(130) from None

    if cfg.ten_crop or start_epoch >= o.epochs:
        final = evaluate(train_model, splits.val, EvalCrops(dev_norm, crop, ten_crop=cfg.ten_crop),
                         split=splits.val_name, autocast=rt.autocast(), channels_last=rt.channels_last,
                         progress=rt.env.is_main, log_every=cfg.log_every)
    else:
        final = val  # the last epoch's center-crop validation is the final center-crop result
    _log(rt, f"final: {final.summary()}")
    if rt.env.is_main:
        meta = metadata_record(model, **meta_base, accuracy=final.as_dict(), epochs=len(history),
                               config=to_dict(cfg))
        save_weights(out / WEIGHTS_NAME, model, normalizer, meta)
        _log(rt, f"weights: {out / WEIGHTS_NAME}")
    distributed.teardown()
    return {"final": final.as_dict(), "history": history, "out": str(out)}
