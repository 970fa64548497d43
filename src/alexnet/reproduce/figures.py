"""The figures of ``alexnet reproduce``: Fig. 1 (ReLU vs tanh), the first epoch under both
inits, every claim's difference with its interval, and Fig. 3 (conv1's kernels by tower)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training.curves import smoothed
import torch

from ..files import atomic_write


def pyplot():
    """matplotlib's pyplot on its file-only backend (no display needed), imported when drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path, dpi: int = 100) -> None:
    """``fig`` as a PNG, written atomically, then closed."""
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    pyplot().close(fig)


def _smoothed(trace: list[float], window: int) -> np.ndarray:
    """``curves.smoothed`` as an array; a trace shorter than the window is drawn as it is."""
    return np.asarray(smoothed(trace, window) or trace, dtype=np.float64)


def fig1(results: dict, claim: dict, out: Path) -> None:
    """Training error against epochs, ReLU (solid) and tanh (dashed), every seed, as the paper's
    Fig. 1, with the threshold the step counts use."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    window = claim.get("window", 5)
    # An arm's colour, a seed's shade: at thousands of steps dashes run together, colours do not.
    for arm, style, label, cmap in (("baseline", "-", "ReLU", "Blues"), ("tanh", "--", "tanh", "Reds")):
        runs = results.get(arm, [])
        for i, r in enumerate(runs):
            y = _smoothed(r["trace_error"], window)
            x = (np.arange(len(y)) + window) / max(r["steps_per_epoch"], 1)
            shade = plt.get_cmap(cmap)(0.55 + 0.4 * i / max(len(runs) - 1, 1))
            ax.plot(x, 100 * y, style, color=shade, lw=1.0, label=f"{label}, seed {r['seed']}")
    if claim.get("threshold"):
        ax.axhline(100 * claim["threshold"], color="gray", lw=0.8)
        ax.text(0.01, 100 * claim["threshold"], f"{100 * claim['threshold']:.0f}%", va="bottom", color="gray",
                transform=ax.get_yaxis_transform())
    ax.set_xlabel("epochs")
    ax.set_ylabel(f"training error (%), mean of {window} steps")
    ax.set_title("ReLU (blue, solid) vs tanh (red, dashed): the paper's Fig. 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, out)


def init_curves(results: dict, out: Path) -> None:
    """Loss and training error over the first epoch, biases 1 (paper) vs biases 0, every seed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    arms = (("bias-one", "-", "biases 1 (paper)"), ("bias-zero", "--", "biases 0"),
            ("baseline", ":", "He init (the baseline)"))
    for arm, style, label in arms:
        for i, r in enumerate(results.get(arm, [])):
            steps = r["steps_per_epoch"]
            window = max(1, steps // 10)
            for ax, key, scale in ((axes[0], "trace_loss", 1), (axes[1], "trace_error", 100)):
                y = _smoothed(r[key][:steps], window)
                ax.plot(np.arange(len(y)) + window, scale * y, style, color=f"C{i}", label=f"{label}, seed {r['seed']}")
    axes[0].set_ylabel("training loss")
    axes[1].set_ylabel("training error (%)")
    for ax in axes:
        ax.set_xlabel("step (first epoch)")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=6, ncol=3)
    fig.suptitle("First epoch: the paper's init (N(0, 0.01) weights, biases 1 in conv2/4/5, fc6/7), biases 0, He's init",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)


def claims_chart(claims: dict, out: Path) -> None:
    """Every measured difference in error (percentage points) with its interval (Bonferroni's
    for the primary measures, 95% for the others); the paper's direction to the right."""
    rows = []
    for name, entry in claims.items():
        for m in entry.get("measures", []):
            if m["metric"] in ("top1_error", "gap", "epoch1_error") and "mean_diff" in m:
                sign = m["expect"]  # plotted so that the paper's predicted direction is positive
                rows.append((f"{name}: {m['metric']}", 100 * sign * m["mean_diff"],
                             100 * sign * m["ci_low"], 100 * sign * m["ci_high"], m["verdict"]))
    if not rows:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4))
    colours = {"agrees": "C2", "smaller": "C1", "larger": "C1", "opposite": "C3", "no effect": "C0"}
    for i, (label, mean, lo, hi, verdict) in enumerate(rows):
        lo, hi = min(lo, hi), max(lo, hi)
        colour = next((c for k, c in colours.items() if verdict.startswith(k)), "C7")
        ax.errorbar(mean, i, xerr=[[mean - lo], [hi - mean]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("difference in the paper's direction (percentage points) and its interval")
    ax.set_title("green: agrees, orange: smaller/larger than the paper, blue: no effect, red: opposite, "
                 "gray: inconclusive", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, out)


def colourfulness(weight: torch.Tensor) -> torch.Tensor:
    """Per kernel (out, 3, k, k): how much its three colour channels differ, relative to its
    whole spread: the standard deviation across channels (per pixel, averaged) over the
    kernel's standard deviation. 0 for a gray kernel (equal channels)."""
    w = weight.detach().float()
    across = w.std(dim=1, unbiased=False).mean(dim=(1, 2))
    return across / w.flatten(1).std(dim=1, unbiased=False).clamp_min(1e-12)


def fig3(run: Path, out: Path, colour: bool) -> str:
    """conv1's 96 kernels in two blocks, tower 1 (kernels 0-47) above tower 2 (48-95), as the
    paper's Fig. 3; returns the report's paragraph with each tower's colourfulness."""
    from PIL import Image

    from ..training.checkpoint import load_model
    from ..models.summary import kernel_grid

    model, _, _ = load_model(run)
    weight = next(m for m in model.features if isinstance(m, torch.nn.Conv2d)).weight
    half = weight.shape[0] // 2
    towers = [kernel_grid(weight[:half], columns=16), kernel_grid(weight[half:], columns=16)]
    gap = np.full((12, towers[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([towers[0], gap, towers[1]], axis=0)
    atomic_write(out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    c = colourfulness(weight)
    t1, t2 = c[:half].mean().item(), c[half:].mean().item()
    text = (f"`fig3.png`: conv1's kernels of the baseline's seed-0 run, tower 1 (kernels 0-{half - 1}) above "
            f"tower 2 ({half}-{2 * half - 1}). Colourfulness (the spread across the three colour channels over the "
            f"kernel's whole spread; 0 is gray): tower 1 {t1:.3f}, tower 2 {t2:.3f}.")
    if not colour:
        text += (" The data are grayscale: every image has three equal channels, so the three channels of a "
                 "kernel receive the same gradient and keep their initial differences. Colour-agnostic against "
                 "colour-specific towers cannot show on these data; run `fig3` on colour images (ImageNet).")
    return text
