"""Which initialisation each network should default to: every init the project has, from
each network's other defaults, in a regime without fc6's copies of pool5.

    python benchmarks/init_defaults.py --out runs/init-defaults [--seeds 3] [--images 3000]

Fixed before any run:
- data: Fashion-MNIST, --images training images (each seed its own draw), 1,000 held-out
  images for the error (center crop); the test set is not read.
- regime: `paper` and `torchvision` on 71-px crops of 80-px images with fc6 reading pool5 on
  pool5's own grid (`--pool5-grid 0`: 2x2 for `paper`, with Caffe's pool rounding, which the
  trainer does not default to; 1x1 for `torchvision`), so no layer sees copies; LeNet-5 on
  32-px crops of 36-px images. `paper-half` shares `paper`'s default and is not run. 2 epochs
  of batch 128; every other setting the network's default (`--normalize auto`, `--lr 0`,
  `--weight-decay -1`, the plateau schedule). fc6 has 1,024 (`paper`) and 256
  (`torchvision`) inputs here against 9,216 at full size, so the inits that scale with
  fan-in (kaiming, torchvision) meet a layer the fixed-std ones (paper, caffe) were not made
  for: a verdict here is about small inputs.
- inits: kaiming, paper, caffe, torchvision (`alexnet train --init`).
- measure: held-out top-1 error after the budget, per seed; a run that diverges counts as
  chance (90%) and is reported as diverged.
- rule: each other init is compared with the network's current default, paired by seed, on
  Bonferroni intervals over the three comparisons (level 1 - 0.05/3); the default
  changes to the init with the lowest mean error only where its interval lies wholly below
  the current default's; else the current default stays and the table says so.

Finished runs are skipped; an interrupted one starts again (each is an ordinary `alexnet
train` directory).
"""

from __future__ import annotations

import argparse
import platform
from datetime import date
from pathlib import Path

import torch

from alexnet.reproduce import stats
from alexnet.training.config import TrainConfig, apply_overrides
from alexnet.errors import AlexNetError
from alexnet.models import VARIANTS
from alexnet.training.train import fit
from alexnet.training.rundir import RunDir

INITS = ("kaiming", "paper", "caffe", "torchvision")
REGIMES = {
    "paper": dict(resize=80, crop=71, pool5_grid=0, ceil_pool=True),  # pool5 2x2, read once
    "torchvision": dict(resize=80, crop=71, pool5_grid=0),  # pool5 1x1
    "lenet5": dict(resize=36, crop=32),
}
CHANCE = 0.9


def run(out: Path, variant: str, init: str, seed: int, images: int) -> dict:
    path = out / variant / init / f"seed{seed}"
    rundir = RunDir(path)
    if rundir.has_result():
        return rundir.read_result()
    flags = dict(REGIMES[variant], variant=variant, init=init, seed=seed, data="fashion-mnist", epochs=2,
                 batch_size=128, limit_train=images, limit_val=1000, workers=0, out=str(path))
    diverged = False
    try:
        fit(apply_overrides(TrainConfig(), flags), overwrite=True)
        error = rundir.read_metrics(required=True)[-1]["val_top1_error"]
    except AlexNetError as e:
        if "diverged" not in str(e):
            raise
        diverged, error = True, CHANCE
    result = {"variant": variant, "init": init, "seed": seed, "error": error, "diverged": diverged}
    rundir.write_result(result)
    return result


def decide(variant: str, errors: dict[str, list[float]]) -> tuple[str, str]:
    """(the default the rule picks, why)."""
    current = VARIANTS[variant].DEFAULT_INIT
    best = min(errors, key=lambda i: sum(errors[i]) / len(errors[i]))
    if best == current:
        return current, "the current default has the lowest mean error"
    p = stats.paired(errors[best], errors[current], confidence=1 - 0.05 / (len(errors) - 1))
    if p.ci_low > 0:
        return best, f"{best} is lower by {100 * p.mean_diff:.2f} points [{100 * p.ci_low:.2f}, {100 * p.ci_high:.2f}]"
    return current, (f"{best} is lower by {100 * p.mean_diff:.2f} points but the interval "
                     f"[{100 * p.ci_low:.2f}, {100 * p.ci_high:.2f}] spans zero: not told apart")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/init-defaults")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=3000)
    args = p.parse_args()
    out = Path(args.out)
    lines = [f"`python benchmarks/init_defaults.py --out {args.out} --seeds {args.seeds} --images {args.images}`, "
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}, {date.today()}", "",
             "| network | init | held-out top-1 error, mean ± sd | per seed | diverged |", "|---|---|---|---|---|"]
    verdicts = []
    for variant in REGIMES:
        errors = {}
        for init in INITS:
            results = [run(out, variant, init, s, args.images) for s in range(args.seeds)]
            errors[init] = [r["error"] for r in results]
            mean, sd = stats.mean_sd(errors[init])
            lines.append(f"| {variant} | {init} | {100 * mean:.2f} ± {100 * sd:.2f} | "
                         f"{', '.join(f'{100 * e:.1f}' for e in errors[init])} | "
                         f"{sum(r['diverged'] for r in results)} of {len(results)} |")
        choice, why = decide(variant, errors)
        verdicts.append(f"- {variant}: default `{VARIANTS[variant].DEFAULT_INIT}`, the rule picks `{choice}`: {why}")
    text = "\n".join(lines + [""] + verdicts) + "\n"
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
