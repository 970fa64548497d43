"""``alexnet reproduce --preset cifar``: the paper's own CIFAR-10 experiments, on the networks
of the code it ran (``convnet.py``), with every measure, threshold, grid and seed fixed here
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import stats
from .config import TrainConfig, apply_overrides, validate
from .curves import smooth_window, steps_to
from .errors import AlexNetError
from .files import atomic_write_text

THRESHOLD = 0.25  # Fig. 1's training error
RATIO_PAPER = 6.0
RATIO_MARGIN = 1.25  # "no effect": the ratio's interval inside [1/1.25, 1.25]
# The rates each Fig. 1 arm may take, in the order they are tried (the choice does not depend
# on the order: a rate that cannot beat the best so far is stopped once it has used as many steps).
LR_GRID = (0.004, 0.008, 0.002, 0.016, 0.001, 0.032, 0.0005)
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


@dataclass
class Study:
    data: str
    out: Path
    device: str = "auto"
    log: Callable[[str], None] = print

    def run(self, key: str, flags: dict, seed: int, measure: Callable[[Path], dict] | None = None) -> dict:
        """One training run under ``out/key`` (resumed if interrupted); its ``result.json``."""
        from .checkpoint import CHECKPOINT_NAME
        from .train import fit

        path = self.out / key
        done = path / "result.json"
        if done.is_file():
            return json.loads(done.read_text())
        cfg = apply_overrides(TrainConfig(), {**flags, "data": self.data, "seed": seed, "device": self.device,
                                              "out": str(path)})
        self.log(f"reproduce cifar: {key} (lr {cfg.optim.lr:g}, at most {cfg.optim.epochs} epochs)")
        start, diverged = time.perf_counter(), None
        try:
            if (path / CHECKPOINT_NAME).is_file():
                fit(TrainConfig(out=str(path)), resume=True)
            else:
                fit(cfg, overwrite=True)
        except AlexNetError as e:
            if "diverged" not in str(e):
                raise
            diverged = str(e)
        result = {**_curve(path), "seed": seed, "lr": cfg.optim.lr, "max_epochs": cfg.optim.epochs,
                  "diverged": diverged, "wall_s": time.perf_counter() - start}
        if measure and not diverged:
            result.update(measure(path))
        atomic_write_text(done, json.dumps(result) + "\n")
        (path / CHECKPOINT_NAME).unlink(missing_ok=True)
        return result


def _curve(path: Path) -> dict:
    """The per-step training error and the steps to ``THRESHOLD`` of a finished (or diverged) run."""
    metrics = path / "metrics.jsonl"
    history = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    trace = [e for h in history for e in h.get("trace_error", [])]
    per_epoch = len(history[0]["trace_error"]) if history else 0
    window = smooth_window(per_epoch)
    return {"trace_error": trace, "steps_per_epoch": per_epoch, "window": window, "epochs": len(history),
            "steps": steps_to(trace, THRESHOLD, window) if history else None,
            "train_time_s": sum(h["epoch_time"] for h in history)}


# ---------------------------------------------------------------------------
# relu-tanh: tune each arm's rate, then the reported seeds.


def _epochs_for(steps: int, per_epoch: int) -> int:
    return max(1, math.ceil(steps / per_epoch))


def tune(study: Study, arm: str, cap_steps: int | None, per_epoch: int | None) -> dict:
    """The rate of ``LR_GRID`` that reaches 25% in the fewest steps on the tuning seed (ties: the
    first tried). A rate is stopped once it has used as many epochs as the best so far needs."""
    table, best = {}, None
    for lr in LR_GRID:
        limit = cap_steps if best is None else min(cap_steps or best["steps"], best["steps"])
        epochs = _epochs_for(limit, per_epoch) if limit and per_epoch else RELU_CAP_EPOCHS
        r = study.run(f"relu-tanh/tune/{arm}/lr{lr:g}", {**FIG1, "activation": arm, "lr": lr, "epochs": epochs},
                      TUNING_SEED)
        per_epoch = per_epoch or r["steps_per_epoch"]
        table[f"{lr:g}"] = r["steps"] or ("diverged" if r["diverged"] else f">{r['epochs'] * per_epoch}")
        if r["steps"] and (best is None or r["steps"] < best["steps"]):
            best = {"lr": lr, "steps": r["steps"]}
    if best is None:
        raise AlexNetError(f"no rate of {LR_GRID} brought {arm} to {THRESHOLD:.0%} training error within the cap")
    return {"lr": best["lr"], "steps": best["steps"], "grid": table, "per_epoch": per_epoch}


def relu_tanh(study: Study, seeds: int) -> dict:
    relu = tune(study, "relu", None, None)
    per_epoch = relu["per_epoch"]
    relu_runs = [study.run(f"relu-tanh/relu/seed{s}", {**FIG1, "activation": "relu", "lr": relu["lr"],
                                                      "epochs": RELU_CAP_EPOCHS}, s) for s in range(seeds)]
    most = max([relu["steps"]] + [r["steps"] or RELU_CAP_EPOCHS * per_epoch for r in relu_runs])
    cap = CAP_FACTOR * most
    tanh = tune(study, "tanh", cap, per_epoch)
    tanh_runs = [study.run(f"relu-tanh/tanh/seed{s}", {**FIG1, "activation": "tanh", "lr": tanh["lr"],
                                                      "epochs": _epochs_for(cap, per_epoch)}, s)
                 for s in range(seeds)]
    return {"tuning": {"relu": relu, "tanh": tanh}, "cap_steps": _epochs_for(cap, per_epoch) * per_epoch,
            "runs": {"relu": relu_runs, "tanh": tanh_runs}, **ratio_measure(relu_runs, tanh_runs)}


def ratio_measure(relu_runs: list[dict], tanh_runs: list[dict]) -> dict:
    """Per seed, tanh's steps over ReLU's; a capped tanh run gives a lower bound ("censored").
    The summary is on log ratios (paired t), reported as ratios."""
    rows = []
    for a, b in zip(relu_runs, tanh_runs):
        if not a["steps"]:
            rows.append({"seed": a["seed"], "relu": None, "tanh": b["steps"], "ratio": None, "censored": False})
            continue
        tanh_steps = b["steps"] or b["epochs"] * b["steps_per_epoch"]
        rows.append({"seed": a["seed"], "relu": a["steps"], "tanh": tanh_steps, "ratio": tanh_steps / a["steps"],
                     "censored": not b["steps"]})
    usable = [r for r in rows if r["ratio"]]
    out = {"per_seed": rows, "censored": any(r["censored"] for r in usable)}
    if len(usable) >= 1:
        logs = [math.log(r["ratio"]) for r in usable]
        out["paired"] = stats.paired([0.0] * len(logs), logs).as_dict()
        out["geomean"] = math.exp(sum(logs) / len(logs))
    return out


# ---------------------------------------------------------------------------
# lrn: a pilot, a power calculation, the rest of the seeds.


def _test_errors(study: Study) -> Callable[[Path], dict]:
    def measure(path: Path) -> dict:
        from .infer import evaluate_weights

        ten = evaluate_weights(path, split="test", ten_crop=True, device=study.device, progress=False)
        center = evaluate_weights(path, split="test", device=study.device, progress=False)
        val = evaluate_weights(path, split="val", device=study.device, progress=False)
        return {"test_error_10view": ten.top1_error, "test_error_center": center.top1_error,
                "val_error": val.top1_error, "test_images": ten.images}
    return measure


def lrn(study: Study) -> dict:
    def pair(seed: int) -> tuple[dict, dict]:
        return tuple(study.run(f"lrn/{norm}/seed{seed}", {**SEC33, "norm": norm}, seed, _test_errors(study))
                     for norm in ("lrn", "none"))

    runs = [pair(s) for s in range(LRN_PILOT_SEEDS)]
    pilot = stats.paired(*_lrn_values(runs))
    alpha = ALPHA / len(CLAIMS)  # Holm's strictest level in this family
    need = max(3, stats.seeds_for_power(pilot.sd_diff, LRN_PAPER, alpha, POWER, LRN_MAX_SEEDS))
    runs += [pair(s) for s in range(LRN_PILOT_SEEDS, need)]
    base, change = _lrn_values(runs)
    return {"pilot": {"seeds": LRN_PILOT_SEEDS, "sd_diff": pilot.sd_diff, "alpha": alpha, "power": POWER,
                      "delta": LRN_PAPER, "seeds_needed": need},
            "runs": {"lrn": [r[0] for r in runs], "none": [r[1] for r in runs]},
            "paired": stats.paired(base, change).as_dict()}


def _lrn_values(runs: list[tuple[dict, dict]]) -> tuple[list[float], list[float]]:
    return [a["test_error_10view"] for a, _ in runs], [b["test_error_10view"] for _, b in runs]


# ---------------------------------------------------------------------------
# Verdicts, the family, the report.


def verdicts(results: dict) -> dict:
    """Each primary measure's p-value, Holm-adjusted p-value, interval at its Holm level and verdict."""
    tests = {}
    if results.get("relu-tanh", {}).get("paired"):
        tests["relu-tanh"] = stats.Paired(**results["relu-tanh"]["paired"])
    if results.get("lrn", {}).get("paired"):
        tests["lrn"] = stats.Paired(**results["lrn"]["paired"])
    names = list(tests)
    ps = [stats.p_value(tests[n]) for n in names]
    adjusted = stats.holm([1.0 if math.isnan(p) else p for p in ps])
    levels = stats.holm_levels([1.0 if math.isnan(p) else p for p in ps], ALPHA)
    out = {}
    for name, p, adj, level in zip(names, ps, adjusted, levels):
        low, high = stats.interval(tests[name], level)
        if name == "relu-tanh":
            censored = results[name]["censored"]
            verdict = stats.size_verdict(low, high, +1, math.log(RATIO_PAPER), math.log(RATIO_MARGIN))
            if censored and verdict != stats.LARGER:
                verdict = f"{stats.INCONCLUSIVE} (censored: tanh hit the cap)"
            out[name] = {"p": p, "p_holm": adj, "level": level, "low": math.exp(low), "high": math.exp(high),
                         "estimate": results[name]["geomean"], "verdict": verdict, "censored": censored}
        else:
            out[name] = {"p": p, "p_holm": adj, "level": level, "low": low, "high": high,
                         "estimate": tests[name].mean_diff,
                         "verdict": stats.size_verdict(low, high, +1, LRN_PAPER, LRN_MARGIN)}
    return out


def run_study(claims: list[str], data: str, out: str | Path, device: str = "auto", seeds: int = 0,
              command: str = "", log: Callable[[str], None] = print) -> dict:
    """Run the claims (each resumable), then write ``results.json``, ``report.md`` and ``fig1.png``
    (the report keeps the claims an earlier call on ``out`` measured)."""
    bad = [c for c in claims if c not in CLAIMS]
    if bad:
        raise AlexNetError(f"the cifar preset measures {', '.join(CLAIMS)}; not {', '.join(bad)}")
    study = Study(data, Path(out), device, log)
    for flags in (FIG1, SEC33):  # an impossible setting fails here, before anything runs
        validate(apply_overrides(TrainConfig(), {**flags, "data": data, "device": device, "out": str(out)}))
    start = time.perf_counter()
    results = _previous(study.out)
    for claim in claims or CLAIMS:
        results[claim] = relu_tanh(study, seeds or FIG1_SEEDS) if claim == "relu-tanh" else lrn(study)
        _write(study, results, command)  # the report so far, after each claim
    log(f"reproduce cifar: finished in {time.perf_counter() - start:.0f} s; report {study.out / 'report.md'}")
    return results


def _previous(out: Path) -> dict:
    path = out / "results.json"
    return json.loads(path.read_text())["claims"] if path.is_file() else {}


def _write(study: Study, results: dict, command: str) -> None:
    from . import reproduce_figures as figures
    from .reproduce import machine

    summary = {"command": command, "claims": results, "verdicts": verdicts(results), "data": study.data,
               "machine": machine(study.device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "settings": {"fig1": FIG1, "sec33": SEC33, "lr_grid": LR_GRID, "tuning_seed": TUNING_SEED,
                            "cap_factor": CAP_FACTOR, "threshold": THRESHOLD, "alpha": ALPHA}}
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
    atomic_write_text(study.out / "report.md", render(slim) + "\n")


# ---------------------------------------------------------------------------
# report.md


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def render(summary: dict) -> str:
    claims, verdict = summary["claims"], summary["verdicts"]
    lines = ["# The paper's CIFAR-10 claims, measured", "",
             f"Made by `{summary['command']}` on {summary['machine']}, {summary['date']}; data `{summary['data']}`.",
             "Every measure, threshold, grid and seed below was fixed in `src/alexnet/reproduce_cifar.py` before "
             "any run; the test split is read once per run, after training, and never to choose anything.", "",
             "| claim | primary measure | paper | measured [interval] | Holm level | verdict | seeds |",
             "|---|---|---|---|---|---|---|"]
    if "relu-tanh" in verdict:
        v, c = verdict["relu-tanh"], claims["relu-tanh"]
        at_least = "at least " if v["censored"] else ""
        lines.append(f"| relu-tanh | tanh's steps / ReLU's to {THRESHOLD:.0%} training error | 6x | "
                     f"{at_least}{v['estimate']:.2f}x [{v['low']:.2f}, {v['high']:.2f}] | {v['level']:.3f} | "
                     f"{v['verdict']} | {len(c['per_seed'])} |")
    if "lrn" in verdict:
        v, c = verdict["lrn"], claims["lrn"]
        lines.append(f"| lrn | 10-view test error, without minus with normalisation | +2.00 points (13% vs 11%) | "
                     f"{100 * v['estimate']:+.2f} [{100 * v['low']:+.2f}, {100 * v['high']:+.2f}] points | "
                     f"{v['level']:.3f} | {v['verdict']} | {len(c['runs']['lrn'])} |")
    lines += ["", "Verdicts: `agrees` when the interval holds the paper's number; `smaller`/`larger than the paper` "
              "when it excludes no effect on the paper's side but not the paper's number; `no effect` inside "
              f"the margin fixed in advance (ratio within 1/{RATIO_MARGIN} to {RATIO_MARGIN}; "
              f"+-{100 * LRN_MARGIN:.1f} points); `opposite to the paper`; else `inconclusive`. Intervals are "
              "Student-t intervals of the mean paired difference (of log ratios for relu-tanh) at each measure's "
              f"Holm level, so that the two together keep a {1 - ALPHA:.0%} family-wise level.", ""]
    if "relu-tanh" in claims:
        lines += _relu_tanh_text(claims["relu-tanh"])
    if "lrn" in claims:
        lines += _lrn_text(claims["lrn"])
    return "\n".join(lines)


def _relu_tanh_text(c: dict) -> list[str]:
    t = c["tuning"]
    lines = ["## ReLU against tanh (section 3.1, Fig. 1)", "",
             "`cifar-18pct` (cuda-convnet's layers-18pct: four layers with weights) with ReLU or tanh in every "
             "layer, no weight decay, dropout or augmentation, 32-px images minus the mean image, batch 128, "
             f"momentum 0.9, a constant rate. Rates tried on seed {TUNING_SEED} (steps to {THRESHOLD:.0%}; "
             "`>N`: stopped after N steps without reaching it):", "",
             "| rate | " + " | ".join(t["relu"]["grid"]) + " |", "|---|" + "---|" * len(t["relu"]["grid"])]
    for arm in ("relu", "tanh"):
        grid = t[arm]["grid"]
        lines.append(f"| {arm} | " + " | ".join(str(grid.get(k, "")) for k in t["relu"]["grid"]) + " |")
    lines += ["", f"Chosen: ReLU {t['relu']['lr']:g}, tanh {t['tanh']['lr']:g}. Cap: {c['cap_steps']} steps "
              f"({CAP_FACTOR} times the most steps a ReLU run needed, in whole epochs of "
              f"{t['relu']['per_epoch']} steps).", "",
              "| seed | ReLU steps | tanh steps | ratio |", "|---|---|---|---|"]
    for r in c["per_seed"]:
        ratio = "-" if r["ratio"] is None else f"{'>= ' if r['censored'] else ''}{r['ratio']:.2f}"
        lines.append(f"| {r['seed']} | {r['relu'] or '-'} | {('>= ' if r['censored'] else '') + str(r['tanh'])} "
                     f"| {ratio} |")
    wall = sum(r["wall_s"] for runs in c["runs"].values() for r in runs)
    lines += ["", f"Training error against epochs: `fig1.png`. Wall time of the reported runs: {wall / 60:.0f} min.",
              ""]
    return lines


def _lrn_text(c: dict) -> list[str]:
    p = c["pilot"]
    lines = ["## Response normalisation (section 3.3)", "",
             f"`cifar-11pct` (cuda-convnet's layers-conv-local-11pct) with and without its two cross-map "
             f"normalisation layers, {SEC33['epochs']} epochs (the rate 0.001 divided by 10 after epochs "
             f"{SEC33['milestones']}) where cuda-convnet ran about 520; 24-px random crops and flips; test "
             "error of 10 views (four corners, center, their mirror images). The paper's 13% and 11% come "
             "from those long runs on the original images.", "",
             f"Seeds: a pilot of {p['seeds']} gave a paired sd of {100 * p['sd_diff']:.2f} points; detecting the "
             f"paper's {100 * p['delta']:.0f} points with power {p['power']} at level {p['alpha']:.3f} (Holm's "
             f"strictest) takes {p['seeds_needed']} seeds (at least 3, at most {LRN_MAX_SEEDS}).", "",
             "| seed | with: 10-view test error | without | with: center crop | without | with: val error | "
             "without |", "|---|---|---|---|---|---|---|"]
    for a, b in zip(c["runs"]["lrn"], c["runs"]["none"]):
        lines.append(f"| {a['seed']} | {_pct(a['test_error_10view'])} | {_pct(b['test_error_10view'])} | "
                     f"{_pct(a['test_error_center'])} | {_pct(b['test_error_center'])} | {_pct(a['val_error'])} | "
                     f"{_pct(b['val_error'])} |")
    wall = sum(r["wall_s"] for runs in c["runs"].values() for r in runs)
    lines += ["", f"Wall time: {wall / 60:.0f} min.", ""]
    return lines
