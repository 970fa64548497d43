"""What the project's Triton layers cost the host a call, apart from launching their kernels:
Python, autograd and dispatch, measured on any machine, no GPU.

    python benchmarks/host_cost.py                  # a table; --json for machines

On a GPU a training step at batch 256 waits for its host where the host takes longer to queue
the step's work than the device takes to run it (gpu_profile.py's eager and graphed steps).
Here each layer's forward and input gradient run on small CPU tensors with every Triton
kernel's launch replaced by nothing, so what is timed is what the host does around the
launches: the eager path (a plain autograd.Function over the kernels' wrappers) and the
registered operator's path (``torch.library``'s dispatch and autograd, what ``torch.compile``
keeps), side by side, with PyTorch's own pooling and LRN (their CPU work included: small) as a
reference. On a GPU each Triton call also enters and leaves its device's guard, which a
CPU tensor does not. Each row is the median of ``--rounds`` rounds of ``--calls`` calls, the rows
interleaved round by round so that the machine's drift falls on all of them alike. Triton's own
launcher (binding the arguments, looking up the compiled kernel) is not included: it needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alexnet.models import lrn, lrn_triton as lt, pool_triton as pt  # noqa: E402


class NoLaunch:
    """A Triton kernel whose launches do nothing: ``kernel[grid](...)`` returns at once."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_launches() -> None:
    for module, names in ((lt, ("_lrn_fwd", "_lrn_bwd", "_lrn_fwd_band", "_lrn_bwd_band")),
                          (pt, ("_pool_fwd", "_pool_bwd"))):
        for name in names:
            setattr(module, name, NoLaunch())


def arms() -> dict:
    """Each arm: a function of a leaf tensor giving the layer's output, by one path."""
    lrn_args = (5, 1e-4, 0.75, 2.0, 1)
    return {
        "pool, PyTorch": lambda t: F.max_pool2d(t, 3, 2),
        "pool, Triton eager": lambda t: pt.max_pool2d(t, 3, 2),
        "pool, Triton operator": lambda t: pt.max_pool2d_op(t, 3, 2, 0, False)[0],
        "LRN, PyTorch": lambda t: lrn.local_response_norm(t, *lrn_args),  # a CPU tensor: lrn=torch's path
        "LRN band, Triton eager": lambda t: lt.local_response_norm(t, *lrn_args, kernel="band"),
        "LRN band, Triton operator": lambda t: lt.lrn_band_op(t, *lrn_args),
        "LRN shift, Triton eager": lambda t: lt.local_response_norm(t, *lrn_args, kernel="shift"),
        "LRN shift, Triton operator": lambda t: lt.lrn_op(t, *lrn_args)[0],
    }


def measure(calls: int, rounds: int) -> list[dict]:
    x = torch.rand(2, 16, 13, 13).contiguous(memory_format=torch.channels_last).requires_grad_()
    paths = arms()
    grads = {name: torch.ones_like(f(x)) for name, f in paths.items()}
    samples = {name: [] for name in paths}
    for _ in range(rounds + 1):  # the first round warms up
        for name, f in paths.items():
            t = time.perf_counter()
            for _ in range(calls):
                torch.autograd.grad(f(x), x, grads[name])
            samples[name].append((time.perf_counter() - t) / calls * 1e6)
    return [{"path": name, "us_per_call": statistics.median(s[1:]), "spread_us": [min(s[1:]), max(s[1:])]}
            for name, s in samples.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    stub_launches()
    rows = measure(args.calls, args.rounds)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "calls": args.calls, "rounds": args.rounds, "rows": rows}))
        return 0
    print(f"{'path':<28}{'us a call':>10}  (forward and input gradient, kernels not launched; range)")
    for r in rows:
        print(f"{r['path']:<28}{r['us_per_call']:>10.1f}  ({r['spread_us'][0]:.1f}-{r['spread_us'][1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
