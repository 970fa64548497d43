"""Typed configuration with the paper's values as defaults.

One ``TrainConfig`` flows through training: the command line fills it (every
field is a flag, generated from these dataclasses), it is written as
``config.json`` beside every run and stored in every checkpoint, so that a
checkpoint rebuilds its own model and data pipeline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import AlexNetError


def setting(default: Any, help: str, choices: tuple | None = None, switch: bool = False, **kw) -> Any:
    """A dataclass field with its help text (and choices): the command line makes a flag of it;
    ``switch``: an auto/on/off setting that the command line sets as --X (on) and --no-X (off)."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    if switch:
        meta["switch"] = True
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class ModelConfig:
    variant: str = setting("paper", "network: 'paper' (2012, two towers, LRN), 'torchvision' (single tower), "
                               "'paper-half' (one tower, half of conv1-4: section 3.2), 'lenet5' (1998, 32 px), "
                               "'cifar-18pct' and 'cifar-11pct' (cuda-convnet's CIFAR-10 nets, 32 and 24 px: "
                               "the paper's Fig. 1 and section 3.3)",
                      ("paper", "torchvision", "paper-half", "lenet5", "cifar-18pct", "cifar-11pct"))
    num_classes: int = setting(0, "number of classes; 0 takes it from the data")
    dropout: float = setting(-1.0, "dropout probability: in fc6/fc7 for the AlexNets, before fc10 for the cifar networks; "
                              "-1 = the network's own: 0.5 for the AlexNets (the paper), none for the cifar networks "
                              "(their layer files) and LeNet-5")
    norm: str = setting("lrn", "paper networks: local response normalisation after conv1/conv2 (the paper), batch norm "
                          "after every convolution (AlexNet-BN), or none; cifar networks: their layer file's "
                          "normalisation (lrn) or none", ("lrn", "batch", "none"))
    activation: str = setting("relu", "paper and cifar networks: the nonlinearity (section 3.1 compares relu with tanh)",
                         ("relu", "tanh"))
    overlap_pool: bool = setting(True, "paper and cifar networks: overlapping 3x3 stride-2 pooling (the paper, the layer "
                                  "files); off: 2x2 stride 2")
    towers: int = setting(1, "cifar-11pct: 2 splits conv1 and conv2 into two towers, as the paper's two GPUs (Fig. 3); "
                        "the paper network always has two")
    pool5_grid: int = setting(-1, "paper and torchvision networks: the grid fc6 reads pool5 at; -1 = the network's "
                            "own: pool5's own size for the paper networks (the paper's 6x6 at 227 px, 1x1 below 99 "
                            "px), 6 for torchvision (its layer, whose weights fc6 must fit); 0 = pool5's own size "
                            "at --crop; N = an NxN grid (a grid larger than pool5 copies each value and fc6 learns "
                            "that many times too fast)")
    ceil_pool: bool = setting(False, "paper networks: max pools round their output up, as Caffe's (the same 3x3/2 maps "
                                "at 227 px); at inputs with even maps (71, 135, 199 px) the 3x3/2 and 2x2/2 pools "
                                "then give the same maps and differ in overlap alone")
    lrn_k: float = setting(2.0, "LRN constant k (paper variant): 2 as in the paper; Caffe's bvlc_alexnet uses 1")
    lrn_span: str = setting("all", "LRN window (paper variant): over all maps, as Caffe's bvlc_alexnet, or within "
                              "each tower, as the paper's two GPUs each normalised their own maps",
                       ("all", "tower"))
    # He's init, not the paper's: with the paper's N(0, 0.01) weights and biases of 1 the network
    # stayed at chance through its first epoch in every seed (alexnet reproduce init,
    # docs/reproduction.md), the stall Caffe's bvlc_alexnet also met. --init paper is the paper's.
    init: str = setting("auto", "initialisation: auto (the network's own default: kaiming for the ImageNet networks, "
                           "torchvision for LeNet-5, the layer file's for the cifar networks), kaiming (He, fan-out; "
                           "linear layers N(0,0.01); biases 0), paper (N(0,0.01), biases 1 in conv2/4/5, fc6/7; the cifar "
                           "networks: their layer file's), zero-bias (the same, biases 0), caffe (biases 0.1, fc6/7 "
                           "std 0.005), torchvision (PyTorch's layer defaults)",
                   ("auto", "kaiming", "paper", "zero-bias", "caffe", "torchvision"))
    weights: str = setting("", "start from these trained weights (a run, a weights file, or a published name such as "
                          "IMAGENET1K_V1); fc8 is replaced when the class "
                          "count differs, and the weights' variant, input size and normaliser are used")
    freeze: str = setting("none", "layers kept fixed: none, features (all convolutions), all-but-fc8",
                     ("none", "features", "all-but-fc8"))


@dataclass
class DataConfig:
    data: str = setting("fashion-mnist", "class-per-folder tree with train/ and val/, a packed dataset "
                                    "(alexnet prepare), or 'fashion-mnist'")
    fashion_mnist_dir: str = setting("", "directory of the Fashion-MNIST IDX files (default: $ALEXNET_FASHION_MNIST, "
                                    "then /usr/share/datasets/fashion-mnist)")
    resize: int = setting(256, "preprocessing: shorter side to this, then a center square crop of it (paper: 256)")
    crop: int = setting(0, "network input: random crops of this size in training, center/10-crop in evaluation; "
                      "0 = the variant's native size (paper 227, torchvision 224)")
    random_crop: bool = setting(True, "random crops in training (off: center crop)")
    flip: bool = setting(True, "random horizontal flips in training")
    lighting: float = setting(0.1, "std of the PCA colour noise alpha (paper: 0.1; 0 disables)")
    normalize: str = setting("auto", "mean-image: subtract the training set's mean image, 0-255 scale (the paper's and "
                                "cuda-convnet's, which LRN's constants and the paper's init were made for); channel: "
                                "torchvision's per-channel mean/std (unit scale, which He's and PyTorch's inits "
                                "assume); auto: the network's own (mean-image for paper, paper-half and the cifar "
                                "networks, channel for torchvision and lenet5)", ("auto", "mean-image", "channel"))
    mean_samples: int = setting(10000, "training images used to estimate the mean image")
    workers: int = setting(-1, "data loading processes for image folders and packed data; -1 = one per CPU core")
    gpu_decode: bool = setting(False, "packed JPEG data: decode batches on the GPU (torchvision decode_jpeg on CUDA)")
    cache: str = setting("none", "packed data: decode every image once into memory and gather batches from it: gpu "
                            "(GPU memory), host (pinned host memory), auto (the first that holds them with half its "
                            "free memory to spare, else none), none (read and decode every epoch)",
                    ("none", "auto", "gpu", "host"))
    cache_format: str = setting("auto", "--cache's pixels: rgb (3 bytes a pixel), 420 (JPEG's YCbCr with colour at "
                                   "half resolution, 1.5 bytes a pixel, turned back into RGB on the device; a few "
                                   "levels off at colour edges), auto (rgb where it fits, else 420)",
                           ("auto", "rgb", "420"))
    holdout: int = setting(-1, "data without a val split (Fashion-MNIST, a folder without val/): this many training "
                          "images are held out for validation, a fixed choice; -1 = 10%, at most 5,000")
    limit_train: int = setting(0, "use only this many training images, a random choice by --seed (0 = all); for quick "
                             "runs and small-data experiments")
    limit_val: int = setting(0, "use only this many validation (and test) images (0 = all)")


@dataclass
class OptimConfig:
    epochs: int = setting(90, "epochs to train (paper: about 90); with --time-budget, at most this many")
    time_budget: float = setting(0.0, "seconds the run may take: train as many epochs as fit (at most --epochs), "
                                 "planned from the step time measured here before the first epoch, set-up, "
                                 "validation and a final --ten-crop pass included; where one more epoch of "
                                 "fewer steps (--epoch-steps) trains more steps in the same time, that; 0 = "
                                 "train --epochs")
    epoch_steps: int = setting(0, "train at most this many steps an epoch, a fresh random part of the training set "
                                  "each epoch (0 = every batch); --time-budget sets it when shorter epochs fit")
    budget_eval_views: int = setting(0, "with --time-budget: keep time for evaluating this many image views after "
                                     "the run, e.g. 100000 for `alexnet evaluate --split test --ten-crop` of 10,000 "
                                     "images (make main does)")
    batch_size: int = setting(128, "images per step, across all processes (paper: 128)")
    lr: float = setting(0.0, "initial learning rate; 0 = the network's own: 0.01 (the paper) for the ImageNet networks "
                        "and LeNet-5, 0.001 for the cifar networks (cuda-convnet's epsW)")
    momentum: float = setting(0.9, "SGD momentum (paper: 0.9)")
    weight_decay: float = setting(-1.0, "weight decay; -1 = the network's own: 5e-4 (the paper); 0.004 for the cifar "
                                   "networks (cuda-convnet's wc, each layer its own multiple of it)")
    schedule: str = setting("plateau", "plateau: divide lr by 10 when val error stops improving (paper); "
                                  "step: every --step-epochs; multistep: at each of --milestones (none: constant); "
                                  "cosine: per-step cosine decay to zero",
                       ("plateau", "step", "multistep", "cosine"))
    patience: int = setting(5, "plateau: epochs without improvement before the lr is divided")
    max_drops: int = setting(3, "plateau/step: divide the lr at most this many times (paper: 3)")
    step_epochs: int = setting(30, "step: epochs between divisions")
    milestones: str = setting("", "multistep: the epochs after which the lr is divided by 10, e.g. '16,18' (as "
                             "cuda-convnet's CIFAR-10 recipes lower it twice near the end)")
    warmup_epochs: float = setting(0.0, "linear warm-up from 0 over this many epochs (for large batches)")
    head_lr_mult: float = setting(1.0, "learning-rate multiplier for the last layer (fc8), e.g. 10 when fine-tuning")
    bias_lr_mult: float = setting(2.0, "learning-rate multiplier for biases: 2 as in the code the paper ran "
                                  "(cuda-convnet epsB = 2 x epsW) and Caffe (lr_mult 2); 1 treats them as weights")
    bias_decay_mult: float = setting(0.0, "weight-decay multiplier for biases: 0 as in cuda-convnet and Caffe "
                                     "(decay_mult 0); 1 decays them as weights")
    scale_lr: bool = setting(False, "linear scaling rule: multiply --lr by batch-size/128 (use with --warmup-epochs)")
    stop_at_train_error: float = setting(0.0, "end training after the epoch in which the training error, averaged "
                                         "over a tenth of an epoch's steps, first reaches this (e.g. 0.25, "
                                         "Fig. 1's mark); 0 = train every epoch")
    skip_nonfinite: int = setting(0, "skip up to this many batches an epoch whose loss is not finite, leaving the "
                                "weights untouched (costs a host sync per step); 0 = stop at the first")
    fused: bool = setting(True, "fused SGD step: one kernel updates every parameter (same arithmetic as the loop)")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out: str = setting("runs/alexnet", "run directory: config, metrics, checkpoints")
    seed: int = setting(0, "random seed; with it, a CPU run is reproducible and resumes exactly")
    device: str = setting("auto", "auto (cuda if present), cpu, cuda, cuda:N")
    model_parallel: str = setting("", "the paper's two-GPU split of the paper network: 'auto' (towers on cuda:2r and "
                                 "cuda:2r+1 for local rank r) or two devices, e.g. 'cuda:0,cuda:1'; '' = off")
    precision: str = setting("auto", "auto (bf16 on CUDA and on CPUs with native bf16, else fp32), fp32 (full fp32 "
                                "arithmetic, no TF32 on GPUs), bf16, fp16",
                        ("auto", "fp32", "bf16", "fp16"))
    channels_last: str = setting("auto", "channels-last memory format: auto (on CUDA and on the CPU, where every network's "
                                    "training step measured 1.02-2.2x faster with it), on, off", ("auto", "on", "off"))
    compile: bool = setting(False, "torch.compile the model; off by default: on an H200 compiled steps were not "
                                   "reliably faster than eager ones for torchvision's network, and on one GPU the "
                                   "eager step replayed from a CUDA graph (--cuda-graphs's default, which --compile "
                                   "turns off) was faster than either")
    cuda_graphs: str = setting("auto", "replay the training step from a CUDA graph after 3 eager steps (one process on "
                                 "CUDA, bf16 or fp32, fused SGD): launches cost one per step, and without --compile "
                                 "--pools auto takes the Triton pools; auto: on where measured faster, the paper and "
                                 "torchvision networks on one GPU without --compile (on an H200 the paper network's "
                                 "step took 8.1 ms against 9.7-10.5 eager, and the main job trained in 72 s against "
                                 "154 compiled), else off; --cuda-graphs: on, --no-cuda-graphs: off",
                               ("auto", "on", "off"), switch=True)
    tower_conv: str = setting("auto", "how the towers' grouped convolutions run (the same weights and results): grouped "
                                    "(one cuDNN/oneDNN call) or split (two dense halves); auto: the one measured "
                                    "faster for the network and device (models/fastconv.py; grouped: the halves were "
                                    "slower at batch 256 on an H200)", ("auto", "grouped", "split"))
    pools: str = setting("auto", "max pools: native, opaque (PyTorch's own kernels, which --compile then keeps "
                              "instead of generating its own pooling backward) or triton (Triton kernels: an int8 "
                              "place for each maximum and a gathering backward; CUDA only, PyTorch's elsewhere); "
                              "the same results; auto: models/fastconv.py's measured choice for the network, device "
                              "and mode (on CUDA: triton when the step is graphed, --cuda-graphs), else native",
                         ("auto", "native", "opaque", "triton"))
    conv1: str = setting("auto", "how conv1 runs (the same weights and results): direct, or s2d (space-to-depth: a "
                              "3x3 stride-1 convolution over 4x4 blocks of 48 channels); auto: s2d on CUDA for "
                              "both networks, eager, compiled and graphed (measured faster on an H200), else "
                              "direct", ("auto", "direct", "s2d"))
    ten_crop: bool = setting(False, "final evaluation with 10 crops (per-epoch validation is always center crop)")
    checkpoint_every: str = setting("0", "also checkpoint inside an epoch: every N steps ('500') or minutes ('10m'); "
                                    "0 = at epoch ends only (SIGTERM/SIGINT always checkpoint before stopping)")
    trace_steps: bool = setting(False, "record every step's training loss and error in metrics.jsonl (for curves)")
    tensorboard: bool = setting(False, "write TensorBoard event files in RUN/tensorboard (rank 0): losses, accuracies, "
                                  "learning rate, images/s, conv1 kernels, hyperparameters")
    log_every: float = setting(30.0, "seconds between progress lines when output is not a terminal")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


NO_DROPOUT_BEFORE = ("lenet5", "cifar-18pct", "cifar-11pct")  # networks that had no dropout option


def from_dict(d: dict) -> TrainConfig:
    """Rebuild a config from ``to_dict`` output (a saved run's); unknown keys are an error, missing
    keys take defaults, except where a default changed after older runs were saved."""
    kwargs = {}
    top = {f.name for f in fields(TrainConfig)}
    for key, value in d.items():
        if key not in top:
            raise AlexNetError(f"config has unknown field {key!r}")
        if key in SECTIONS:
            section = SECTIONS[key]
            if key == "model" and "lrn" in value:  # configs from before --norm
                value = {k: v for k, v in value.items() if k != "lrn"} | {"norm": "lrn" if value["lrn"] else "none"}
            if key == "model" and "towers" not in value and value.get("variant") in NO_DROPOUT_BEFORE:
                # configs from before --dropout reached these networks recorded the AlexNets' 0.5,
                # which they ignored: they trained without dropout, and continue so
                value = {**value, "dropout": 0.0}
            if key == "model" and "pool5_grid" not in value:
                value = {**value, "pool5_grid": 6}  # configs from before the option: the paper's 6x6 grid
            if key == "optim" and "bias_lr_mult" not in value:  # from before the bias multipliers: 1, as run
                value = {**value, "bias_lr_mult": 1.0, "bias_decay_mult": 1.0}
            known = {f.name for f in fields(section)}
            bad = set(value) - known
            if bad:
                raise AlexNetError(f"config section {key!r} has unknown field(s) {', '.join(sorted(bad))}")
            kwargs[key] = section(**value)
        elif key == "cuda_graphs" and isinstance(value, bool):  # from before auto: as run, on or off
            kwargs[key] = "on" if value else "off"
        else:
            kwargs[key] = value
    return TrainConfig(**kwargs)


def flat_fields() -> list[tuple[str | None, dataclasses.Field]]:
    """Every leaf field as (section or None, field): the CLI turns each into a flag."""
    out = []
    for f in fields(TrainConfig):
        if f.name in SECTIONS:
            out.extend((f.name, sub) for sub in fields(SECTIONS[f.name]))
        else:
            out.append((None, f))
    return out


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set leaf fields by their flag name (``lr``, ``variant``, ``out`` ...)."""
    index = {f.name: section for section, f in flat_fields()}
    for name, value in overrides.items():
        section = index[name]
        target = getattr(cfg, section) if section else cfg
        setattr(target, name, value)
    return cfg


def parse_setting(text: str) -> tuple[str, Any]:
    """``"gpu-decode=true"`` -> ``("gpu_decode", True)``: a config field by its flag name, the value
    converted to the field's type."""
    name, sep, raw = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    field_ = {f.name: f for _, f in flat_fields()}.get(name)
    if not sep or field_ is None:
        raise AlexNetError(f"--set wants FLAG=VALUE with a training flag (see alexnet train --help), got {text!r}")
    kind = type(field_.default)
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        if kind is bool:
            value = words[raw.lower()]
        elif field_.metadata.get("switch") and raw.lower() in words:  # a switch set as a boolean
            value = "on" if words[raw.lower()] else "off"
        else:
            value = kind(raw)
    except (KeyError, ValueError):
        raise AlexNetError(f"--set {name}: {raw!r} is not a {kind.__name__}") from None
    choices = field_.metadata.get("choices")
    if choices and value not in choices:
        raise AlexNetError(f"--set {name}: choose one of {', '.join(choices)}, got {raw!r}")
    return name, value


def resolve_defaults(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with the settings left to the network (``--init auto``, ``--normalize
    auto``, ``--lr 0``, ``--weight-decay -1``, ``--pool5-grid -1`` or ``0``) set to the network's own; the
    run records these."""
    from ..models.registry import VARIANTS

    out = from_dict(to_dict(cfg))
    net = VARIANTS.get(out.model.variant)
    if net is None:
        return out  # validate names the unknown variant
    m, d, o = out.model, out.data, out.optim
    m.init = net.DEFAULT_INIT if m.init == "auto" else m.init
    d.normalize = net.DEFAULT_NORMALIZE if d.normalize == "auto" else d.normalize
    o.lr = net.DEFAULT_LR if o.lr == 0 else o.lr
    o.weight_decay = net.DEFAULT_WEIGHT_DECAY if o.weight_decay == -1 else o.weight_decay
    m.dropout = net.DEFAULT_DROPOUT if m.dropout == -1 else m.dropout
    d.crop = d.crop or net.info.input_size
    if m.pool5_grid == -1:  # the paper networks' fc6 reads each pool5 value once; torchvision's layer is 6x6
        m.pool5_grid = 0 if m.variant in ("paper", "paper-half") else 6  # (6: what the others always recorded)
    if m.pool5_grid == 0 and m.variant in ("paper", "paper-half", "torchvision"):
        from ..models.alexnet import pool5_size

        paper = m.variant != "torchvision"  # torchvision's pools are fixed: 3x3/2, floor
        m.pool5_grid = pool5_size(m.variant, d.crop, m.overlap_pool or not paper, m.ceil_pool and paper)
    return out


def adopt_weights(cfg: TrainConfig, meta: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` that agrees with the weights it starts from (fine-tuning): their
    network, input sizes and structure; dropout and everything else stay the run's choice."""
    out = from_dict(to_dict(cfg))
    out.model.variant = meta["variant"]
    out.data.resize, out.data.crop = meta["resize"], meta["input_size"]
    adopt_model_options(out.model, meta.get("model_kwargs", {}))
    return out


def adopt_classes(cfg: TrainConfig, classes: list[str]) -> TrainConfig:
    """A copy of ``cfg`` with the class count the data have (``--num-classes 0``), or an error
    when the flag says otherwise."""
    if cfg.model.num_classes not in (0, len(classes)):
        raise AlexNetError(f"--num-classes {cfg.model.num_classes} does not match the data's {len(classes)} classes")
    out = from_dict(to_dict(cfg))
    out.model.num_classes = len(classes)
    return out


def validate(cfg: TrainConfig) -> None:
    """Reject impossible combinations with a message naming the flag. Checks ``cfg`` as the run
    will have it: resolving is idempotent, so a resolved config and a command line's alike."""
    from . import graphs
    from ..models.registry import variant_info

    cfg = resolve_defaults(cfg)  # the crop, pool5's grid and the rest as the run will have them
    d, o, m = cfg.data, cfg.optim, cfg.model
    info = variant_info(m.variant)
    crop = d.crop
    checks = [
        (o.epochs >= 1, f"--epochs must be at least 1, got {o.epochs}"),
        (0 <= o.time_budget < float("inf"), f"--time-budget must be a finite number of seconds, got {o.time_budget:g}"),
        (o.budget_eval_views >= 0, f"--budget-eval-views must be non-negative, got {o.budget_eval_views}"),
        (o.epoch_steps >= 0, f"--epoch-steps must be non-negative, got {o.epoch_steps}"),
        (o.batch_size >= 1, f"--batch-size must be at least 1, got {o.batch_size}"),
        (o.lr > 0, f"--lr must be positive, got {o.lr}"),
        (0 <= o.momentum < 1, f"--momentum must be in [0, 1), got {o.momentum}"),
        (o.weight_decay >= 0, f"--weight-decay must be non-negative, got {o.weight_decay}"),
        (0 <= m.dropout < 1, f"--dropout must be in [0, 1), got {m.dropout}"),
        (m.num_classes >= 0, f"--num-classes must be non-negative, got {m.num_classes}"),
        (d.lighting >= 0, f"--lighting must be non-negative, got {d.lighting}"),
        (crop >= info.min_input_size,
         f"--crop {crop} is too small for the {m.variant} network (at least {info.min_input_size})"),
        (d.resize >= crop, f"--resize {d.resize} must be at least the crop size {crop}"),
        (o.patience >= 0 and o.max_drops >= 0 and o.step_epochs >= 1, "schedule settings must be positive"),
        (o.warmup_epochs >= 0, f"--warmup-epochs must be non-negative, got {o.warmup_epochs}"),
        (0 <= o.stop_at_train_error < 1, f"--stop-at-train-error must be in [0, 1), got {o.stop_at_train_error}"),
        (not o.stop_at_train_error or cfg.trace_steps, "--stop-at-train-error reads every step's error: add "
                                                       "--trace-steps"),
        (o.head_lr_mult > 0, f"--head-lr-mult must be positive, got {o.head_lr_mult}"),
        (o.bias_lr_mult >= 0, f"--bias-lr-mult must be non-negative, got {o.bias_lr_mult}"),
        (o.bias_decay_mult >= 0, f"--bias-decay-mult must be non-negative, got {o.bias_decay_mult}"),
        (d.limit_train >= 0 and d.limit_val >= 0, "--limit-train/--limit-val must be non-negative"),
        (d.holdout >= -1, f"--holdout must be -1 (the default) or a number of images, got {d.holdout}"),
        (o.skip_nonfinite >= 0, f"--skip-nonfinite must be non-negative, got {o.skip_nonfinite}"),
        (d.mean_samples >= 1, f"--mean-samples must be at least 1, got {d.mean_samples}"),
        # torchvision's and LeNet-5's layers are fixed: an option they do not have is an error, not ignored
        (m.variant not in ("torchvision", "lenet5") or (m.norm == "lrn" and m.activation == "relu" and m.overlap_pool),
         f"--norm, --activation and --no-overlap-pool are for the paper and cifar networks; the {m.variant} "
         "network's layers are fixed"),
        (not m.variant.startswith("cifar") or m.norm != "batch",
         f"--norm batch is for the paper networks; the {m.variant} network has its layer file's (lrn) or none"),
        (m.pool5_grid >= 1 or m.variant not in ("paper", "paper-half", "torchvision"),
         f"--pool5-grid must be at least 1, or 0 for pool5's own size (which is 0 at --crop {d.crop})"
         if m.pool5_grid == 0 else f"--pool5-grid must be -1 (the network's own), 0 (pool5's own size) or a "
                                    f"grid of at least 1, got {m.pool5_grid}"),
        (m.variant in ("paper", "paper-half", "torchvision") or m.pool5_grid in (0, 6),
         f"--pool5-grid is for the paper and torchvision networks, not {m.variant}"),
        (m.variant in ("paper", "paper-half") or not m.ceil_pool, f"--ceil-pool is for the paper networks, not {m.variant}"),
        (m.towers in (1, 2), f"--towers must be 1 or 2, got {m.towers}"),
        (m.towers == 1 or m.variant == "cifar-11pct",
         f"--towers is for the cifar-11pct network; the {m.variant} network's layout is fixed"),
        (not m.variant.startswith("cifar") or m.init in ("auto", "paper", "kaiming", "torchvision"),
         f"--init {m.init}: the {m.variant} network takes paper (its layer file's), kaiming or torchvision"),
        (cfg.cuda_graphs != "on" or graphs.capturable(cfg),
         "--cuda-graphs needs bf16 or fp32, --fused, no --skip-nonfinite and no --model-parallel (each checks on the "
         "host or splits the step)"),
        (not cfg.model_parallel or m.variant == "paper",
         f"--model-parallel splits the paper network's two towers; the {m.variant} network has none"),
        (not cfg.model_parallel or _standard_structure(m),
         "--model-parallel builds the 2012 structure: ReLU, overlapping floor-rounded pooling, LRN or none"),
    ]
    for ok, message in checks:
        if not ok:
            raise AlexNetError(message)

    from .preempt import parse_every

    parse_every(cfg.checkpoint_every)
    milestones(o)


def _standard_structure(m: ModelConfig) -> bool:
    """What the two-tower split builds: the network's own test (imported when needed, as the
    module's other reads of the models are)."""
    from ..models.alexnet import standard_structure

    return standard_structure(dataclasses.asdict(m))


def milestones(o: OptimConfig) -> list[int]:
    """``--milestones`` as increasing whole epochs."""
    try:
        out = [int(m) for m in o.milestones.replace(" ", "").split(",") if m]
    except ValueError:
        raise AlexNetError(f"--milestones takes epochs separated by commas, e.g. '16,18'; got {o.milestones!r}") \
            from None
    if any(m < 1 for m in out) or out != sorted(set(out)):
        raise AlexNetError(f"--milestones must be increasing positive epochs, got {o.milestones!r}")
    return out


def model_options(m: ModelConfig) -> dict[str, Any]:
    """``create_model`` keyword arguments for the network ``m`` describes; settings left to the
    network are its own (``resolve_defaults``, at its native input size where the config was
    not resolved with its crop)."""
    if m.init == "auto" or m.dropout == -1 or m.pool5_grid < 1:
        m = resolve_defaults(TrainConfig(model=m)).model
    init, dropout = m.init, m.dropout
    if m.variant == "lenet5":
        return {"init": init}
    if m.variant.startswith("cifar"):
        towers = {"towers": m.towers} if m.variant == "cifar-11pct" else {}
        return {"init": init, "activation": m.activation, "norm": m.norm, "overlap_pool": m.overlap_pool,
                "dropout": dropout, **towers}
    options = {"dropout": dropout, "init": init, "pool5_grid": m.pool5_grid}
    if m.variant in ("paper", "paper-half"):
        options.update(norm=m.norm, lrn_k=m.lrn_k, lrn_span=m.lrn_span, activation=m.activation,
                       overlap_pool=m.overlap_pool, ceil_pool=m.ceil_pool)
    return options


def adopt_model_options(m: ModelConfig, options: dict[str, Any]) -> None:
    """Take the network's structure (normalisation, activation, pooling) from a weights file's
    record (``model.options()``); dropout stays a training choice."""
    m.norm = options.get("norm", "lrn" if options.get("lrn", True) else "none")  # older files record lrn
    m.activation = options.get("activation", "relu")
    m.overlap_pool = options.get("overlap_pool", True)
    m.pool5_grid = options.get("pool5_grid", 6)  # files from before the options: the paper's 6x6, floor pools
    m.ceil_pool = options.get("ceil_pool", False)
    m.towers = options.get("towers", 1)
    m.lrn_k = options.get("lrn_k", m.lrn_k)
    m.lrn_span = options.get("lrn_span", "all")  # files from before the option normalised over all maps
