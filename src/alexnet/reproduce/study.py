"""The paper's testable claims as controlled experiments: ``alexnet reproduce``.

Each claim compares a baseline arm with an arm that changes one thing, everything else
equal (data, budget, seeds), paired by seed. An arm is an ordinary training run
(``fit``) under ``OUT/runs/ARM/seedN``; arms shared by several claims (the baseline)
run once. A finished run leaves ``result.json``; an interrupted one resumes from its
checkpoint, so a stopped ``reproduce`` continues where it stopped. The report
(``results.json``, ``report.md`` and the figures) is rebuilt from whatever has finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import stats
from ..training.curves import smooth_window, steps_to
from ..training.rundir import RunDir
from ..training.config import TrainConfig, apply_overrides
from ..errors import AlexNetError
from ..files import atomic_write_text
from .runner import machine

# ---------------------------------------------------------------------------
# Arms: one change each to the preset's baseline (config flag -> value).


@dataclass(frozen=True)
class Arm:
    name: str
    what: str
    overrides: dict = field(default_factory=dict)
    first_epoch_only: bool = False  # the init claim looks at the first epoch alone


ARMS = {a.name: a for a in (
    Arm("baseline", "the paper network: ReLU, LRN, overlapping pooling, dropout 0.5, crops and flips, PCA lighting"),
    Arm("tanh", "tanh in place of every ReLU", {"activation": "tanh"}),
    Arm("no-lrn", "no local response normalisation", {"norm": "none"}),
    Arm("pool-2x2", "2x2 stride-2 max pooling (at the presets' even map sizes the same maps, every unit read)",
        {"overlap_pool": False}),
    Arm("no-dropout", "no dropout in fc6/fc7", {"dropout": 0.0}),
    Arm("no-augment", "center crop only: no random crops, no flips", {"random_crop": False, "flip": False}),
    Arm("no-lighting", "no PCA colour noise", {"lighting": 0.0}),
    Arm("half", "one tower with half of conv1-conv4's kernels (paper-half)", {"variant": "paper-half"}),
    # PyTorch's default init, U(+-1/sqrt(fan-in)): the fan-in scaling of LeCun's "Efficient BackProp"
    # (1998). LeNet-5's own +-2.4/fan-in was made for its second-order training and does not leave
    # chance within this budget of plain SGD (measured: 10.8% training accuracy after 2 epochs).
    Arm("lenet5", "LeNet-5 (1998) on 32x32 crops of the same images", {"variant": "lenet5", "init": "torchvision"}),
    Arm("bias-one", "the paper's init: N(0, 0.01) weights, biases 1 in conv2/4/5, fc6/7", {"init": "paper"}, True),
    Arm("bias-zero", "the same weights, every bias 0", {"init": "zero-bias"}, True),
    Arm("bn", "batch normalisation after every convolution, no LRN (AlexNet-BN)", {"norm": "batch"}),
)}


# ---------------------------------------------------------------------------
# Claims: a baseline arm, a changed arm, and what the paper says about the difference.


@dataclass(frozen=True)
class Measure:
    """One compared quantity. ``expect``: the sign of (change - base) the paper predicts;
    ``paper_value``: the paper's size of it, where it gives one (on the measure's scale: a log
    ratio for ``steps_ratio``); ``margin``: the band around zero, fixed before any run, inside
    which an interval says "no effect"."""

    metric: str
    expect: int
    paper: str  # the paper's figure for this measure, as text
    paper_value: float | None = None
    margin: float | None = None


@dataclass(frozen=True)
class Claim:
    """A baseline arm, a changed arm, and what the paper says of the difference. The first
    measure is the claim's primary one: the one its verdict, and the report's multiplicity
    correction, rest on; the others are reported beside it, uncorrected."""

    name: str
    title: str
    base: str
    change: str
    measures: tuple[Measure, ...]
    source: str  # where the paper says it
    needs_colour: bool = False
    beyond_paper: bool = False
    regime: str = ""  # a preset's other data budget for both arms ("" = the preset's own)

    @property
    def runs(self) -> tuple[str, str]:
        """The keys of the two arms' runs: the arm's name, with ``@regime`` in another regime."""
        return tuple(f"{a}@{self.regime}" if self.regime else a for a in (self.base, self.change))


def arm_of(key: str) -> Arm:
    return ARMS[key.split("@")[0]]


ERR = "top1_error"
# Margins of "no effect", fixed before any run: 0.2 points of error (half the smallest effect the
# paper reports, overlapping pooling's 0.4), 0.5 points of train-validation gap, 0.02 of epoch-1
# loss (under 1% of chance's 2.30 over 10 classes), and a step ratio within 10% of 1.
ERR_MARGIN, GAP_MARGIN, LOSS_MARGIN, RATIO_MARGIN = 0.002, 0.005, 0.02, math.log(1.1)
# Top-5 error is not measured: over 10 classes it is near zero (0.8%) and tells nothing.
CLAIMS = {c.name: c for c in (
    # Both arms run in the preset's "speed" regime: each stops at the threshold, or at a cap of
    # many times the steps ReLU needs (a tanh run that hits the cap is censored, never a ratio).
    Claim("relu-tanh", "ReLU trains faster than tanh", "baseline", "tanh",
          (Measure("steps_ratio", +1, "about 6x (25% training error, CIFAR-10, Fig. 1)", math.log(6), RATIO_MARGIN),),
          "section 3.1, Fig. 1", regime="speed"),
    Claim("lrn", "local response normalisation lowers the error", "baseline", "no-lrn",
          (Measure(ERR, +1, "+1.4 points (top-1)", 0.014, ERR_MARGIN),), "section 3.3"),
    Claim("overlap-pool", "overlapping pooling lowers the error", "baseline", "pool-2x2",
          (Measure(ERR, +1, "+0.4 points (top-1)", 0.004, ERR_MARGIN),), "section 3.4"),
    # Overfitting needs many passes over few images: these two run in the preset's "small" regime.
    Claim("dropout", "dropout prevents overfitting, at about twice the iterations", "baseline", "no-dropout",
          (Measure("gap", +1, "substantial overfitting without it", None, GAP_MARGIN),
           Measure(ERR, +1, "", None, ERR_MARGIN),
           Measure("steps_ratio", -1, "about half the iterations to converge", math.log(0.5), RATIO_MARGIN)),
          "section 4.2", regime="small"),
    Claim("augment", "random crops and flips prevent overfitting", "baseline", "no-augment",
          (Measure("gap", +1, "substantial overfitting without them", None, GAP_MARGIN),
           Measure(ERR, +1, "", None, ERR_MARGIN)), "section 4.1", regime="small"),
    Claim("lighting", "PCA colour noise lowers the error", "baseline", "no-lighting",
          (Measure(ERR, +1, "over +1 point", None, ERR_MARGIN),), "section 4.1", needs_colour=True),
    # The towers' step counts are not compared: the paper's "slightly faster" is a remark about
    # wall time on two GPUs, not a measured figure.
    Claim("towers", "two towers beat one tower of half the kernels", "baseline", "half",
          (Measure(ERR, +1, "+1.7 points (top-1)", 0.017, ERR_MARGIN),), "section 3.2"),
    Claim("lenet", "AlexNet improves on LeNet-5", "baseline", "lenet5",
          (Measure(ERR, +1, "(AlexNet as LeNet's successor)", None, ERR_MARGIN),), "LeCun et al. 1998"),
    Claim("init", "biases of 1 accelerate the early stages of learning", "bias-zero", "bias-one",
          (Measure("epoch1_loss", -1, "faster early learning with biases 1", None, LOSS_MARGIN),
           Measure("epoch1_error", -1, "", None, ERR_MARGIN)),
          "section 5"),
    Claim("fig3", "conv1 kernels: tower 1 colour-agnostic, tower 2 colour-specific", "baseline", "baseline",
          (), "section 6.1, Fig. 3", needs_colour=True),
    Claim("bn", "batch normalisation in place of LRN (2015, beyond the paper)", "baseline", "bn",
          (Measure(ERR, -1, "(Ioffe and Szegedy 2015: lower error)", None, ERR_MARGIN),), "beyond the paper",
          beyond_paper=True),
)}


# ---------------------------------------------------------------------------
# Presets: the baseline's settings; every arm applies its change on top.


@dataclass(frozen=True)
class Preset:
    name: str
    what: str
    train: dict  # config flag -> value
    lenet: dict  # LeNet-5's input sizes: the same images at its 32 px
    regimes: dict = field(default_factory=dict)  # name -> changes for the claims that name it
    seeds: int = 3
    train_eval_images: int = 2000  # training images evaluated (eval mode) for the train-test gap
    # claim -> the training error its step counts run to, fixed here before any run
    thresholds: dict = field(default_factory=dict)


# The training error relu-tanh's speed regime stops at and its step counts run to (one number).
CPU_SPEED, GPU_SPEED = 0.35, 0.25

PRESETS = {
    # A 2-core CPU in about an hour and a half: Fashion-MNIST at 71 px crops of 80 px images, 6,000 training
    # images (each seed its own), 2 epochs of the paper's batch 128; He's init (kaiming) and a
    # cosine schedule: the paper's N(0, 0.01) init does not leave chance within such a budget (the
    # init claim measures exactly that). Why 71 px: every pooled map is even there (16, 8, 4), so
    # with Caffe's rounding (ceil_pool) the 3x3/2 and 2x2/2 pools give the same maps and both read
    # every unit: the pooling claim changes the overlap alone. pool5 is 2x2 and fc6 reads it on a
    # 2x2 grid: on the paper's 6x6 each value would be copied 9 times and fc6 learn 9 times too fast
    # (at the 67 px of the first presets, 36 times, and their loss blew up to 20 without a warm-up).
    # Without the copies no warm-up is needed: the no-LRN arm's loss peaked at 2.84 in its first
    # 23 steps (3,000 images, 1 epoch; 2-core CPU, 2026-11-26).
    "cpu": Preset("cpu", "2-core CPU, about an hour and a half",
                  dict(resize=80, crop=71, pool5_grid=0, ceil_pool=True, epochs=2, limit_train=6000, init="kaiming",
                       schedule="cosine"),
                  dict(resize=36, crop=32),
                  # Overfitting (dropout, augmentation): 500 images seen 24 times, as many image
                  # passes as the main regime's; validation during training on 500 images, the final
                  # error on all 5,000.
                  # relu-tanh: each arm stops at 35% training error or after 10 epochs (470 steps).
                  # 35% and the cap come from the first (67 px) preset's runs as a pilot: its ReLU
                  # runs reached 35% in at most 54 steps (51, 46, 54), so the cap is over 8 times that.
                  regimes={"small": dict(limit_train=500, epochs=24, limit_val=500),
                           "speed": dict(epochs=10, stop_at_train_error=CPU_SPEED)},
                  # 10% training error: memorising 500 images without dropout.
                  thresholds={"relu-tanh": CPU_SPEED, "dropout": 0.10}),
    # The full-size network on a GPU: 199 px crops of 224 px images (maps 48, 24, 12, 6: even, so
    # the pools again differ in overlap alone; pool5 is the paper's 6x6), the whole training set.
    "gpu": Preset("gpu", "one GPU, the full-size network",
                  dict(resize=224, crop=199, pool5_grid=0, ceil_pool=True, epochs=10, init="kaiming", schedule="cosine"),
                  dict(resize=36, crop=32),
                  regimes={"small": dict(limit_train=2000, epochs=60, limit_val=1000),
                           "speed": dict(epochs=30, stop_at_train_error=GPU_SPEED)},
                  thresholds={"relu-tanh": GPU_SPEED, "dropout": 0.05}),
}
COMMON = dict(batch_size=128, lr=0.01, trace_steps=True, log_every=60.0)


def resolve_preset(name: str, device: str = "auto") -> Preset:
    if name == "auto":
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "gpu" if cuda else "cpu"
    if name not in PRESETS:
        raise AlexNetError(f"unknown preset {name!r}; choose auto, {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass
class Plan:
    """What ``reproduce`` runs: claims, arms, seeds, where, on what."""

    claims: list[str]
    preset: Preset
    seeds: int
    data: str
    out: Path
    device: str = "auto"
    overrides: dict = field(default_factory=dict)  # the user's changes to the preset (epochs, ...)
    colour: bool = True

    def arms(self) -> list[str]:
        """Every run key the claims need (``arm`` or ``arm@regime``), each once, in ARMS order."""
        names = []
        for c in (CLAIMS[n] for n in self.claims):
            if c.needs_colour and not self.colour:
                continue
            names += [k for k in c.runs if k not in names]
        return sorted(names, key=lambda k: ("@" in k, list(ARMS).index(k.split("@")[0])))

    def config(self, key: str, seed: int) -> TrainConfig:
        a = arm_of(key)
        regime = self.preset.regimes[key.split("@")[1]] if "@" in key else {}
        # A regime's budget wins over the user's settings: it is what makes its claims testable.
        flags = {**COMMON, **self.preset.train, **self.overrides, **regime, **a.overrides, "data": self.data,
                 "seed": seed, "device": self.device, "out": str(self.run_dir(key, seed))}
        if a.name == "lenet5":  # its own input size; the paper network's pooling options are not its
            flags.update(self.preset.lenet)
            for k in ("pool5_grid", "ceil_pool"):
                flags.pop(k, None)
        if a.first_epoch_only:
            flags["epochs"] = 1
        return apply_overrides(TrainConfig(), flags)

    def command(self) -> str:
        """The command line that makes this plan."""
        extra = "".join(f" --{k.replace('_', '-')} {v}" for k, v in self.overrides.items())
        return (f"alexnet reproduce {' '.join(self.claims)} --preset {self.preset.name} --seeds {self.seeds} "
                f"--data {self.data}{extra} --out {self.out}").replace("  ", " ")

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.out / "runs" / arm / f"seed{seed}"


def select_claims(names: list[str]) -> list[str]:
    if not names:
        return list(CLAIMS)
    bad = [n for n in names if n not in CLAIMS]
    if bad:
        raise AlexNetError(f"unknown claim(s) {', '.join(bad)}; `alexnet reproduce --list` names them")
    return list(dict.fromkeys(names))


def list_claims() -> str:
    """The claims with the paper's numbers, then the presets with their settings (the one copy
    of them that --help points to)."""
    lines = []
    for c in CLAIMS.values():
        paper = "; ".join(f"{m.metric}: {m.paper}" for m in c.measures if m.paper) or "a figure"
        lines.append(f"{c.name:<13} {c.title}  [{c.source}]\n{'':<13} arms {' vs '.join(c.runs)}; paper: {paper}")
    lines += ["", "--preset cifar (the paper's own CIFAR-10 experiments, on cuda-convnet's networks):",
              f"{'relu-tanh':<13} ReLU reaches 25% training error faster than tanh  [section 3.1, Fig. 1]\n"
              f"{'':<13} cifar-18pct, relu vs tanh, each at its fastest rate; paper: about 6x",
              f"{'lrn':<13} cross-map normalisation lowers the test error  [section 3.3]\n"
              f"{'':<13} cifar-11pct with vs without cmrnorm; paper: 13% vs 11%",
              "then, on 5,000 images seen 40 times (a regime that overfits), cifar-11pct with the whole recipe "
              "against one thing taken away:"]
    from .cifar_overfit import CLAIMS as OVERFIT

    lines += [f"{c.name:<13} {c.title}\n{'':<13} baseline vs {c.arm}; paper: {c.paper}" for c in OVERFIT.values()]
    lines += ["", "presets (--preset; --epochs, --limit-train, --batch-size and --set override their settings):"]
    for p in PRESETS.values():
        settings = " ".join(f"{k}={v}" for k, v in {**COMMON, **p.train}.items())
        lines.append(f"{p.name:<13} {p.what}; {p.seeds} seeds; {settings}")
    lines.append(f"{'cifar':<13} the CIFAR-10 claims above, on cuda-convnet's networks; every setting and seed rule is "
                 "fixed in alexnet/reproduce/cifar.py and cifar_overfit.py")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Running the arms.


def is_grayscale(data: str, device: str = "auto") -> bool:
    """Whether the data's images have three equal channels (Fashion-MNIST): then colour claims
    (PCA lighting, Fig. 3's colour kernels) cannot show anything."""
    from ..data import loader
    from ..training.runtime import resolve_device

    req = loader.Request(splits=("train",), batch_size=64, limit_train=64, workers=0)
    splits = loader.build(data, 32, resolve_device(device), req)
    try:
        x = next(iter(splits.train)).images  # (B, C, H, W): one channel, or three
        return x.shape[1] == 1 or bool((x[:, :1] == x).all())
    finally:
        splits.close()


def run_arm(plan: Plan, arm: str, seed: int) -> dict:
    """Train one arm with one seed (resuming an interrupted run), add the measurements the
    claims need, and leave them in the run's ``result.json``."""
    from ..training.train import fit

    run = plan.run_dir(arm, seed)
    rundir, cfg = RunDir(run), plan.config(arm, seed)
    if rundir.has_result():
        return rundir.read_result()
    start = time.perf_counter()
    if rundir.has_checkpoint():
        fit(TrainConfig(out=str(run)), resume=True)
    else:
        fit(cfg, overwrite=True)
    result = measure(plan, run, cfg)
    result["wall_s"] = time.perf_counter() - start
    rundir.write_result(result)
    rundir.checkpoint.unlink(missing_ok=True)  # the weights stay; the optimizer state is not needed
    return result


def _check_same_setting(run: Path, cfg: TrainConfig) -> None:
    """Refuse to reuse a run made with other settings (an earlier preset's, say)."""
    from ..training.config import from_dict, resolve_defaults, to_dict

    saved = RunDir(run).read_config()
    if saved is None:
        return
    want, have = to_dict(resolve_defaults(cfg)), to_dict(resolve_defaults(from_dict(saved)))
    diff = [f"{k}.{f}: {have.get(k, {}).get(f)!r} here, {v!r} now" for k in ("model", "data", "optim")
            for f, v in want[k].items() if f in have.get(k, {}) and have[k][f] != v
            and f not in ("workers", "num_classes")]  # run-time choices, and what the data decide
    if diff:
        raise AlexNetError(f"{run} was trained with other settings ({'; '.join(diff[:3])}): an earlier preset's "
                           "runs; choose another --out")


def measure(plan: Plan, run: Path, cfg: TrainConfig) -> dict:
    """A finished run's figures: final validation error, clean training error (eval mode, no
    augmentation) on its first training images, the train-validation gap, and the per-step
    curve the speed claims read."""
    from ..infer import evaluate_weights
    history = RunDir(run).read_metrics(required=True)
    final = history[-1]
    top1, top5, val_images = final["val_top1_error"], final["val_top5_error"], None
    final_limit = plan.overrides.get("limit_val", 0)
    if cfg.data.limit_val != final_limit:  # validated on a subset while training: the final figure on all
        val = evaluate_weights(run, split="val", limit=final_limit, device=plan.device, workers=0, progress=False)
        top1, top5, val_images = val.top1_error, val.top5_error, val.images
    limit = min(plan.preset.train_eval_images, cfg.data.limit_train or plan.preset.train_eval_images)
    train = evaluate_weights(run, split="train", limit=limit, device=plan.device, workers=0, progress=False)
    trace = [e for h in history for e in h.get("trace_error", [])]
    meta = _weights_meta(run)
    return {"top1_error": top1, "top5_error": top5, "train_error": train.top1_error, "gap": top1 - train.top1_error,
            "epoch1_loss": history[0]["train_loss"], "epoch1_error": 1 - history[0]["train_top1"],
            "trace_error": trace, "trace_loss": [e for h in history for e in h.get("trace_loss", [])],
            "steps_per_epoch": len(history[0].get("trace_error", [])), "epochs": len(history),
            "train_time_s": sum(h["epoch_time"] for h in history), "params": meta["num_params"],
            "images_per_sec": sum(h["train_images"] for h in history) / sum(h["epoch_time"] for h in history),
            "seed": cfg.seed, "val_images": val_images or meta["accuracy"]["images"]}


def _weights_meta(run: Path) -> dict:
    """The weights file's record, without reading its tensors."""
    from ..training.checkpoint import read_weights_metadata

    return read_weights_metadata(RunDir(run).weights)


def run_plan(plan: Plan, log=print) -> None:
    """Every (arm, seed) the plan needs, in order, with progress and an ETA."""
    jobs = [(arm, seed) for seed in range(plan.seeds) for arm in plan.arms()]
    for arm, seed in jobs:  # before anything runs
        _check_same_setting(plan.run_dir(arm, seed), plan.config(arm, seed))
    todo = [(a, s) for a, s in jobs if not RunDir(plan.run_dir(a, s)).has_result()]
    log(f"reproduce: {len(plan.claims)} claim(s), {len(plan.arms())} arm(s) x {plan.seeds} seed(s) = {len(jobs)} "
        f"runs, {len(jobs) - len(todo)} already finished; preset {plan.preset.name}; output {plan.out}")
    weight = {a: 1 if arm_of(a).first_epoch_only else plan.config(a, 0).optim.epochs for a, _ in jobs}
    spent, done_weight = 0.0, 0
    for i, (arm, seed) in enumerate(todo):
        log(f"reproduce [{i + 1}/{len(todo)}] arm {arm} ({arm_of(arm).what}), seed {seed}")
        start = time.perf_counter()
        result = run_arm(plan, arm, seed)
        spent += time.perf_counter() - start
        done_weight += weight[arm]
        left = sum(weight[a] for a, _ in todo[i + 1:]) * spent / max(done_weight, 1)
        log(f"reproduce [{i + 1}/{len(todo)}] {arm} seed {seed}: validation top-1 error "
            f"{100 * result['top1_error']:.2f}%, {result['wall_s']:.0f} s; about {_duration(left)} left")


def _duration(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min {int(seconds % 60):02d} s"


# ---------------------------------------------------------------------------
# From finished runs to results.


def load_results(plan: Plan) -> dict[str, list[dict]]:
    """Each arm's finished runs, by seed (arms with a missing seed are kept partial)."""
    out = {}
    for arm in plan.arms():
        for s in range(plan.seeds):
            _check_same_setting(plan.run_dir(arm, s), plan.config(arm, s))
        runs = [RunDir(plan.run_dir(arm, s)) for s in range(plan.seeds)]
        out[arm] = [r.read_result() for r in runs if r.has_result()]
    return out


ALPHA = 0.05  # the family's error rate, over the report's primary measures


def _paired_values(results: dict, claim: Claim, metric: str, steps_for: dict) -> tuple[list, list, list]:
    """Both arms' values of ``metric`` on their shared seeds, and the seeds (of steps measures:
    of the pairs where both runs reached the threshold). ``steps_ratio`` pairs 0 with the log of
    change / base steps, so that its interval is one of log ratios."""
    base_key, change_key = claim.runs
    base = {r["seed"]: r for r in results.get(base_key, [])}
    change = {r["seed"]: r for r in results.get(change_key, [])}
    seeds = sorted(set(base) & set(change))
    if metric in ("steps", "steps_ratio"):
        seeds = [s for s in seeds if steps_for.get((base_key, s)) and steps_for.get((change_key, s))]
        a = [steps_for[(base_key, s)] for s in seeds]
        b = [steps_for[(change_key, s)] for s in seeds]
        if metric == "steps_ratio":
            return [0.0] * len(a), [math.log(y / x) for x, y in zip(a, b)], seeds
        return a, b, seeds
    return [base[s][metric] for s in seeds], [change[s][metric] for s in seeds], seeds


def _steps(plan: Plan, claim: Claim, results: dict) -> tuple[dict, float | None, int | None]:
    """(arm, seed) -> optimizer steps to the claim's preset threshold (None: not reached)."""
    threshold = plan.preset.thresholds.get(claim.name)
    runs = results.get(claim.runs[0], []) + results.get(claim.runs[1], [])
    if threshold is None or not runs:
        return {}, threshold, None
    window = smooth_window(runs[0]["steps_per_epoch"] or 1)
    return ({(arm, r["seed"]): steps_to(r["trace_error"], threshold, window)
             for arm in claim.runs for r in results.get(arm, [])}, threshold, window)


def _unreached(claim: Claim, steps_for: dict, results: dict) -> str:
    """Why a steps measure decides nothing: the runs that did not reach the threshold (censored),
    with the ratio each censored pair is at least (its run's steps over the other arm's)."""
    base_key, change_key = claim.runs
    out = []
    for arm in claim.runs:
        for r in results.get(arm, []):
            if steps_for.get((arm, r["seed"]), 0) is not None:
                continue
            other = steps_for.get((base_key if arm == change_key else change_key, r["seed"]))
            bound = ""
            if other:
                ran = len(r["trace_error"])
                bound = f", ratio at least {ran / other:.2f}" if arm == change_key else f", at most {other / ran:.2f}"
            out.append(f"{arm} seed {r['seed']} did not reach it in {len(r['trace_error'])} steps{bound}")
    return "; ".join(out)


def analyse(plan: Plan, results: dict[str, list[dict]]) -> dict:
    """Per claim and measure: both arms' mean and sd, the paired difference with its interval,
    and the verdict on size (``stats.size_verdict``). The primary measures form one family
    (``_judge``); the other measures carry plain 95% intervals. Step counts run to the preset's
    threshold; a run that does not reach it leaves its claim's step measure censored."""
    claims = {}
    for name in plan.claims:
        c = CLAIMS[name]
        entry = {"title": c.title, "source": c.source, "base": c.runs[0], "change": c.runs[1],
                 "beyond_paper": c.beyond_paper, "measures": []}
        if c.needs_colour and not plan.colour:
            entry["skipped"] = "the data are grayscale (three equal channels): colour cannot show"
            claims[name] = entry
            continue
        steps_for, threshold, window = _steps(plan, c, results)
        if threshold is not None:
            entry.update(threshold=threshold, window=window)
        for i, m in enumerate(c.measures):
            a, b, seeds = _paired_values(results, c, m.metric, steps_for)
            row = {"metric": m.metric, "paper": m.paper, "paper_value": m.paper_value, "margin": m.margin,
                   "expect": m.expect, "primary": i == 0, "seeds": len(a)}
            if m.metric.startswith("steps") and _unreached(c, steps_for, results):
                row["censored"] = _unreached(c, steps_for, results)
            if a:
                row.update(stats.paired(a, b).as_dict(), base_values=a, change_values=b, seed_ids=seeds)
            entry["measures"].append(row)
        claims[name] = entry
    _judge(claims)
    return claims


EFFECTS = (stats.AGREES, stats.SMALLER, stats.LARGER, stats.OPPOSITE)


def _judge(claims: dict) -> None:
    """Verdicts. The primary measures of the measured claims are one family of m, fixed by the
    plan (a measure without two seeds counts, with p = 1): Holm-adjusted p-values, and each
    interval at its Holm level (1 - ALPHA / (m - rank)); a verdict that finds an effect stands
    only where the Holm-adjusted p is at most ALPHA. The other measures: 95% each, uncorrected."""
    rows = [m for e in claims.values() for m in e.get("measures", [])]
    primary = [m for m in rows if m["primary"]]
    tests = [stats.Paired(**_paired_fields(m)) if m.get("n", 0) >= 2 else None for m in primary]
    ps = [stats.p_value(t) if t else 1.0 for t in tests]
    adjusted, levels = stats.holm(ps), stats.holm_levels(ps, ALPHA)
    family = {id(m): i for i, m in enumerate(primary)}
    for m in rows:
        if "mean_diff" not in m:
            m["verdict"] = f"{stats.INCONCLUSIVE} (censored: {m['censored']})" if m.get("censored") else "no data"
            continue
        test = stats.Paired(**_paired_fields(m))
        i = family.get(id(m))
        level = levels[i] if i is not None else 0.95
        low, high = stats.interval(test, level)
        m.update(level=level, ci_low=low, ci_high=high, p=stats.p_value(test))
        verdict = stats.size_verdict(low, high, m["expect"], m["paper_value"], m["margin"])
        if i is not None:
            m["p_holm"] = adjusted[i]
            if verdict in EFFECTS and adjusted[i] > ALPHA:
                verdict = stats.INCONCLUSIVE  # Holm's step-down stopped before this one
        if m.get("censored"):
            verdict = f"{stats.INCONCLUSIVE} (censored: {m['censored']})"
        m["verdict"] = verdict if i is not None else f"{verdict} (secondary)"


def _paired_fields(m: dict) -> dict:
    return {k: m[k] for k in ("n", "mean_a", "sd_a", "mean_b", "sd_b", "diffs", "mean_diff", "sd_diff", "ci_low",
                              "ci_high")}


# ---------------------------------------------------------------------------
# The report.


def _fmt(metric: str, value: float, signed: bool = False) -> str:
    if metric == "steps_ratio":
        return f"{value:+.2f}" if signed else f"{value:.2f}x"
    if metric == "steps" or metric == "epoch1_loss":
        return f"{value:+.3g}" if signed else f"{value:.3g}"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}%"


METRIC_NAMES = {"top1_error": "top-1 error", "top5_error": "top-5 error", "gap": "val - train error",
                "steps": "steps to threshold", "steps_ratio": "steps ratio (change / base)",
                "epoch1_loss": "epoch-1 mean loss", "epoch1_error": "epoch-1 training error"}


def _row_text(row: dict) -> tuple[str, str, str, str]:
    """(base, change, difference with interval, verdict) cells of a measure."""
    m = row["metric"]
    if "mean_diff" not in row:
        return "", "", "", row["verdict"]
    if math.isnan(row["ci_low"]):  # one seed: no interval
        row = {**row, "ci_low": row["mean_diff"], "ci_high": row["mean_diff"]}
    level = f"{100 * row['level']:.1f}%".replace(".0%", "%")
    if m == "steps_ratio":  # geometric means of the per-seed ratios
        base, change = "1x", f"{math.exp(row['mean_b']):.2f}x"
        diff = (f"ratio {math.exp(row['mean_diff']):.2f} [{math.exp(row['ci_low']):.2f}, "
                f"{math.exp(row['ci_high']):.2f}] ({level})")
    else:
        base = f"{_fmt(m, row['mean_a'])} ± {_fmt(m, row['sd_a']).rstrip('%')}"
        change = f"{_fmt(m, row['mean_b'])} ± {_fmt(m, row['sd_b']).rstrip('%')}"
        diff = (f"{_fmt(m, row['mean_diff'], True)} [{_fmt(m, row['ci_low'], True)}, "
                f"{_fmt(m, row['ci_high'], True)}] ({level})")
    verdict = row["verdict"]
    if "p_holm" in row:
        verdict += f"; Holm p {row['p_holm']:.2g}"
    return base, change, diff, verdict


def report_markdown(plan: Plan, results: dict, claims: dict, context: dict) -> str:
    from ..training.config import resolve_defaults

    p = plan.preset
    cfg = resolve_defaults(plan.config("baseline", 0))  # the grid fc6 reads, the rate, as the runs had them
    lines = [
        "# AlexNet's claims, measured", "",
        f"Made by `{context['command']}` on {context['machine']}, {context['date']}.", "",
        f"- data: `{plan.data}` ({'grayscale' if not plan.colour else 'colour'}), "
        f"{cfg.data.limit_train or 'all'} training images, validation on the held-out/val split "
        f"({_val_images(results)} images, center crop); no arm is tuned, the test split is not read",
        f"- input: {cfg.data.crop} px crops of {cfg.data.resize} px images (LeNet-5: {p.lenet['crop']} of "
        f"{p.lenet['resize']}); fc6 reads pool5 on a {cfg.model.pool5_grid}x{cfg.model.pool5_grid} grid; "
        f"{'Caffe' if cfg.model.ceil_pool else 'floor'} rounding of the pools; {cfg.optim.epochs} epoch(s) of batch {cfg.optim.batch_size}, lr "
        f"{cfg.optim.lr}, {cfg.optim.schedule} schedule, init {cfg.model.init} (the init claim's arms: "
        f"1 epoch, their own init); preset `{p.name}`",
        *[f"- {', '.join(f'`{c}`' for c in plan.claims if CLAIMS[c].regime == name)}: regime `{name}`, "
          f"{_regime_text(plan.config('baseline@' + name, 0))}" for name in p.regimes
          if any(CLAIMS[c].regime == name for c in plan.claims)],
        f"- seeds: {plan.seeds} per arm (0..{plan.seeds - 1}), each on its own draw of the training images where "
        "a limit applies; differences are paired by seed",
        f"- each claim has one primary measure (its first row); the primary measures are one family (Holm, "
        f"{ALPHA:g} in all): Holm-adjusted p-values, each interval at its Holm level (1 - {ALPHA:g}/(m - rank)), "
        "and an effect stands only where the adjusted p is at most "
        f"{ALPHA:g}; other rows carry plain 95% intervals and say (secondary)",
        "- verdicts on size (margins and thresholds fixed in the preset before any run): `agrees` (the interval "
        "excludes zero on the paper's side and, where the paper gives a number, holds it), `smaller`/`larger than "
        "the paper`, `no effect` (the interval lies inside the measure's margin around zero), `opposite to the "
        "paper`, `inconclusive`; a step measure with a run that never reached its threshold is censored, so "
        "inconclusive. The paper's numbers are ImageNet's (Fig. 1's is CIFAR-10's): on other data `smaller` or "
        "`larger than the paper` says how the sizes compare, not that either is wrong", "",
        "| claim | measure | paper | baseline arm | changed arm | change - baseline [interval] | verdict | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in claims.items():
        if "skipped" in entry:
            lines.append(f"| {name} | | | | | | not measured: {entry['skipped']} | |")
            continue
        for row in entry["measures"]:
            base, change, diff, verdict = _row_text(row)
            lines.append(f"| {name} | {METRIC_NAMES[row['metric']]} | {row['paper']} | {base} | {change} | "
                         f"{diff} | {verdict} | {row['seeds']} |")
    lines += ["", "Errors are in percent, differences in percentage points. Steps count optimizer steps of the "
              "given batch to the preset's training-error threshold (smoothed over a tenth of an epoch); a step "
              "ratio is the geometric mean of the per-seed ratios.", ""]
    for name, entry in claims.items():
        if "threshold" in entry and entry["threshold"] is not None:
            lines.append(f"- `{name}`: threshold {100 * entry['threshold']:.0f}% training error (fixed in the "
                         f"preset), window {entry['window']} steps")
    lines += _power_lines(claims)
    lines += ["", "## Arms", "", "| arm | what | runs | top-1 error (mean ± sd) | train error | wall time per run |",
              "|---|---|---|---|---|---|"]
    for arm, runs in results.items():
        if not runs:
            continue
        err = stats.mean_sd([r["top1_error"] for r in runs])
        tr = stats.mean_sd([r["train_error"] for r in runs])
        wall = stats.mean_sd([r["wall_s"] for r in runs])[0]
        lines.append(f"| {arm} | {arm_of(arm).what} | {len(runs)} | {100 * err[0]:.2f} ± {100 * err[1]:.2f} | "
                     f"{100 * tr[0]:.2f} ± {100 * tr[1]:.2f} | {wall:.0f} s |")
    lines += ["", "Per-seed values: `results.json`. Figures: `fig1.png` (training error, ReLU vs tanh), "
              "`init.png` (the first epoch under both inits), `claims.png` (every difference with its interval), "
              "`fig3.png` (conv1's kernels).", ""]
    if context.get("fig3"):
        lines += ["## Fig. 3", "", context["fig3"], ""]
    return "\n".join(lines)


def _power_lines(claims: dict) -> list[str]:
    """Per claim with a number in the paper: the seeds its measured spread asks for to detect that
    number with power 0.8 at the family's strictest level (ALPHA / m), so that the next run can
    take its seeds from this one as a pilot."""
    primary = [(n, m) for n, e in claims.items() for m in e.get("measures", []) if m["primary"]]
    out = []
    for name, m in primary:
        if m["paper_value"] is None or m.get("n", 0) < 2:
            continue
        need = stats.seeds_for_power(m["sd_diff"], abs(m["paper_value"]), ALPHA / len(primary), 0.8, 200)
        size = f"{math.exp(m['paper_value']):.2g}x" if m["metric"] == "steps_ratio" else \
            f"{_fmt(m['metric'], m['paper_value'], True)} points"
        out.append(f"- `{name}`: to detect the paper's {size} with power 0.8 at level {ALPHA:g}/{len(primary)}, "
                   f"this spread asks for {need} seeds{' or more' if need == 200 else ''} (ran {m['n']})")
    return (["", "Seeds for the next run, with this one as its pilot:", *out] if out else [])


def _regime_text(cfg: TrainConfig) -> str:
    text = f"{cfg.data.limit_train or 'all'} training images, {cfg.optim.epochs} epochs"
    if cfg.optim.stop_at_train_error:
        text = (f"{cfg.data.limit_train or 'all'} training images; each run stops at "
                f"{cfg.optim.stop_at_train_error:.0%} training error or after {cfg.optim.epochs} epochs")
    if cfg.data.limit_val:
        text += f" (validation during training on {cfg.data.limit_val} images, the final error on the whole split)"
    return text


def _val_images(results: dict) -> str:
    for runs in results.values():
        for r in runs:
            if r.get("val_images"):
                return f"{r['val_images']:,}"
    return "?"


def build_report(plan: Plan, command: str) -> dict:
    """results.json, report.md and the figures from the finished runs; returns the analysis."""
    from . import figures as figures

    results = load_results(plan)
    claims = analyse(plan, results)
    context = {"command": command, "machine": machine(plan.device),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if "fig3" in plan.claims and results.get("baseline"):
        context["fig3"] = figures.fig3(plan.run_dir("baseline", 0), plan.out / "fig3.png", plan.colour)
    base, tanh = CLAIMS["relu-tanh"].runs
    if results.get(base) and results.get(tanh):
        figures.fig1({"baseline": results[base], "tanh": results[tanh]}, claims.get("relu-tanh", {}),
                     plan.out / "fig1.png")
    if results.get("bias-one") and results.get("bias-zero"):
        figures.init_curves(results, plan.out / "init.png")
    figures.claims_chart(claims, plan.out / "claims.png")
    summary = {"preset": dataclasses.asdict(plan.preset), "seeds": plan.seeds, "data": plan.data,
               "overrides": plan.overrides, "colour": plan.colour, "claims": claims,
               "runs": {a: [{k: v for k, v in r.items() if not k.startswith("trace")} for r in runs]
                        for a, runs in results.items()},
               **context}
    atomic_write_text(plan.out / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(plan.out / "report.md", report_markdown(plan, results, claims, context) + "\n")
    return claims


# ---------------------------------------------------------------------------
# The whole command.


PLAN_FILE = "plan.json"


def make_plan(claims: list[str], preset: str = "auto", seeds: int = 0, data: str = "fashion-mnist",
              out: str = "runs/reproduce", device: str = "auto", overrides: dict | None = None) -> Plan:
    p = resolve_preset(preset, device)
    if seeds < 0 or (seeds and seeds < 2):
        raise AlexNetError(f"--seeds must be at least 2 (an interval needs two), got {seeds}")
    from ..training.config import validate

    plan = Plan(select_claims(claims), p, seeds or p.seeds, data, Path(out), device, dict(overrides or {}))
    for arm in plan.arms():
        validate(plan.config(arm, 0))  # an impossible setting fails here, before anything runs
    return plan


def save_plan(plan: Plan) -> None:
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out / PLAN_FILE, json.dumps(
        {"claims": plan.claims, "preset": plan.preset.name, "seeds": plan.seeds, "data": plan.data,
         "device": plan.device, "overrides": plan.overrides, "colour": plan.colour}, indent=2) + "\n")


def load_plan(out: str | Path) -> Plan:
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise AlexNetError(f"{path} not found: --report needs the directory of an `alexnet reproduce` run")
    d = json.loads(path.read_text())
    plan = Plan(d["claims"], PRESETS[d["preset"]], d["seeds"], d["data"], Path(out), d["device"], d["overrides"])
    plan.colour = d["colour"]
    return plan


def reproduce(plan: Plan, log=print) -> dict:
    """Run every arm the plan's claims need (skipping finished runs), then write the report of
    every claim measured in ``plan.out`` so far."""
    report = _merge_previous(plan)
    plan.colour = report.colour = not is_grayscale(plan.data, plan.device)
    save_plan(report)
    start = time.perf_counter()
    run_plan(plan, log)
    claims = build_report(report, plan.command())
    log(f"reproduce: finished in {_duration(time.perf_counter() - start)}; report {plan.out / 'report.md'}")
    return claims


def _merge_previous(plan: Plan) -> Plan:
    """The plan the report covers: this one, with the claims and seeds of earlier calls on the
    same directory, which must have used the same setting."""
    previous = plan.out / PLAN_FILE
    if not previous.is_file():
        return dataclasses.replace(plan)
    old = json.loads(previous.read_text())
    if (old["preset"], old["data"], old["overrides"]) != (plan.preset.name, plan.data, plan.overrides):
        raise AlexNetError(f"{plan.out} holds runs of another setting (preset {old['preset']}, data "
                           f"{old['data']}, {old['overrides'] or 'no overrides'}); choose another --out")
    return dataclasses.replace(plan, claims=list(dict.fromkeys(old["claims"] + plan.claims)),
                               seeds=max(plan.seeds, old["seeds"]))
