"""``alexnet reproduce --preset cifar``: the paper's own CIFAR-10 experiments, on the networks
of the code it ran (``models/convnet.py``), with every measure, threshold, grid and seed fixed here
before any run.

``relu-tanh`` (section 3.1, Fig. 1): "a four-layer convolutional neural network with ReLUs
reaches a 25% training error rate on CIFAR-10 six times faster than an equivalent network
with tanh neurons"; each network's learning rate chosen to train as fast as possible; no
regularisation. Here: ``cifar-18pct`` with ReLU or tanh in every layer, no weight decay and
no augmentation. Each arm's rate is the one of ``LR_GRID`` that reaches 25% in the fewest
steps on ``TUNING_SEED``, a seed that is not reported; then ``FIG1_SEEDS`` reported seeds.
Primary measure: tanh's steps over ReLU's to 25% training error (the mean of the last tenth
of an epoch's steps), paired by seed. A run stops at 25% or at a cap of ``CAP_FACTOR`` times
the most steps any ReLU run needed; a capped tanh run is reported as "at least".

``lrn`` (section 3.3): "our four-layer CNN achieved a 13% test error rate without
normalization and 11% with normalization". Here: ``cifar-11pct`` with and without its
cross-map normalisation, both from cuda-convnet's recipe (rate 0.001, the layer file's weight
decay, 24-px random crops and flips) for ``SEC33["epochs"]`` epochs, the rate divided by 10
twice near the end as cuda-convnet did after its ~500. Primary measure: the test error of
10 views (cuda-convnet's multiview test), without minus with. Seeds: ``LRN_PILOT_SEEDS``
first, then as many as a power calculation on their spread asks for (``seeds_for_power``),
at most ``LRN_MAX_SEEDS``.

Both primary measures form one family: their verdicts use Holm's levels (``stats.holm``).
Everything is resumable: finished runs leave ``result.json``, interrupted ones a checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import stats
from ..training.config import TrainConfig, apply_overrides, validate
from .runner import THRESHOLD, Study, machine, test_errors  # THRESHOLD: Fig. 1's training error
from ..errors import AlexNetError
from ..files import atomic_write_text

RATIO_PAPER = 6.0
RATIO_MARGIN = 1.25  # "no effect": the ratio's interval inside [1/1.25, 1.25]
# The rates each Fig. 1 arm may take, in the order they are tried (the choice does not depend
# on the order: a rate that cannot beat the best so far is stopped once it has used as many steps;
# ties go to the smaller rate).
LR_GRID = (0.004, 0.008, 0.002, 0.016, 0.001, 0.032, 0.0005)
MAX_EXTENSIONS = 3  # rates beyond the grid when the fastest is at an end of it
TUNING_SEED = 1000
FIG1_SEEDS = 3
CAP_FACTOR = 8
RELU_CAP_EPOCHS = 40  # a ReLU run (or a tuning run before any cap is known) stops here at the latest
LRN_PAPER = 0.02  # 13% - 11%
LRN_MARGIN = 0.005  # "no effect": the interval inside +-0.5 points
LRN_PILOT_SEEDS, LRN_MAX_SEEDS = 2, 6
ALPHA, POWER = 0.05, 0.8
CLAIMS = ("relu-tanh", "lrn")

# fp32 everywhere (auto would pick bf16 on some CPUs and every GPU): the same arithmetic on any machine.
COMMON = dict(resize=32, batch_size=128, momentum=0.9, init="paper", normalize="mean-image", lighting=0.0,
              precision="fp32", trace_steps=True, log_every=300.0)
# layers-18pct.cfg without its weight decay (Fig. 1: "no regularization of any kind"), full 32-px
# images, no augmentation, a constant rate.
FIG1 = dict(COMMON, variant="cifar-18pct", crop=32, random_crop=False, flip=False, weight_decay=0.0,
            schedule="multistep", milestones="", stop_at_train_error=THRESHOLD)
# layers-conv-local-11pct.cfg and its params file: epsW 0.001, wc 0.004 (per-layer multiples in
# the network), 24-px crops and flips (cuda-convnet's cifar-cropped provider).
SEC33 = dict(COMMON, variant="cifar-11pct", crop=24, random_crop=True, flip=True, lr=0.001, weight_decay=0.004,
             schedule="multistep", epochs=20, milestones="16,18")


# ---------------------------------------------------------------------------
# relu-tanh: tune each arm's rate, then the reported seeds.


def _epochs_for(steps: int, per_epoch: int) -> int:
    return max(1, math.ceil(steps / per_epoch))


def tune(study: Study, arm: str, cap_steps: int | None, per_epoch: int | None) -> dict:
    """The rate that reaches 25% in the fewest steps on the tuning seed (ties: the smaller rate),
    from ``LR_GRID``, extended by factors of 2 beyond whichever end wins (at most
    ``MAX_EXTENSIONS`` times), so that the fastest rate is shown to lie inside the rates tried.
    A rate is stopped once it has used as many epochs as the best so far needs. If none reaches
    25% within the cap: the rate with the lowest training error at the cap."""
    grid, table, runs, extensions = list(LR_GRID), {}, {}, 0
    while True:
        for lr in [g for g in grid if g not in runs]:
            best = _fastest(runs)
            limits = [s for s in (cap_steps, best and runs[best]["steps"]) if s]  # the cap, the best so far
            epochs = _epochs_for(min(limits), per_epoch) if limits and per_epoch else RELU_CAP_EPOCHS
            runs[lr] = study.run(f"relu-tanh/tune/{arm}/lr{lr:g}", {**FIG1, "activation": arm, "lr": lr,
                                                                   "epochs": epochs}, TUNING_SEED)
            per_epoch = per_epoch or runs[lr]["steps_per_epoch"]
            r = runs[lr]
            table[f"{lr:g}"] = r["steps"] or ("diverged" if r["diverged"] else f">{r['epochs'] * per_epoch}")
        best = _fastest(runs)
        edge = best in (min(grid), max(grid)) if best else False
        if not edge or extensions == MAX_EXTENSIONS:
            break
        grid.append(best * 2 if best == max(grid) else best / 2)
        extensions += 1
    if best is None:  # nothing reached the mark: the lowest error at the cap (every run had the same cap)
        finite = {lr: r.get("last_error") for lr, r in runs.items()
                  if not r["diverged"] and r.get("last_error") is not None}
        if not finite:
            raise AlexNetError(f"every rate tried made {arm} diverge: {', '.join(map(str, sorted(runs)))}")
        best = min(finite, key=lambda lr: (finite[lr], lr))
    return {"lr": best, "steps": runs[best]["steps"], "reached": runs[best]["steps"] is not None,
            "grid": {k: table[k] for k in sorted(table, key=float)}, "per_epoch": per_epoch,
            "train_time_s": sum(r["train_time_s"] for r in runs.values())}


def _fastest(runs: dict[float, dict]) -> float | None:
    reached = {lr: r["steps"] for lr, r in runs.items() if r["steps"]}
    return min(reached, key=lambda lr: (reached[lr], lr)) if reached else None


def relu_tanh(study: Study) -> dict:
    relu = tune(study, "relu", None, None)
    per_epoch = relu["per_epoch"]
    relu_runs = [study.run(f"relu-tanh/relu/lr{relu['lr']:g}/seed{s}",
                           {**FIG1, "activation": "relu", "lr": relu["lr"], "epochs": RELU_CAP_EPOCHS}, s)
                 for s in range(FIG1_SEEDS)]
    most = max([relu["steps"] or RELU_CAP_EPOCHS * per_epoch] +
               [r["steps"] or RELU_CAP_EPOCHS * per_epoch for r in relu_runs])
    cap_epochs = _epochs_for(CAP_FACTOR * most, per_epoch)
    tanh = tune(study, "tanh", cap_epochs * per_epoch, per_epoch)
    tanh_runs = [study.run(f"relu-tanh/tanh/lr{tanh['lr']:g}/seed{s}",
                           {**FIG1, "activation": "tanh", "lr": tanh["lr"], "epochs": cap_epochs}, s)
                 for s in range(FIG1_SEEDS)]
    return {"tuning": {"relu": relu, "tanh": tanh}, "cap_steps": cap_epochs * per_epoch,
            "runs": {"relu": relu_runs, "tanh": tanh_runs},
            **ratio_measure(relu_runs, tanh_runs, cap_epochs * per_epoch)}


def ratio_measure(relu_runs: list[dict], tanh_runs: list[dict], cap_steps: int) -> dict:
    """Per seed, tanh's steps over ReLU's. A tanh run that does not reach the mark by the cap
    (or diverges) gives a lower bound, the cap ("censored"); a ReLU run that does not reach it
    leaves its seed without a ratio ("failed"), which makes the verdict inconclusive.
    The summary is on log ratios (paired t), reported as ratios."""
    rows = []
    for a, b in zip(relu_runs, tanh_runs):
        censored = not b["steps"]
        tanh_steps = cap_steps if censored else b["steps"]
        ratio = tanh_steps / a["steps"] if a["steps"] else None
        rows.append({"seed": a["seed"], "relu": a["steps"], "tanh": tanh_steps, "ratio": ratio,
                     "censored": censored, "relu_failed": not a["steps"], "tanh_diverged": bool(b["diverged"])})
    usable = [r for r in rows if r["ratio"] is not None]
    out = {"per_seed": rows, "censored": any(r["censored"] for r in usable),
           "relu_failed": any(r["relu_failed"] for r in rows)}
    if usable:
        logs = [math.log(r["ratio"]) for r in usable]
        out["paired"] = stats.paired([0.0] * len(logs), logs).as_dict()
        out["geomean"] = math.exp(sum(logs) / len(logs))
    return out


# ---------------------------------------------------------------------------
# lrn: a pilot, a power calculation, the rest of the seeds.


def lrn(study: Study) -> dict:
    def pair(seed: int) -> tuple[dict, dict]:
        return tuple(study.run(f"lrn/{norm}/seed{seed}", {**SEC33, "norm": norm}, seed, test_errors(study))
                     for norm in ("lrn", "none"))

    runs = [pair(s) for s in range(LRN_PILOT_SEEDS)]
    alpha = ALPHA / len(CLAIMS)  # the level each of the family's two measures is judged at
    base, change = _lrn_values(runs)
    sd = stats.paired(base, change).sd_diff if len(base) >= 2 else math.inf
    need = stats.seeds_for_power(sd, LRN_PAPER, alpha, POWER, LRN_MAX_SEEDS + 1) if math.isfinite(sd) else math.inf
    seeds = min(max(3, need), LRN_MAX_SEEDS)
    runs += [pair(s) for s in range(LRN_PILOT_SEEDS, seeds)]
    base, change = _lrn_values(runs)
    failed = [a["seed"] for a, b in runs if a["diverged"] or b["diverged"]]
    return {"pilot": {"pilot_seeds": LRN_PILOT_SEEDS, "sd_diff": sd, "alpha": alpha, "power": POWER, "delta": LRN_PAPER,
                      "seeds_needed": need, "capped": need > LRN_MAX_SEEDS, "seeds": seeds},
            "runs": {"lrn": [r[0] for r in runs], "none": [r[1] for r in runs]}, "diverged_seeds": failed,
            "paired": stats.paired(base, change).as_dict() if base else None}


def _lrn_values(runs: list[tuple[dict, dict]]) -> tuple[list[float], list[float]]:
    """The 10-view test errors of the seeds where neither arm diverged."""
    kept = [(a, b) for a, b in runs if not a["diverged"] and not b["diverged"]]
    return [a["test_error_10view"] for a, _ in kept], [b["test_error_10view"] for _, b in kept]


# ---------------------------------------------------------------------------
# Verdicts, the family, the report.


def verdicts(results: dict) -> dict:
    """Each primary measure's p-value (no effect), Holm-adjusted over the family, and its verdict
    on size from a Bonferroni interval (level 1 - ALPHA / 2, as both measures are judged)."""
    tests = {name: stats.Paired(**results[name]["paired"]) for name in CLAIMS
             if results.get(name, {}).get("paired")}
    names = list(tests)
    ps = [stats.p_value(tests[n]) for n in names]
    adjusted = stats.holm([1.0 if math.isnan(p) else p for p in ps])
    level = 1 - ALPHA / len(CLAIMS)
    out = {}
    for name, p, adj in zip(names, ps, adjusted):
        low, high = stats.interval(tests[name], level)
        row = {"p": p, "p_holm": adj, "level": level, "n": tests[name].n}
        if name == "relu-tanh":
            c = results[name]
            verdict = stats.size_verdict(low, high, +1, math.log(RATIO_PAPER), math.log(RATIO_MARGIN))
            if c["relu_failed"]:
                verdict = f"{stats.INCONCLUSIVE} (a ReLU run did not reach {THRESHOLD:.0%})"
            elif c["censored"]:
                verdict = f"{stats.INCONCLUSIVE} (censored: tanh did not reach {THRESHOLD:.0%} by the cap)"
            out[name] = {**row, "low": math.exp(low), "high": math.exp(high), "estimate": c["geomean"],
                         "censored": c["censored"], "verdict": verdict}
        else:
            verdict = stats.size_verdict(low, high, +1, LRN_PAPER, LRN_MARGIN)
            if results[name]["diverged_seeds"]:
                verdict = f"{verdict} (seeds {results[name]['diverged_seeds']} diverged and are left out)"
            out[name] = {**row, "low": low, "high": high, "estimate": tests[name].mean_diff, "verdict": verdict}
    return out


def overfit_flags() -> dict:
    """The regularisers' baseline: section 3.3's recipe in the regime that overfits."""
    from .cifar_overfit import OVERFIT

    return {**SEC33, **OVERFIT}


def run_study(claims: list[str], data: str, out: str | Path, device: str = "auto", command: str = "",
              log: Callable[[str], None] = print) -> dict:
    """Run the claims (each resumable), then write ``results.json``, ``report.md`` and the figures
    (the report keeps the claims an earlier call on ``out`` measured). The paper's two CIFAR-10
    claims first, then the regularisers' family (``cifar_overfit``), whose claims
    named together share their runs."""
    from . import cifar_overfit as overfit

    known = (*CLAIMS, *overfit.CLAIMS)
    bad = [c for c in claims if c not in known]
    if bad:
        raise AlexNetError(f"the cifar preset measures {', '.join(known)}; not {', '.join(bad)}")
    study = Study(data, Path(out), device, log, threshold=THRESHOLD)
    arms = [{**overfit_flags(), **change} for change in overfit.ARMS.values()]
    for flags in (FIG1, SEC33, *arms):  # an impossible setting fails here, before anything runs
        validate(apply_overrides(TrainConfig(), {**flags, "data": data, "device": device, "out": str(out)}))
    start = time.perf_counter()
    results = _previous(study.out)
    wanted = claims or list(known)
    for claim in [c for c in CLAIMS if c in wanted]:
        results[claim] = relu_tanh(study) if claim == "relu-tanh" else lrn(study)
        _write(study, results, command)  # the report so far, after each claim
    family = [c for c in overfit.CLAIMS if c in wanted]
    if family:
        def progress(partial: dict) -> None:  # the report so far, after each seed
            _write(study, {**results, "overfit": partial}, command)

        results["overfit"] = overfit.run_claims(study, overfit_flags(), family, results.get("overfit"), progress)
        _write(study, results, command)
    log(f"reproduce cifar: finished in {time.perf_counter() - start:.0f} s; report {study.out / 'report.md'}")
    return results


def _previous(out: Path) -> dict:
    path = out / "results.json"
    return json.loads(path.read_text())["claims"] if path.is_file() else {}


def _write(study: Study, results: dict, command: str) -> None:
    from . import figures as figures

    from . import cifar_overfit as overfit

    family = results.get("overfit")
    summary = {"command": command, "claims": results, "verdicts": verdicts(results),
               "overfit_verdicts": overfit.verdicts(family) if family else {}, "data": study.data,
               "machine": machine(study.device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "settings": {"fig1": FIG1, "sec33": SEC33, "lr_grid": LR_GRID, "tuning_seed": TUNING_SEED,
                            "cap_factor": CAP_FACTOR, "threshold": THRESHOLD, "alpha": ALPHA,
                            "overfit": overfit_flags(), "overfit_arms": overfit.ARMS}}
    slim = json.loads(json.dumps(summary))
    for claim in slim["claims"].values():
        for runs in claim.get("runs", {}).values():
            for r in runs:
                r.pop("trace_error", None)
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.out / "results.json", json.dumps(slim, indent=1) + "\n")
    runs = results.get("relu-tanh", {}).get("runs", {})
    if runs.get("relu") and "trace_error" in runs["relu"][0]:
        figures.fig1({"baseline": runs["relu"], "tanh": runs["tanh"]},
                     {"window": runs["relu"][0]["window"], "threshold": THRESHOLD}, study.out / "fig1.png")
    if family:
        overfit.figure(family, study.out / "overfit.png")
        towers = next((r for r in family["runs"].get("towers", []) if not r["diverged"]), None)
        if towers:
            figures.fig3(study.out / f"overfit/towers/seed{towers['seed']}", study.out / "fig3-cifar.png", True)
    atomic_write_text(study.out / "report.md", render(slim) + "\n")


# ---------------------------------------------------------------------------
# report.md


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def render(summary: dict) -> str:
    claims, verdict = summary["claims"], summary["verdicts"]
    lines = ["# The paper's CIFAR-10 claims, measured", "",
             f"Made by `{summary['command']}` on {summary['machine']}, {summary['date']}; data `{summary['data']}`.",
             "Every measure, threshold, grid and seed below was fixed in `src/alexnet/reproduce/cifar.py` before "
             "any run. The test split is read only after a run has trained (its 10-view and center-crop error) "
             "and never to choose anything; the rates are chosen on training error, on a seed not reported.", "",
             "| claim | primary measure | paper | measured [interval] | verdict | seeds | p (Holm) |",
             "|---|---|---|---|---|---|---|"]
    if "relu-tanh" in verdict:
        v = verdict["relu-tanh"]
        at_least = "at least " if v["censored"] else ""
        lines.append(f"| relu-tanh | tanh's steps / ReLU's to {THRESHOLD:.0%} training error | 6x | "
                     f"{at_least}{v['estimate']:.2f}x [{v['low']:.2f}, {v['high']:.2f}] | {v['verdict']} | "
                     f"{v['n']} | {v['p_holm']:.2g} |")
    if "lrn" in verdict:
        v = verdict["lrn"]
        lines.append(f"| lrn | 10-view test error, without minus with normalisation | +2.00 points (13% vs 11%, "
                     f"after ~520 epochs) | {100 * v['estimate']:+.2f} [{100 * v['low']:+.2f}, "
                     f"{100 * v['high']:+.2f}] points after {SEC33['epochs']} epochs | {v['verdict']} | {v['n']} | "
                     f"{v['p_holm']:.2g} |")
    lines += ["", f"Intervals: {100 * (1 - ALPHA / len(CLAIMS)):.1f}% Student-t intervals of the mean paired "
              "difference (of log ratios for relu-tanh), Bonferroni's level for the two primary measures, so that "
              f"together they hold with {1 - ALPHA:.0%} confidence; p: the paired t-test of no effect, "
              "Holm-adjusted over the two. Verdicts: `agrees` when the interval excludes no effect and holds the "
              "paper's number; `smaller`/`larger than the paper` when it excludes no effect and lies below/above "
              "it; `no effect` inside a margin fixed in advance (a ratio within "
              f"1/{RATIO_MARGIN} to {RATIO_MARGIN}; +-{100 * LRN_MARGIN:.1f} points); `opposite to the paper`; "
              "else `inconclusive`. Seeds: those with a measure in both arms.", ""]
    if "relu-tanh" in claims:
        lines += _relu_tanh_text(claims["relu-tanh"])
    if "lrn" in claims:
        lines += _lrn_text(claims["lrn"])
    if "overfit" in claims:
        from .cifar_overfit import render as render_overfit

        lines += render_overfit(claims["overfit"], summary["overfit_verdicts"])
    return "\n".join(lines)


def _minutes(runs: dict) -> str:
    return f"{sum(r['train_time_s'] for rs in runs.values() for r in rs) / 60:.0f} min"


def _relu_tanh_text(c: dict) -> list[str]:
    t = c["tuning"]
    rates = sorted(set(t["relu"]["grid"]) | set(t["tanh"]["grid"]), key=float)
    lines = ["## ReLU against tanh (section 3.1, Fig. 1)", "",
             "`cifar-18pct` (cuda-convnet's layers-18pct: four layers with weights) with ReLU or tanh (a = b = 1) "
             "in every layer, no weight decay, dropout or augmentation, 32-px images minus the mean image, 45,000 "
             "training images (5,000 held out), batch 128, momentum 0.9, a constant rate. Training error: the "
             "mean over the last tenth of an epoch's steps, in train mode. Rates tried on seed "
             f"{TUNING_SEED} (steps to {THRESHOLD:.0%}; `>N`: stopped after N steps without reaching it):", "",
             "| rate | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
    for arm in ("relu", "tanh"):
        lines.append(f"| {arm} | " + " | ".join(str(t[arm]["grid"].get(k, "")) for k in rates) + " |")
    unreached = [arm for arm in ("relu", "tanh") if not t[arm]["reached"]]
    lines += ["", f"Chosen: ReLU {t['relu']['lr']:g}, tanh {t['tanh']['lr']:g}"
              + (f" ({', '.join(unreached)}: no rate reached {THRESHOLD:.0%}; the lowest error at the cap)"
                 if unreached else "")
              + f". Cap: {c['cap_steps']} steps ({CAP_FACTOR} times the most steps a ReLU run needed, in whole "
              f"epochs of {t['relu']['per_epoch']} steps).", "",
              "| seed | ReLU steps | tanh steps | ratio |", "|---|---|---|---|"]
    for r in c["per_seed"]:
        bound = ">= " if r["censored"] else ""
        ratio = "-" if r["ratio"] is None else f"{bound}{r['ratio']:.2f}"
        tanh = f"{bound}{r['tanh']}" + (" (diverged)" if r["tanh_diverged"] else "")
        lines.append(f"| {r['seed']} | {r['relu'] or 'did not reach'} | {tanh} | {ratio} |")
    tuning = sum(t[arm].get("train_time_s", 0) for arm in ("relu", "tanh")) / 60
    lines += ["", f"Training error against epochs: `fig1.png`. Training time of the reported runs: "
              f"{_minutes(c['runs'])}; of the tuning runs: {tuning:.0f} min.", ""]
    return lines


def _lrn_text(c: dict) -> list[str]:
    p = c["pilot"]
    need = f"more than {LRN_MAX_SEEDS}: capped" if p["capped"] else f"{p['seeds_needed']}"
    lines = ["## Response normalisation (section 3.3)", "",
             f"`cifar-11pct` (cuda-convnet's layers-conv-local-11pct) with and without its two cross-map "
             f"normalisation layers, {SEC33['epochs']} epochs (the rate 0.001 divided by 10 after epochs "
             f"{SEC33['milestones']}) where cuda-convnet ran about 520 on all 50,000 images (here 45,000, 5,000 "
             "held out); 24-px random crops and flips; test error of 10 views (four corners, center, their "
             "mirror images). The paper's 13% and 11% come from those long runs on the original images.", "",
             f"Seeds: a pilot of {p['pilot_seeds']} gave a paired sd of {100 * p['sd_diff']:.2f} points; detecting "
             f"the paper's {100 * p['delta']:.0f} points with power {p['power']} at level {p['alpha']:.3f} takes "
             f"{need} seeds; run: {p['seeds']} (at least 3, at most {LRN_MAX_SEEDS}; the pilot's seeds are among "
             f"them). Concluding `no effect` needs the whole interval inside +-{100 * LRN_MARGIN:.1f} points, "
             "which this many seeds reach only if the spread is small.", "",
             "| seed | with: 10-view test error | without | with: center crop | without | with: val error | "
             "without |", "|---|---|---|---|---|---|---|"]
    for a, b in zip(c["runs"]["lrn"], c["runs"]["none"]):
        cells = [_pct(r.get(k)) if not r["diverged"] else "diverged" for k in ("test_error_10view",
                 "test_error_center", "val_error") for r in (a, b)]
        lines.append(f"| {a['seed']} | " + " | ".join(cells) + " |")
    lines += ["", f"Training time: {_minutes(c['runs'])}.", ""]
    return lines
