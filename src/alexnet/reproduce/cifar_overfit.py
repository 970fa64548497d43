"""The paper's regularisers and its Fig. 3 on CIFAR-10, in a regime that overfits: the second
family of ``alexnet reproduce --preset cifar`` (the first, ``reproduce.cifar``, holds the
paper's own CIFAR-10 claims).

The paper measured these on ImageNet, where its network overfits without them (sections 3.4,
4.1, 4.2; Fig. 3). Here the network is ``cifar-11pct`` (cuda-convnet's, as in section 3.3)
with the whole recipe as the baseline: overlapping pooling, dropout 0.5 before fc10 (where
Hinton et al. 2012 put it in this network), 24-px random crops and flips, PCA lighting 0.1.
It trains on ``IMAGES`` training images (each seed draws its own) for ``OVERFIT["epochs"]``
passes, so that an arm without crops and flips memorises them (``overfit.png`` shows the
curves that say whether it did). Each arm takes one thing away, and ``towers`` splits conv1
and conv2 into the paper's two towers. Every measure, margin and seed rule is fixed here
before any run:

- ``overlap-pool``: 10-view test error, 2x2 pooling minus overlapping (paper, ImageNet: +0.4).
- ``dropout``, ``augment``: the generalisation gap (validation error minus the error on the
  run's own training images, both center crops in eval mode), without minus with.
- ``lighting``: 10-view test error, without minus with (paper, ImageNet: "over 1 point"). The
  noise uses ImageNet's PCA (``data.transforms``); CIFAR-10's own, from 5,000 training images
  of the JPEG set, has the same eigenvectors to 0.04 and eigenvalues 0.79, 0.68 and 0.60 of
  ImageNet's, so the noise here is some 1.3 times what the paper's recipe would draw.
- ``fig3``: the colour gap, |mean colourfulness of conv1's kernels 0-31 minus 32-63|, the
  two-tower net's (its towers) minus the one-tower baseline's (an arbitrary halving, the
  gap chance gives). The paper: one tower colour-agnostic, the other colour-specific.

The paper gives no CIFAR-10 size for any of them: a verdict says whether the interval
excludes no effect on the paper's side (``agrees``), lies inside the margin (``no effect``),
or neither. Seeds: ``PILOT_SEEDS`` first, then what a power calculation on their spread asks
for to detect ``DETECT`` (at most ``MAX_SEEDS``). The five primary measures are one family:
Holm's correction across them, intervals at Bonferroni's level 1 - 0.05/5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import stats

IMAGES = 5000
PILOT_SEEDS, MIN_SEEDS, MAX_SEEDS = 2, 3, 6
ALPHA, POWER = 0.05, 0.8
# cuda-convnet's 11pct recipe (cifar.SEC33) with the paper's regularisers, on 5,000 images
# seen 40 times (1,560 steps of 128), the rate divided by 10 after epochs 32 and 36 (as SEC33 at
# 16 and 18 of 20). Validation during training on 1,000 of the 5,000 held-out images (the curves);
# the final figures on all of them and on the 10,000 test images.
OVERFIT = dict(limit_train=IMAGES, limit_val=1000, epochs=40, milestones="32,36", dropout=0.5, lighting=0.1)
ARMS = {"baseline": {}, "pool-2x2": {"overlap_pool": False}, "no-dropout": {"dropout": 0.0},
        "no-augment": {"random_crop": False, "flip": False}, "no-lighting": {"lighting": 0.0},
        "towers": {"towers": 2}}
TEST_ERROR, CENTER_ERROR = "test_error_10view", "test_error_center"


@dataclass(frozen=True)
class Claim:
    """``arm`` against the baseline on ``metric`` (arm minus baseline), of predicted sign
    ``expect``; ``margin``: the band of "no effect"; ``detect``: the size the power calculation
    asks to detect; ``also``: measures reported beside it, uncorrected."""

    name: str
    title: str
    arm: str
    metric: str
    expect: int
    paper: str
    margin: float
    detect: float
    also: tuple[str, ...] = ()


# Margins of "no effect": 0.2 points of test error (half the smallest effect the paper reports,
# overlapping pooling's 0.4, as the ImageNet presets'), 0.5 points of gap, 0.05 of colourfulness
# (a sixteenth of the way from a gray kernel, 0, to one of independent channels, about 0.8).
# Sizes to detect: the paper's ImageNet figures where it gives them (0.4 and 1 point), 5 points
# of gap for "substantial overfitting", 0.1 of colourfulness for towers that differ in colour.
# The augment arm's secondary error is the center crop's: it never trained on the corners.
CLAIMS = {c.name: c for c in (
    Claim("overlap-pool", "overlapping pooling lowers the error (section 3.4)", "pool-2x2", TEST_ERROR, +1,
          "+0.4 points top-1 (ImageNet)", 0.002, 0.004, ("gap",)),
    Claim("dropout", "dropout prevents overfitting (section 4.2)", "no-dropout", "gap", +1,
          "substantial overfitting without it (ImageNet)", 0.005, 0.05, (TEST_ERROR,)),
    Claim("augment", "random crops and flips prevent overfitting (section 4.1)", "no-augment", "gap", +1,
          "substantial overfitting without them (ImageNet)", 0.005, 0.05, (CENTER_ERROR,)),
    Claim("lighting", "PCA colour noise lowers the error (section 4.1)", "no-lighting", TEST_ERROR, +1,
          "over +1 point top-1 (ImageNet)", 0.002, 0.01, ("gap",)),
    Claim("fig3", "one tower's conv1 kernels colour-agnostic, the other's coloured (Fig. 3)", "towers",
          "colour_gap", +1, "towers differ in colour (ImageNet)", 0.05, 0.1, (TEST_ERROR,)),
)}


def colour_halves(weight: torch.Tensor) -> tuple[float, float]:
    """The mean colourfulness of conv1's first and second half of kernels (towers 1 and 2)."""
    from .figures import colourfulness

    c, half = colourfulness(weight), weight.shape[0] // 2
    return c[:half].mean().item(), c[half:].mean().item()


def measure(study) -> Callable[[Path], dict]:
    """A finished run's figures: the lrn claim's test and validation errors, the error on its own
    training images (eval mode, center crops), the gap, conv1's colour by half, and the
    per-epoch curves."""
    from ..training.checkpoint import load_model
    from ..infer import evaluate_weights
    from .runner import test_errors
    from ..training.config import from_dict
    from ..training.rundir import RunDir

    def run(path: Path) -> dict:
        errors = test_errors(study)(path)
        drawn = from_dict(RunDir(path).read_config()).data.limit_train  # the run's own draw
        train = evaluate_weights(path, split="train", limit=drawn, device=study.device, workers=0, progress=False)
        model, _, _ = load_model(path)
        halves = colour_halves(model.features.conv1.weight)
        history = RunDir(path).read_metrics(required=True)
        return {**errors, "train_error": train.top1_error, "train_images": train.images,
                "gap": errors["val_error"] - train.top1_error,
                "colour": halves, "colour_gap": abs(halves[0] - halves[1]),
                "curve_train": [1 - h["train_top1"] for h in history],
                "curve_val": [h["val_top1_error"] for h in history]}
    return run


def run_claims(study, flags: dict, names: list[str], earlier: dict | None = None,
               progress: Callable[[dict], None] | None = None) -> dict:
    """The baseline's and the named claims' arms (with those an ``earlier`` result measured) on
    the pilot seeds, on the seeds the power calculation asks for, then the claims' paired
    comparisons. ``flags``: the baseline's settings (SEC33 with OVERFIT). The family stays all
    five claims whichever are named. ``progress`` receives the comparisons so far after each
    seed from the pilot's on (``pilot.seeds_done`` below ``pilot.seeds`` while unfinished)."""
    names = [n for n in CLAIMS if n in names or n in (earlier or {})]
    arms = ["baseline", *(CLAIMS[n].arm for n in names)]

    def seed_runs(seed: int) -> dict:
        return {arm: study.run(f"overfit/{arm}/seed{seed}", {**flags, **ARMS[arm]}, seed, measure(study))
                for arm in arms}

    runs = [seed_runs(s) for s in range(PILOT_SEEDS)]
    need = {name: _seeds_needed(CLAIMS[name], runs) for name in names}
    seeds = min(max(MIN_SEEDS, *need.values()), MAX_SEEDS)
    pilot = {"pilot_seeds": PILOT_SEEDS, "seeds_needed": need, "seeds": seeds, "alpha": ALPHA / len(CLAIMS),
             "power": POWER}
    for seed in range(PILOT_SEEDS, seeds):
        if progress:
            progress(_compare(runs, arms, names, pilot))
        runs.append(seed_runs(seed))
    return _compare(runs, arms, names, pilot)


def _compare(runs: list[dict], arms: list[str], names: list[str], pilot: dict) -> dict:
    out = {"pilot": {**pilot, "seeds_done": len(runs)}, "runs": {arm: [r[arm] for r in runs] for arm in arms}}
    for name in names:
        c = CLAIMS[name]
        base, change, failed = _values(runs, c.arm, c.metric)
        out[name] = {"paired": stats.paired(base, change).as_dict() if base else None, "diverged_seeds": failed,
                     "also": {m: _also(runs, c.arm, m) for m in c.also}}
    return out


def _values(runs: list[dict], arm: str, metric: str) -> tuple[list[float], list[float], list[int]]:
    """The baseline's and the arm's ``metric`` over the seeds where neither diverged."""
    kept = [r for r in runs if not r["baseline"]["diverged"] and not r[arm]["diverged"]]
    failed = [r["baseline"]["seed"] for r in runs if r not in kept]
    return [r["baseline"][metric] for r in kept], [r[arm][metric] for r in kept], failed


def _also(runs: list[dict], arm: str, metric: str) -> dict | None:
    base, change, _ = _values(runs, arm, metric)
    return stats.paired(base, change).as_dict() if len(base) >= 2 else None


def _seeds_needed(c: Claim, runs: list[dict]) -> int:
    """Seeds to detect ``c.detect`` with ``POWER`` at the family's Bonferroni level, from the pilot's
    spread (``MAX_SEEDS + 1`` when more than the most allowed, or when the pilot lacks two seeds)."""
    base, change, _ = _values(runs, c.arm, c.metric)
    if len(base) < 2:
        return MAX_SEEDS + 1
    sd = stats.paired(base, change).sd_diff
    return stats.seeds_for_power(sd, c.detect, ALPHA / len(CLAIMS), POWER, MAX_SEEDS + 1)


def verdicts(results: dict) -> dict:
    """Each claim's p-value, Holm-adjusted over the family, and its verdict on size from the
    Bonferroni interval."""
    tests = {n: stats.Paired(**results[n]["paired"]) for n in CLAIMS if results.get(n, {}).get("paired")}
    ps = {n: stats.p_value(t) for n, t in tests.items()}
    # Holm over all five: a claim not measured (not named, or every seed diverged) counts with p = 1
    adjusted = dict(zip(CLAIMS, stats.holm([1.0 if math.isnan(ps.get(n, math.nan)) else ps[n] for n in CLAIMS])))
    level = 1 - ALPHA / len(CLAIMS)
    out = {}
    for name, t in tests.items():
        c, p, adj = CLAIMS[name], ps[name], adjusted[name]
        low, high = stats.interval(t, level)
        verdict = stats.size_verdict(low, high, c.expect, None, c.margin)
        if results[name]["diverged_seeds"]:
            verdict = f"{verdict} (seeds {results[name]['diverged_seeds']} diverged and are left out)"
        out[name] = {"p": p, "p_holm": adj, "level": level, "n": t.n, "estimate": t.mean_diff, "low": low,
                     "high": high, "verdict": verdict}
    return out


# ---------------------------------------------------------------------------
# The report's section and its figure.

_UNITS = {TEST_ERROR: ("points", 100), CENTER_ERROR: ("points", 100), "gap": ("points", 100), "colour_gap": ("", 1)}
_NAMES = {TEST_ERROR: "10-view test error", CENTER_ERROR: "center-crop test error", "gap": "val - train error",
          "colour_gap": "colour gap"}


def _fmt(value: float, metric: str) -> str:
    unit, scale = _UNITS[metric]
    return f"{scale * value:+.2f}" if unit else f"{value:+.3f}"


def render(results: dict, verdict: dict) -> list[str]:
    p = results["pilot"]
    lines = ["## The regularisers and Fig. 3, in a regime that overfits", "",
             f"`cifar-11pct` with the paper's whole recipe as the baseline (overlapping pooling, dropout 0.5 before "
             f"fc10, 24-px random crops and flips, PCA lighting 0.1), {IMAGES:,} training images (each seed its own "
             f"draw) for {OVERFIT['epochs']} epochs, the rate 0.001 divided by 10 after epochs {OVERFIT['milestones']}; "
             "each arm takes one thing away, `towers` splits conv1-conv2 into two towers. The paper measured these "
             "on ImageNet and gives no CIFAR-10 size: a verdict judges direction and the margin of no effect.", "",
             "| claim | primary measure (arm minus baseline) | paper | measured [interval] | verdict | seeds | "
             "p (Holm) | also |", "|---|---|---|---|---|---|---|---|"]
    for name, c in CLAIMS.items():
        if name not in results:
            continue
        if name not in verdict:
            lines.append(f"| {name} | {_NAMES[c.metric]}, {c.arm} | {c.paper} | every seed diverged | | | | |")
            continue
        v, unit = verdict[name], _UNITS[c.metric][0]
        also = "; ".join(f"{_NAMES[m]} {_fmt(a['mean_diff'], m)}" for m, a in results[name]["also"].items() if a)
        lines.append(f"| {name} | {_NAMES[c.metric]}, {c.arm} | {c.paper} | {_fmt(v['estimate'], c.metric)} "
                     f"[{_fmt(v['low'], c.metric)}, {_fmt(v['high'], c.metric)}] {unit} | {v['verdict']} | {v['n']} | "
                     f"{v['p_holm']:.2g} | {also} |")
    need = ", ".join(f"{k} {'more than ' + str(MAX_SEEDS) if n > MAX_SEEDS else n}"
                     for k, n in p["seeds_needed"].items())
    done = p.get("seeds_done", p["seeds"])
    if done < p["seeds"]:
        lines[2:2] = [f"**Unfinished: {done} of {p['seeds']} seeds so far** (the same command continues the study).",
                      ""]
    lines += ["", f"Intervals: {100 * (1 - ALPHA / len(CLAIMS)):.0f}% (Bonferroni over the five); p: paired t, "
              f"Holm-adjusted over the five. Seeds: a pilot of {p['pilot_seeds']}; to detect each claim's size "
              f"with power {POWER}: {need}; run: {p['seeds']} (at least {MIN_SEEDS}, at most {MAX_SEEDS}).", "",
              "| arm | seed | 10-view test error | val error | train error (eval) | gap | colour by half |",
              "|---|---|---|---|---|---|---|"]
    for arm, rs in results["runs"].items():
        for r in rs:
            if r["diverged"]:
                lines.append(f"| {arm} | {r['seed']} | diverged | | | | |")
                continue
            lines.append(f"| {arm} | {r['seed']} | {100 * r[TEST_ERROR]:.2f}% | {100 * r['val_error']:.2f}% | "
                         f"{100 * r['train_error']:.2f}% | {100 * r['gap']:+.2f} | "
                         f"{r['colour'][0]:.3f} / {r['colour'][1]:.3f} |")
    minutes = sum(r["train_time_s"] for rs in results["runs"].values() for r in rs) / 60
    lines += ["", f"Training time: {minutes:.0f} min. Curves: `overfit.png`; the two-tower net's conv1: "
              "`fig3-cifar.png`.", ""]
    return lines


def figure(results: dict, out: Path) -> None:
    """Training error (train mode, with the arm's augmentation and dropout) and validation error
    per epoch, every arm, the first seed: the curves that show which arms overfit."""
    from .figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for i, (arm, rs) in enumerate(results["runs"].items()):
        r = next((r for r in rs if not r["diverged"]), None)
        if r is None:
            continue
        x = range(1, len(r["curve_val"]) + 1)
        ax.plot(x, [100 * e for e in r["curve_train"]], "--", color=f"C{i}", lw=1)
        ax.plot(x, [100 * e for e in r["curve_val"]], "-", color=f"C{i}", lw=1.2, label=f"{arm} (seed {r['seed']})")
    ax.set_xlabel("epochs")
    ax.set_ylabel("error (%)")
    ax.set_title(f"cifar-11pct on {IMAGES:,} images: validation (solid), training (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
