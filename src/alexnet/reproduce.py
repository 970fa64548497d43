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
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import stats
from .curves import smooth_window, smoothed, steps_to  # noqa: F401  (steps_to: part of this module's API)
from .config import TrainConfig, apply_overrides
from .errors import AlexNetError
from .files import atomic_write_text

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
    Arm("pool-2x2", "2x2 stride-2 max pooling (same map sizes)", {"overlap_pool": False}),
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
    """One compared quantity. ``expect``: the sign of (change - base) the paper predicts."""

    metric: str
    expect: int
    paper: str  # the paper's figure for this measure, as text


@dataclass(frozen=True)
class Claim:
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
CLAIMS = {c.name: c for c in (
    Claim("relu-tanh", "ReLU trains faster than tanh", "baseline", "tanh",
          (Measure("steps_ratio", +1, "about 6x (25% training error, CIFAR-10, Fig. 1)"),
           Measure(ERR, +1, "")),
          "section 3.1, Fig. 1"),
    Claim("lrn", "local response normalisation lowers the error", "baseline", "no-lrn",
          (Measure(ERR, +1, "+1.4 points"), Measure("top5_error", +1, "+1.2 points")), "section 3.3"),
    Claim("overlap-pool", "overlapping pooling lowers the error", "baseline", "pool-2x2",
          (Measure(ERR, +1, "+0.4 points"), Measure("top5_error", +1, "+0.3 points")), "section 3.4"),
    # Overfitting needs many passes over few images: these two run in the preset's "small" regime.
    Claim("dropout", "dropout prevents overfitting, at about twice the iterations", "baseline", "no-dropout",
          (Measure("gap", +1, "substantial overfitting without it"), Measure(ERR, +1, ""),
           Measure("steps", -1, "about half the iterations to converge")), "section 4.2", regime="small"),
    Claim("augment", "random crops and flips prevent overfitting", "baseline", "no-augment",
          (Measure("gap", +1, "substantial overfitting without them"), Measure(ERR, +1, "")), "section 4.1",
          regime="small"),
    Claim("lighting", "PCA colour noise lowers the error", "baseline", "no-lighting",
          (Measure(ERR, +1, "over +1 point"),), "section 4.1", needs_colour=True),
    Claim("towers", "two towers beat one tower of half the kernels", "baseline", "half",
          (Measure(ERR, +1, "+1.7 points"), Measure("top5_error", +1, "+1.2 points"),
           Measure("steps", +1, "the two-tower net trains slightly faster")), "section 3.2"),
    Claim("lenet", "AlexNet improves on LeNet-5", "baseline", "lenet5",
          (Measure(ERR, +1, "(AlexNet as LeNet's successor)"),), "LeCun et al. 1998"),
    Claim("init", "biases of 1 accelerate the early stages of learning", "bias-zero", "bias-one",
          (Measure("epoch1_loss", -1, "faster early learning with biases 1"), Measure("epoch1_error", -1, "")),
          "section 5"),
    Claim("fig3", "conv1 kernels: tower 1 colour-agnostic, tower 2 colour-specific", "baseline", "baseline",
          (), "section 6.1, Fig. 3", needs_colour=True),
    Claim("bn", "batch normalisation in place of LRN (2015, beyond the paper)", "baseline", "bn",
          (Measure(ERR, -1, "(Ioffe and Szegedy 2015: lower error)"),), "beyond the paper", beyond_paper=True),
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


PRESETS = {
    # A 2-core CPU in under an hour: Fashion-MNIST at the paper network's smallest input
    # (67 px crops of 76 px images), 6,000 training images, 2 epochs of the paper's batch 128.
    # The init is He's (kaiming) and the schedule cosine: the paper's N(0, 0.01) init does not
    # leave chance within such a budget (the init claim measures exactly that). The rate warms
    # up over half an epoch: at 67 px pool5 is 1x1 and fc6 sees it 36 times over, so its weights
    # move 36 times as fast as at 227 px; without the warm-up the loss blew up in the first
    # steps (to 20) and the arms without LRN never recovered (a first attempt, measured).
    "cpu": Preset("cpu", "2-core CPU, under an hour",
                  dict(resize=76, crop=67, epochs=2, limit_train=6000, init="kaiming", schedule="cosine",
                       warmup_epochs=0.5),
                  dict(resize=36, crop=32),
                  # Overfitting (dropout, augmentation): 1,500 images seen 8 times, about the same steps.
                  # Validation during training on 500 images; the final error on all 5,000.
                  regimes={"small": dict(limit_train=1500, epochs=8, limit_val=500)}),
    # The full-size network at 227 px on a GPU, the whole training set.
    "gpu": Preset("gpu", "one GPU, the full-size network",
                  dict(resize=256, crop=227, epochs=10, init="kaiming", schedule="cosine", warmup_epochs=0.5),
                  dict(resize=36, crop=32),
                  regimes={"small": dict(limit_train=10000, epochs=30, limit_val=1000)}),
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
        flags = {**COMMON, **self.preset.train, **regime, **self.overrides, **a.overrides, "data": self.data,
                 "seed": seed, "device": self.device, "out": str(self.run_dir(key, seed))}
        if a.name == "lenet5":
            flags.update(self.preset.lenet)
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
    lines = []
    for c in CLAIMS.values():
        paper = "; ".join(f"{m.metric}: {m.paper}" for m in c.measures if m.paper) or "a figure"
        lines.append(f"{c.name:<13} {c.title}  [{c.source}]\n{'':<13} arms {' vs '.join(c.runs)}; paper: {paper}")
    lines += ["", "--preset cifar (the paper's own CIFAR-10 experiments, on cuda-convnet's networks):",
              f"{'relu-tanh':<13} ReLU reaches 25% training error faster than tanh  [section 3.1, Fig. 1]\n"
              f"{'':<13} cifar-18pct, relu vs tanh, each at its fastest rate; paper: about 6x",
              f"{'lrn':<13} cross-map normalisation lowers the test error  [section 3.3]\n"
              f"{'':<13} cifar-11pct with vs without cmrnorm; paper: 13% vs 11%"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Running the arms.


def is_grayscale(data: str, device: str = "auto") -> bool:
    """Whether the data's images have three equal channels (Fashion-MNIST): then colour claims
    (PCA lighting, Fig. 3's colour kernels) cannot show anything."""
    from .data import loader
    from .runtime import resolve_device

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
    from .checkpoint import CHECKPOINT_NAME
    from .train import fit

    run = plan.run_dir(arm, seed)
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    cfg = plan.config(arm, seed)
    if (run / CHECKPOINT_NAME).is_file():
        fit(TrainConfig(out=str(run)), resume=True)
    else:
        fit(cfg, overwrite=True)
    result = measure(plan, run, cfg)
    result["wall_s"] = time.perf_counter() - start
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    (run / CHECKPOINT_NAME).unlink(missing_ok=True)  # the weights stay; the optimizer state is not needed
    return result


def measure(plan: Plan, run: Path, cfg: TrainConfig) -> dict:
    """A finished run's figures: final validation error, clean training error (eval mode, no
    augmentation) on its first training images, the train-validation gap, and the per-step
    curve the speed claims read."""
    from .infer import evaluate_weights
    from .visualize import read_metrics

    history = read_metrics(run)
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
    from safetensors import safe_open

    from .checkpoint import WEIGHTS_NAME

    with safe_open(str(run / WEIGHTS_NAME), framework="pt") as f:
        return json.loads(f.metadata()["alexnet"])


def run_plan(plan: Plan, log=print) -> None:
    """Every (arm, seed) the plan needs, in order, with progress and an ETA."""
    jobs = [(arm, seed) for seed in range(plan.seeds) for arm in plan.arms()]
    todo = [(a, s) for a, s in jobs if not (plan.run_dir(a, s) / "result.json").is_file()]
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


def common_threshold(traces: list[list[float]], window: int) -> float | None:
    """The training error every run reaches: the lowest multiple of 5% at or above every run's
    best (smoothed) training error."""
    best = []
    for t in traces:
        if len(t) < window:
            return None
        best.append(min(smoothed(t, window)))
    return math.ceil(max(best) * 20 - 1e-9) / 20


def load_results(plan: Plan) -> dict[str, list[dict]]:
    """Each arm's finished runs, by seed (arms with a missing seed are kept partial)."""
    out = {}
    for arm in plan.arms():
        runs = [plan.run_dir(arm, s) / "result.json" for s in range(plan.seeds)]
        out[arm] = [json.loads(r.read_text()) for r in runs if r.is_file()]
    return out


def _paired_values(results: dict, claim: Claim, metric: str, steps_for: dict) -> tuple[list, list]:
    base_key, change_key = claim.runs
    base = {r["seed"]: r for r in results.get(base_key, [])}
    change = {r["seed"]: r for r in results.get(change_key, [])}
    seeds = sorted(set(base) & set(change))
    if metric in ("steps", "steps_ratio"):
        a = [steps_for[(base_key, s)] for s in seeds]
        b = [steps_for[(change_key, s)] for s in seeds]
        keep = [i for i in range(len(seeds)) if a[i] is not None and b[i] is not None]
        a, b = [a[i] for i in keep], [b[i] for i in keep]
        if metric == "steps_ratio":
            return [1.0] * len(a), [y / x for x, y in zip(a, b)]
        return a, b
    return [base[s][metric] for s in seeds], [change[s][metric] for s in seeds]


def analyse(plan: Plan, results: dict[str, list[dict]]) -> dict:
    """Per claim and measure: both arms' mean and sd, the paired difference with its 95%
    interval, and the verdict. ``steps`` measures use one training-error threshold that every
    run of the claim's two arms reaches (stated in the results)."""
    claims = {}
    for name in plan.claims:
        c = CLAIMS[name]
        entry = {"title": c.title, "source": c.source, "base": c.runs[0], "change": c.runs[1],
                 "beyond_paper": c.beyond_paper, "measures": []}
        if c.needs_colour and not plan.colour:
            entry["skipped"] = "the data are grayscale (three equal channels): colour cannot show"
            claims[name] = entry
            continue
        runs = results.get(c.runs[0], []) + results.get(c.runs[1], [])
        steps_for, threshold = {}, None
        if any(m.metric.startswith("steps") for m in c.measures) and runs:
            window = smooth_window(runs[0]["steps_per_epoch"] or 1)
            threshold = common_threshold([r["trace_error"] for r in runs], window)
            for arm in c.runs:
                for r in results.get(arm, []):
                    steps_for[(arm, r["seed"])] = steps_to(r["trace_error"], threshold, window) if threshold else None
            entry.update(threshold=threshold, window=window)
        for m in c.measures:
            a, b = _paired_values(results, c, m.metric, steps_for)
            row = {"metric": m.metric, "paper": m.paper, "expect": m.expect, "seeds": len(a)}
            if a:
                p = stats.paired(a, b)
                row.update(p.as_dict(), verdict=p.verdict(m.expect), base_values=a, change_values=b)
            else:
                row["verdict"] = "no data"
            entry["measures"].append(row)
        claims[name] = entry
    return claims


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
    if m == "steps_ratio":
        base = "1x"
        change = f"{row['mean_b']:.2f}x ± {row['sd_b']:.2f}"
        diff = f"ratio {row['mean_b']:.2f} [{1 + row['ci_low']:.2f}, {1 + row['ci_high']:.2f}]"
    else:
        base = f"{_fmt(m, row['mean_a'])} ± {_fmt(m, row['sd_a']).rstrip('%')}"
        change = f"{_fmt(m, row['mean_b'])} ± {_fmt(m, row['sd_b']).rstrip('%')}"
        diff = f"{_fmt(m, row['mean_diff'], True)} [{_fmt(m, row['ci_low'], True)}, {_fmt(m, row['ci_high'], True)}]"
    return base, change, diff, row["verdict"]


def report_markdown(plan: Plan, results: dict, claims: dict, context: dict) -> str:
    p = plan.preset
    cfg = plan.config("baseline", 0)
    lines = [
        "# AlexNet's claims, measured", "",
        f"Made by `{context['command']}` on {context['machine']}, {context['date']}.", "",
        f"- data: `{plan.data}` ({'grayscale' if not plan.colour else 'colour'}), "
        f"{cfg.data.limit_train or 'all'} training images, validation on the held-out/val split "
        f"({_val_images(results)} images, center crop); no arm is tuned, the test split is not read",
        f"- input: {cfg.data.crop} px crops of {cfg.data.resize} px images (LeNet-5: {p.lenet['crop']} of "
        f"{p.lenet['resize']}); {cfg.optim.epochs} epoch(s) of batch {cfg.optim.batch_size}, lr "
        f"{cfg.optim.lr}, {cfg.optim.schedule} schedule, init {cfg.model.init} (the init claim's arms: "
        f"1 epoch, their own init); preset `{p.name}`",
        *[f"- {', '.join(f'`{c}`' for c in plan.claims if CLAIMS[c].regime == name)}: regime `{name}`, "
          f"{_regime_text(plan.config('baseline@' + name, 0))}" for name in p.regimes
          if any(CLAIMS[c].regime == name for c in plan.claims)],
        f"- seeds: {plan.seeds} per arm (0..{plan.seeds - 1}); differences are paired by seed; intervals are "
        "95% Student-t intervals of the mean paired difference",
        "- verdict: `agrees` when the interval excludes zero on the paper's side, `disagrees` when it excludes "
        "it on the other side, `inconclusive` when it spans zero", "",
        "| claim | measure | paper | baseline arm | changed arm | change - baseline [95% CI] | verdict | seeds |",
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
              "given batch; a threshold is the lowest multiple of 5% training error (smoothed over a tenth "
              "of an epoch) that every run of both arms reaches.", ""]
    for name, entry in claims.items():
        if "threshold" in entry and entry["threshold"] is not None:
            lines.append(f"- `{name}`: threshold {100 * entry['threshold']:.0f}% training error, window "
                         f"{entry['window']} steps")
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


def _regime_text(cfg: TrainConfig) -> str:
    text = f"{cfg.data.limit_train or 'all'} training images, {cfg.optim.epochs} epochs"
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
    from . import reproduce_figures as figures

    results = load_results(plan)
    claims = analyse(plan, results)
    context = {"command": command, "machine": machine(plan.device),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if "fig3" in plan.claims and results.get("baseline"):
        context["fig3"] = figures.fig3(plan.run_dir("baseline", 0), plan.out / "fig3.png", plan.colour)
    if results.get("baseline") and results.get("tanh"):
        figures.fig1(results, claims.get("relu-tanh", {}), plan.out / "fig1.png")
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


def machine(device: str) -> str:
    from .runtime import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        what = torch.cuda.get_device_name(dev)
    else:
        what = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    return f"{what} ({dev.type}), torch {torch.__version__}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------
# The whole command.


PLAN_FILE = "plan.json"


def make_plan(claims: list[str], preset: str = "auto", seeds: int = 0, data: str = "fashion-mnist",
              out: str = "runs/reproduce", device: str = "auto", overrides: dict | None = None) -> Plan:
    p = resolve_preset(preset, device)
    if seeds < 0 or (seeds and seeds < 2):
        raise AlexNetError(f"--seeds must be at least 2 (an interval needs two), got {seeds}")
    from .config import validate

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
