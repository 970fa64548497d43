"""Where a training step's time goes, in one short run: per layer, per implementation choice,
per network and batch, compiled and CUDA-graphed, with the top kernels and a Chrome trace.

    python benchmarks/gpu_profile.py --out OUT                # on a GPU: about 5-7 minutes
    python benchmarks/gpu_profile.py --out OUT --smoke        # toy sizes on the CPU (the suite)
    python benchmarks/gpu_profile.py --out OUT --batches 256 --sections layers,steps,compiled
                                                              # a part of it, for a short lease

Writes OUT/profile.json (every figure), OUT/profile.txt (the tables printed) and
OUT/trace.json (torch.profiler's Chrome trace of a few steps of the paper network: open it in
chrome://tracing or Perfetto). Sections, each timed with CUDA events (wall time on the CPU),
the median of ``--reps`` after ``--warmup``:

1. layers: the paper network's layers one by one at the real shapes (bf16, channels-last on
   CUDA): forward, input gradient and weight gradient, for every choice that layer has (conv1
   direct or space-to-depth, LRN in PyTorch or by either pair of Triton kernels, the towers'
   convolutions grouped or as two dense halves, the pools by PyTorch or by Triton kernels).
2. host: what each choice of the LRN and the pools costs the host a call, forward and input
   gradient, its device work left queued: where a step's host time exceeds its device time,
   eager training waits for the host (a CUDA graph does not).
3. steps: a whole training step (forward, backward, SGD with momentum) for the paper network
   under every combination of those choices, and torchvision's with its conv1 choices, at
   batch 256 and 512 (``--batches``); and each network at its defaults with the Triton pools.
4. graphs: the step captured once as a CUDA graph and replayed (CUDA only).
5. kernels: the top kernels of the paper network's step at the choices ``alexnet train`` makes
   on this device (``fastconv.resolve``, the LRN's 'auto'), by total device time.
6. lrn_band: the band LRN kernels alone at the paper network's two LRN layers, forward and
   backward, under several launch settings (positions per program, warps, pipeline depth),
   each with its bandwidth (the fewest bytes the pass must move over its time) beside a plain
   copy's, and its largest difference from the default settings' result (CUDA; on the CPU only
   under ``TRITON_INTERPRET=1``, a few settings).
7. pool_tiles: the Triton max pool's kernels alone at the paper network's three pools under
   several launch settings (positions and channels per program, warps), each with its bandwidth
   and its largest difference from the default settings' results (CUDA; on the CPU only under
   ``TRITON_INTERPRET=1``, pool5 and two settings).
8. compile: the same step under torch.compile: each network at the choices ``alexnet train
   --compile`` makes, then with the Triton pools, the paper network at its fastest eager
   choices, then both with opaque pools (PyTorch's own pooling backward kept); each compile
   takes a minute or so, and none starts once ``--budget`` seconds have passed. Last, so that a slow compile costs nothing else.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alexnet import create_model  # noqa: E402
from alexnet.models import fastconv
from alexnet.models import lrn


SECTIONS = ("layers", "host", "steps", "graphed", "kernels", "lrn_band", "pool_tiles", "compiled")


class Timer:
    """Median milliseconds of a function: CUDA events on a GPU, wall time on the CPU."""

    def __init__(self, device: torch.device, warmup: int, reps: int) -> None:
        self.device, self.warmup, self.reps = device, warmup, reps

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.reps):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)


def build(variant: str, towers: str, conv1: str, args, pools: str = "native") -> torch.nn.Module:
    model = create_model(variant, num_classes=1000, init="kaiming").to(args.device)
    if args.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return fastconv.use(model, towers=towers, conv1=conv1, pools=pools)


def batch(model: torch.nn.Module, n: int, args) -> tuple[torch.Tensor, torch.Tensor]:
    size = args.size or model.info.input_size
    x = torch.randn(n, 3, size, size, device=args.device)
    if args.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 1000, (n,), device=args.device)


def autocast(args):
    return torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16)


def lrn_choices(args) -> list[str]:
    return ["torch", "triton", "triton-band"] if args.device.type == "cuda" else ["torch"]


def pool_choices(args) -> list[str]:
    """PyTorch's pooling and the Triton kernels ('opaque' runs PyTorch's own kernels: the same
    time outside compile); on CUDA only (interpreted on the CPU they take seconds a call)."""
    return ["native", "triton"] if args.device.type == "cuda" else ["native"]


def default_config(variant: str, args, step_mode: str = "eager") -> dict:
    """The choices ``alexnet train`` makes for ``variant`` on this device and in this mode
    (``fastconv.MODES``; its 'auto's; the LRN's as ``lrn`` decides it, in this profile's names;
    torchvision's network has no LRN)."""
    chosen = fastconv.resolve(variant, args.device.type, step_mode)
    lrn.set_impl(None)
    kernels = lrn._fused() if args.device.type == "cuda" else ""
    lrn_auto = {"band": "triton-band", "shift": "triton", "": "torch"}[kernels] if variant != "torchvision" else "torch"
    return dict(variant=variant, towers=chosen["towers"], conv1=chosen["conv1"], lrn=lrn_auto, pools=chosen["pools"])


# ---------------------------------------------------------------------------
# 1. layers


def layer_inputs(model: torch.nn.Module, x: torch.Tensor, args) -> dict[str, torch.Tensor]:
    """Each feature layer's input at the real shapes, from one forward pass."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, inp, name=name: seen.setdefault(name, inp[0].detach()))
             for name, m in model.features.named_children()]
    with torch.no_grad(), autocast(args):
        model(x)
    for h in hooks:
        h.remove()
    return seen


def time_layer(layer: torch.nn.Module, x: torch.Tensor, timer: Timer, args) -> dict:
    if getattr(layer, "inplace", False):  # an in-place ReLU cannot take a leaf; the same work out of place
        layer = type(layer)()
    x = x.clone().requires_grad_()
    with autocast(args):
        y = layer(x)
    g = torch.randn_like(y)
    weight = getattr(layer, "weight", None)

    def forward():
        with autocast(args):
            layer(x)

    out = {"forward_ms": timer(forward),
           "input_grad_ms": timer(lambda: torch.autograd.grad(y, x, g, retain_graph=True))}
    if weight is not None:
        out["weight_grad_ms"] = timer(lambda: torch.autograd.grad(y, weight, g, retain_graph=True))
    return out


def layers(args, timer: Timer) -> list[dict]:
    rows = []
    model = build("paper", "grouped", "direct", args)
    x, _ = batch(model, args.batches[0], args)
    inputs = layer_inputs(model, x, args)
    for name, layer in model.features.named_children():
        for label, choose in layer_choices(model, name, layer, args):
            choose()
            layer = dict(model.features.named_children())[name]
            row = {"layer": name, "choice": label, "input": list(inputs[name].shape),
                   **time_layer(layer, inputs[name], timer, args)}
            rows.append(row)
        fastconv.use(model)
        lrn.set_impl(None)
    return rows


def layer_choices(model: torch.nn.Module, name: str, layer: torch.nn.Module, args) -> list[tuple]:
    """(label, a function that makes the choice) for each implementation of one feature layer."""
    if name == "conv1":
        return [(f"conv1={c}", lambda c=c: fastconv.use(model, conv1=c)) for c in fastconv.CONV1_IMPLS]
    if name.startswith("norm"):
        return [(f"lrn={c}", lambda c=c: lrn.set_impl(c)) for c in lrn_choices(args)]
    if getattr(layer, "groups", 1) > 1:
        return [(f"towers={c}", lambda c=c: fastconv.use(model, towers=c)) for c in fastconv.TOWER_IMPLS]
    if isinstance(layer, torch.nn.MaxPool2d):
        return [(f"pools={c}", lambda c=c: fastconv.use(model, pools=c)) for c in pool_choices(args)]
    return [("", lambda: None)]


# ---------------------------------------------------------------------------
# 2. host time


def host(args) -> list[dict]:
    """What each choice of the layers with kernels of this project's own (the LRNs, the pools)
    costs the host: microseconds of Python, dispatch and launching a forward and input gradient
    take, their device work left queued (on CUDA nothing synchronises inside the 4 timed calls,
    whose launches, at most some 150 a call, stay under the size of a device's launch queue; on
    the CPU the time includes the work).
    Where a step's host time exceeds its device time, the device waits: what eager training pays
    and a CUDA graph does not."""
    rows = []
    model = build("paper", "grouped", "direct", args)
    x, _ = batch(model, args.batches[0], args)
    inputs = layer_inputs(model, x, args)
    for name in ("norm1", "pool1", "pool5"):
        for label, choose in layer_choices(model, name, model.features.get_submodule(name), args):
            choose()
            layer = model.features.get_submodule(name)
            xin = inputs[name].clone().requires_grad_()
            with autocast(args):
                g = torch.randn_like(layer(xin))

            def call():
                with autocast(args):
                    y = layer(xin)
                torch.autograd.grad(y, xin, g)

            rows.append({"layer": name, "choice": label, "input": list(xin.shape), "host_us": host_us(call, args)})
        fastconv.use(model)
        lrn.set_impl(None)
    return rows


def host_us(fn, args, calls: int = 4) -> float:
    """Median over ``args.reps`` rounds of the wall time ``calls`` calls take, per call, with no
    synchronisation between them (after ``args.warmup`` calls and a synchronisation)."""
    sync = torch.cuda.synchronize if args.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.reps):
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls * 1e6)
    sync()
    return statistics.median(times)


# ---------------------------------------------------------------------------
# 3-5 and 8. steps, graphed, kernels, compiled


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args):
    fused = {"fused": True} if args.device.type == "cuda" else {"foreach": True}  # the trainer's default on CUDA
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **fused)

    def step():
        with autocast(args):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    return step, opt


def configs(args) -> list[dict]:
    out = [dict(variant="paper", towers=t, conv1=c, lrn=n) for t, c, n in
           itertools.product(fastconv.TOWER_IMPLS, fastconv.CONV1_IMPLS, lrn_choices(args))]
    out += [dict(variant="torchvision", towers="grouped", conv1=c, lrn="torch") for c in fastconv.CONV1_IMPLS]
    # each network at its defaults with every pool choice (its default's among them)
    for variant in ("paper", "torchvision"):
        out += [dict(default_config(variant, args), pools=p) for p in pool_choices(args)]
    return list({label(c): c for c in out}.values())


def label(cfg: dict) -> str:
    pools = f" pools={cfg['pools']}" if cfg.get("pools", "native") != "native" else ""
    if cfg["variant"] == "torchvision":
        return f"torchvision conv1={cfg['conv1']}{pools}"
    return f"paper towers={cfg['towers']} conv1={cfg['conv1']} lrn={cfg['lrn']}{pools}"


def time_step(cfg: dict, n: int, timer: Timer, args, compile_model: bool = False) -> dict:
    lrn.set_impl(cfg["lrn"])
    if args.device.type == "cuda":
        torch.cuda.empty_cache()  # the reserved peak is this configuration's, not the one before's
        torch.cuda.reset_peak_memory_stats()
    model = build(cfg["variant"], cfg["towers"], cfg["conv1"], args, cfg.get("pools", "native"))
    x, y = batch(model, n, args)
    if compile_model:
        torch._dynamo.reset()
        model = torch.compile(model, backend=args.compile_backend)
    step, _ = step_fn(model, x, y, args)
    started = time.perf_counter()
    step()  # the first step: compile, cuDNN's algorithm search
    first = time.perf_counter() - started
    ms = timer(step)
    return {"config": label(cfg), "batch": n, "compiled": compile_model, "step_ms": ms,
            "images_per_sec": n / ms * 1000, "first_step_s": first, **peaks(args)}


def peaks(args) -> dict:
    """GPU memory since the last reset: the most the tensors held (``peak_gib``), and the most the
    caching allocator kept from the device (``reserved_gib``: with a CUDA graph, its own pool
    beside the eager steps' cache)."""
    if args.device.type != "cuda":
        return {"peak_gib": None, "reserved_gib": None}
    return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def graphed_step(cfg: dict, n: int, timer: Timer, args) -> dict:
    """The whole step (forward, backward, optimizer) captured once and replayed."""
    lrn.set_impl(cfg["lrn"])
    torch.cuda.empty_cache()  # the reserved peak is this configuration's, not the one before's
    torch.cuda.reset_peak_memory_stats()
    model = build(cfg["variant"], cfg["towers"], cfg["conv1"], args, cfg.get("pools", "native"))
    x, y = batch(model, n, args)
    step, opt = step_fn(model, x, y, args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    ms = timer(graph.replay)
    return {"config": label(cfg), "batch": n, "graphed": True, "step_ms": ms, "images_per_sec": n / ms * 1000,
            **peaks(args)}


def kernels(args, out: Path) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    cfg = default_config("paper", args)
    lrn.set_impl(cfg["lrn"])
    model = build("paper", cfg["towers"], cfg["conv1"], args, cfg["pools"])
    x, y = batch(model, args.batches[0], args)
    step, _ = step_fn(model, x, y, args)
    for _ in range(args.warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if args.device.type == "cuda":
            torch.cuda.synchronize()
    prof.export_chrome_trace(str(out / "trace.json"))
    key = "device_time_total" if args.device.type == "cuda" else "cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    if args.device.type == "cuda":
        events = [e for e in events if getattr(e, "device_type", None) is not None
                  and "CUDA" in str(e.device_type)] or events
    lrn.set_impl(None)
    return [{"name": e.key[:90], "calls": e.count, "total_ms_per_step": getattr(e, key, 0) / 1000 / 3,
             "config": label(cfg)} for e in events[:args.top]]


# ---------------------------------------------------------------------------
# 6-7. the band LRN kernels' and the pools' launch settings

# (positions per program, warps, pipeline stages; None: Triton's default); the first is the default
BAND_SETTINGS = [(64, 4, None), (64, 4, 1), (64, 8, None), (128, 4, None), (128, 8, None), (128, 8, 1),
                 (256, 8, None)]


def kernel_inputs(args, available: bool) -> tuple:
    """(the paper network, each feature layer's input, interpreted) for timing Triton kernels
    alone: on CUDA, or on the CPU under ``TRITON_INTERPRET=1``; (None, None, _) elsewhere."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if not available or (args.device.type != "cuda" and not interpreted):
        return None, None, interpreted
    model = build("paper", "grouped", "direct", args)
    x0, _ = batch(model, args.batches[0], args)
    return model, layer_inputs(model, x0, args), interpreted


def lrn_band(args, timer: Timer) -> list[dict]:
    """Each setting's forward and backward time at norm1's and norm2's inputs, the bandwidth of the
    fewest bytes each pass moves (forward: x in, y out; backward: x and the gradient in, dx out),
    and its largest difference from the default setting's output."""
    from alexnet.models import lrn_triton as lt

    model, inputs, interpreted = kernel_inputs(args, lt.available())
    if model is None:
        return []
    settings = [BAND_SETTINGS[0], (128, 8, None)] if interpreted else BAND_SETTINGS  # the interpreter: two grids
    rows = [copy_row(inputs["norm1"], timer)]
    for name in ("norm1", "norm2"):
        norm = model.features.get_submodule(name)
        x = inputs[name].to(torch.bfloat16 if args.bf16 else torch.float32)
        g = torch.randn_like(x)
        consts = (norm.size, norm.alpha, norm.beta, norm.k, norm.groups)
        want = None
        for block_p, warps, stages in settings:
            launch = dict(block_p=block_p, warps=warps, stages=stages)
            row = {"layer": name, "block_p": block_p, "warps": warps, "stages": "default" if stages is None else stages}
            fwd = lambda: lt.band_forward(x, *consts, **launch)  # noqa: E731
            bwd = lambda: lt.band_backward(g, x, *consts, **launch)  # noqa: E731
            try:
                got = (fwd().float(), bwd().float())
                want = want or got  # the first (default) setting's result
                diff = max((a - b).abs().max().item() for a, b in zip(got, want))
                for direction, fn, tensors in (("forward", fwd, 2), ("backward", bwd, 3)):
                    ms = timer(fn)
                    rows.append({**row, "pass": direction, "ms": ms, "max_diff": diff,
                                 "gb_per_s": tensors * x.numel() * x.element_size() / ms / 1e6})
            except Exception as e:  # a setting that does not compile or launch is a finding, not the end
                rows.append({**row, "pass": "both", "error": str(e)[:200]})
    return rows


# (positions per program, channels per program, warps); the first is the default
POOL_SETTINGS = [(32, 32, 4), (64, 32, 4), (32, 64, 4), (64, 64, 4), (16, 128, 4), (32, 32, 2)]


def pool_tiles(args, timer: Timer) -> list[dict]:
    """The Triton max pool's kernels alone at the paper network's three pools, under each launch
    setting: forward and backward time, the bandwidth of the bytes each pass moves (forward: x in,
    the output and the int8 places out; backward: the output's gradient and the places in, the
    input's gradient out), and the largest difference from the default setting's results (CUDA;
    on the CPU only under ``TRITON_INTERPRET=1``: pool5 and two settings)."""
    from alexnet.models import pool_triton as pt

    model, inputs, interpreted = kernel_inputs(args, pt.available())
    if model is None:
        return []
    settings = [POOL_SETTINGS[0], (16, 64, 4)] if interpreted else POOL_SETTINGS
    rows = []
    for name in ("pool5",) if interpreted else ("pool1", "pool2", "pool5"):
        pool = model.features.get_submodule(name)
        x = inputs[name].to(torch.bfloat16 if args.bf16 else torch.float32)
        k, s, p, ceil = fastconv._int(pool.kernel_size), fastconv._int(pool.stride), fastconv._int(pool.padding), \
            pool.ceil_mode
        y, places = pt.forward(x, k, s, p, ceil)
        g = torch.randn_like(y)
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        moved = x.numel() * x.element_size() + y.numel() * (y.element_size() + 1)  # either pass: map, output, places
        want = None
        for block_p, block_c, warps in settings:
            launch = dict(block_p=block_p, block_c=block_c, warps=warps)
            row = {"layer": name, "block_p": block_p, "block_c": block_c, "warps": warps}
            fwd = lambda: pt.forward(x, k, s, p, ceil, **launch)  # noqa: E731
            bwd = lambda: pt.backward(g, places, x.shape[2], x.shape[3], k, s, p, cl, **launch)  # noqa: E731
            try:
                out, where = fwd()
                got = (out.float(), where.float(), bwd().float())
                want = want or got  # the first (default) setting's results
                diff = max((a - b).abs().max().item() for a, b in zip(got, want))
                for direction, fn in (("forward", fwd), ("backward", bwd)):
                    ms = timer(fn)
                    rows.append({**row, "pass": direction, "ms": ms, "max_diff": diff,
                                 "gb_per_s": moved / ms / 1e6})
            except Exception as e:  # a setting that does not compile or launch is a finding, not the end
                rows.append({**row, "pass": "both", "error": str(e)[:200]})
    return rows


def copy_row(x: torch.Tensor, timer: Timer) -> dict:
    """A plain copy of a tensor 16 times norm1's input: the bandwidth the LRN passes can hope for."""
    big = x.repeat(16, 1, 1, 1) if x.is_cuda else x.clone()
    out = torch.empty_like(big)
    ms = timer(lambda: out.copy_(big))
    return {"layer": "copy", "pass": "read+write", "ms": ms, "gb_per_s": 2 * big.numel() * big.element_size() / ms / 1e6}


def compile_candidates(steps: list[dict], first: int, args) -> list[dict]:
    """What the compile section tries, most telling first: each network at ``train --compile``'s
    choices, then with the Triton pools, the paper network at its fastest eager ones, then both
    networks with opaque pools."""
    paper = [s for s in steps if s["batch"] == first and s["config"].startswith("paper")]
    paper_fastest = min(paper, key=lambda s: s["step_ms"])["config"] if paper else None
    fastest = [c for c in configs(args) if label(c) == paper_fastest]
    defaults = [default_config(v, args, "compiled") for v in ("torchvision", "paper")]
    others = [dict(c, pools=p) for p in (*pool_choices(args)[1:], "opaque") for c in defaults if c["pools"] != p]
    out = {label(c): c for c in [*defaults, *others[:len(defaults)], *fastest, *others]}
    return list(out.values())


# ---------------------------------------------------------------------------


def table(title: str, rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="256,512", help="batch sizes of the step section (the first for layers)")
    p.add_argument("--size", type=int, default=0, help="input side; 0 = each network's own (227, 224)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--top", type=int, default=20, help="kernels listed")
    p.add_argument("--budget", type=float, default=300.0, help="seconds after which compile variants are skipped")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend (the suite: eager)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"which to run, comma-separated (default all: {','.join(SECTIONS)})")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, compile only with --compile-backend "
                                                        "other than inductor (the suite)")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.batches, args.size, args.warmup, args.reps = "cpu", "2", 99, 1, 1
        args.compile = args.compile and args.compile_backend != "inductor"
    args.sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    args.device = torch.device(args.device)
    args.batches = [int(b) for b in str(args.batches).split(",")]
    args.bf16 = args.device.type == "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    timer = Timer(args.device, args.warmup, args.reps)
    report = {"device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else platform.processor()
              or platform.machine(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "triton": _version("triton"), "precision": "bf16" if args.bf16 else "fp32",
              "batches": args.batches, "command": " ".join(sys.argv)}
    text = {"": f"{report['device']}, torch {report['torch']}, triton {report['triton']}, {report['precision']}\n"}

    def save():
        (out / "profile.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "profile.txt").write_text("\n".join(text.values()))

    def section(name: str, rows, columns, final: bool = True):
        """Record a section (again, as it grows: the files always hold what was measured)."""
        report[name] = rows
        text[name] = table(f"## {name}", rows, columns)
        if final:
            print(text[name], flush=True)
        save()

    wanted = set(args.sections)
    if "layers" in wanted:
        section("layers", layers(args, timer), ["layer", "choice", "input", "forward_ms", "input_grad_ms",
                                                  "weight_grad_ms"])
    if "host" in wanted:
        section("host", host(args), ["layer", "choice", "input", "host_us"])
    steps = [time_step(cfg, n, timer, args) for n in args.batches for cfg in configs(args)] if "steps" in wanted else []
    if "steps" in wanted:
        section("steps", steps, ["config", "batch", "step_ms", "images_per_sec", "first_step_s", "peak_gib",
                                 "reserved_gib"])
    graphed = []
    if args.device.type == "cuda" and "graphed" in wanted:
        # each network at its defaults and with the plain conv1 and pools; the paper network's with
        # the shift LRN kernels too, as the profiles before 2026-11-27 graphed it; each default with
        # every pool choice
        plain = [dict(default_config(v, args), conv1="direct", pools="native") for v in ("paper", "torchvision")]
        graphed_configs = [default_config("paper", args, "graphed"), default_config("torchvision", args, "graphed"),
                           *plain,
                           dict(plain[0], lrn="triton"),
                           *[dict(default_config(v, args), pools=p) for v in ("paper", "torchvision")
                             for p in pool_choices(args)]]
        for cfg in list({label(c): c for c in graphed_configs}.values()):
            try:
                graphed.append(graphed_step(cfg, args.batches[0], timer, args))
            except Exception as e:  # a capture that fails is a finding, not the end of the profile
                graphed.append({"config": label(cfg), "batch": args.batches[0], "error": str(e)[:200]})
    if "graphed" in wanted:
        section("graphed", graphed, ["config", "batch", "step_ms", "images_per_sec", "peak_gib", "reserved_gib",
                                     "error"])
    if "kernels" in wanted:
        section("kernels", kernels(args, out), ["name", "calls", "total_ms_per_step"])
    if "lrn_band" in wanted:
        section("lrn_band", lrn_band(args, timer), ["layer", "pass", "block_p", "warps", "stages", "ms", "gb_per_s",
                                                    "max_diff", "error"])
    if "pool_tiles" in wanted:
        section("pool_tiles", pool_tiles(args, timer), ["layer", "pass", "block_p", "block_c", "warps", "ms",
                                                        "gb_per_s", "max_diff", "error"])
    compiled = []
    if args.compile and "compiled" in wanted:
        first = args.batches[0]
        candidates = compile_candidates(steps, first, args)
        for cfg in candidates:
            if time.perf_counter() - start > args.budget:
                compiled.append({"config": label(cfg), "batch": first, "skipped": "over --budget"})
                continue
            try:
                compiled.append(time_step(cfg, first, timer, args, compile_model=True))
            except Exception as e:  # one failed compile is a finding; the others still run
                compiled.append({"config": label(cfg), "batch": first, "error": str(e)[:200]})
            section("compiled", compiled, ["config", "batch", "step_ms", "images_per_sec", "first_step_s",
                                           "skipped", "error"], final=False)
    if "compiled" in wanted:
        section("compiled", compiled, ["config", "batch", "step_ms", "images_per_sec", "first_step_s", "skipped",
                                       "error"])
    report["seconds"] = time.perf_counter() - start
    text["end"] = f"profile: {report['seconds']:.0f} s; {out / 'profile.json'}, {out / 'trace.json'}\n"
    print(text["end"])
    save()
    return 0


def _version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
