"""What every reproduction study shares: a training run that resumes where it was interrupted
and leaves its measurements in ``result.json``, the test-error measure, and the name of the
machine a report was made on."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import AlexNetError
from ..training.config import TrainConfig, apply_overrides
from ..training.curves import smooth_window, smoothed, steps_to
from ..training.rundir import RunDir

THRESHOLD = 0.25  # the paper's Fig. 1 training error; each run's curve records the steps to it


@dataclass
class Study:
    data: str
    out: Path
    device: str = "auto"
    log: Callable[[str], None] = print
    threshold: float = THRESHOLD  # each run's curve records the steps to this training error

    def run(self, key: str, flags: dict, seed: int, measure: Callable[[Path], dict] | None = None) -> dict:
        """One training run of at most ``flags["epochs"]`` epochs under ``out/key``: resumed if
        interrupted, continued if an earlier call gave it fewer epochs and it did not reach the
        mark; its ``result.json``, cut to those epochs where an earlier call gave it more."""
        from ..training.train import fit

        path, epochs = self.out / key, flags["epochs"]
        rundir = RunDir(path)
        if rundir.has_result():
            cached = rundir.read_result()
            stopped = cached["steps"] and flags.get("stop_at_train_error")  # reached the mark it stops at
            if cached["diverged"] or stopped or cached["max_epochs"] >= epochs:
                return _within(cached, epochs, self.threshold)
        cfg = apply_overrides(TrainConfig(), {**flags, "data": self.data, "seed": seed, "device": self.device,
                                              "out": str(path)})
        self.log(f"reproduce cifar: {key} (lr {cfg.optim.lr:g}, at most {epochs} epochs)")
        diverged = None
        try:
            if rundir.has_checkpoint():  # interrupted, or stopped at a smaller cap
                fit(TrainConfig(out=str(path)), resume=True, overrides={"epochs": epochs})
            else:
                fit(cfg, overwrite=True)
        except AlexNetError as e:
            if "diverged" not in str(e):
                raise
            diverged = str(e)
        result = {**_curve(path, self.threshold), "seed": seed, "lr": cfg.optim.lr, "max_epochs": epochs, "diverged": diverged}
        if measure and not diverged:
            result.update(measure(path))
        rundir.write_result(result)  # the checkpoint stays: a larger cap continues it
        return result


def _curve(path: Path, threshold: float) -> dict:
    """The per-step training error and the steps to ``threshold`` of a finished (or diverged) run."""
    history = RunDir(path).read_metrics()
    trace = [e for h in history for e in h.get("trace_error", [])]
    per_epoch = len(history[0]["trace_error"]) if history else 0
    window = smooth_window(per_epoch)
    curve = smoothed(trace, window)
    return {"trace_error": trace, "steps_per_epoch": per_epoch, "window": window, "epochs": len(history),
            "steps": steps_to(trace, threshold, window) if history else None,
            "last_error": curve[-1] if curve else None, "train_time_s": sum(h["epoch_time"] for h in history)}


def _within(result: dict, epochs: int, threshold: float) -> dict:
    """A run's result as if it had been stopped after ``epochs`` epochs."""
    if result["epochs"] <= epochs:
        return result
    trace = result["trace_error"][:epochs * result["steps_per_epoch"]]
    curve = smoothed(trace, result["window"])
    return {**result, "trace_error": trace, "epochs": epochs, "max_epochs": epochs,
            "steps": steps_to(trace, threshold, result["window"]), "last_error": curve[-1] if curve else None}


def test_errors(study: Study) -> Callable[[Path], dict]:
    """A study's measure of a finished run: its test error over 10 views and the center crop, and its
    validation error."""
    def measure(path: Path) -> dict:
        from ..infer import evaluate_weights

        # the 10 views' figures, and the center view's alone from the same pass
        ten = evaluate_weights(path, split="test", ten_crop=True, device=study.device, progress=False)
        val = evaluate_weights(path, split="val", device=study.device, progress=False)
        return {"test_error_10view": ten.top1_error, "test_error_center": 1 - ten.center_top1,
                "val_error": val.top1_error, "test_images": ten.images}
    return measure


def machine(device: str) -> str:
    from ..training.runtime import resolve_device

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
