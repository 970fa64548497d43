"""What the LRN's, the max pool's and the training augmentation's Triton kernels compile to on a Hopper GPU
(sm_90a), without a GPU: registers, spills, shared memory, the matrix instructions of their
products, the width of their global loads and stores, and their fused multiply-adds (the
augmentation's 4:2:0 conversion must have none: it rounds as the tensor path does), read from
Triton's PTX and ptxas's report.

    python benchmarks/triton_static.py                 # every kernel, channels-last bf16 and fp32
    python benchmarks/triton_static.py --json OUT.json

A GPU is lent to this project for minutes now and then; this answers on any machine what a
profile cannot: whether a kernel spills, whether its loads are vectorised, whether its
products reach the tensor cores. It times nothing. The integer arguments are specialised as
Triton's launcher would for a channels-last map of the paper network: the channel stride is
the constant 1, pointers and the other strides divisible by 16, the map sizes (55, 27, 13)
not. The GPU machine's Triton may be older than this one (3.6 there in 2026-11): its layouts,
and these counts, can differ a little.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from alexnet.models import lrn_triton as lt  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
INTS = {"P", "HW", "W", "sN", "sC", "sH", "sW", "Cg",  # the LRN's
        "crop", "sxb", "sxc", "sxh", "sxw", "scb", "scc", "sch", "scw", "smc", "smh", "smw", "sob", "soc", "soh", "sow",
        "C", "H", "OH", "OW", "tN", "tC", "tH", "tW", "uN", "uC", "uH", "uW"}  # the max pool's
# by 16 at the paper's shapes (HW, W, H and the pooled sizes are not)
DIVISIBLE = {"P", "sN", "sH", "sW", "Cg", "C", "tN", "tH", "tW", "uN", "uH", "uW"}
FLOATS = {"alpha_n", "beta", "k"}


def ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def signature(fn, pointers: dict, constants: dict) -> tuple[dict, dict]:
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in pointers:
            sig[name], attrs[(i,)] = "*" + pointers[name], [["tt.divisibility", 16]]
        elif name in constants:
            sig[name] = "constexpr"
        elif name in INTS:
            sig[name] = "i32"
            if name in DIVISIBLE:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            raise ValueError(f"{fn.__name__}: no type for argument {name!r}")
    return sig, attrs


def report(name: str, fn, pointers: dict, constants: dict, num_warps: int, scratch: Path,
           options: dict | None = None) -> dict:
    """One kernel compiled for sm_90a (with its launch's ``options``): ptxas's resource report and
    what its PTX holds."""
    sig, attrs = signature(fn, pointers, constants)
    kernel = triton.compile(ASTSource(fn, sig, constants, attrs), target=TARGET,
                            options={"num_warps": num_warps, **(options or {})})
    ptx = kernel.asm["ptx"]
    path = scratch / f"{name}.ptx"
    path.write_text(ptx)
    done = subprocess.run([ptxas(), "-arch=sm_90a", "-v", str(path), "-o", str(path.with_suffix(".cubin"))],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ptxas failed on {name}: {done.stderr.strip()[-500:]}")

    def number(pattern: str) -> int:
        found = re.search(pattern, done.stderr)
        return int(found.group(1)) if found else 0

    def count(pattern: str) -> dict:
        return dict(collections.Counter(m.group(1) for m in re.finditer(pattern, ptx)))

    return {"kernel": name, "num_warps": num_warps, "registers": number(r"Used (\d+) registers"),
            "spill_stores": number(r"(\d+) bytes spill stores"), "spill_loads": number(r"(\d+) bytes spill loads"),
            "shared_bytes": kernel.metadata.shared,
            "products": count(r"\b((?:wgmma\.mma_async|mma\.sync)[\w.]*)"),
            "loads": count(r"\b(ld\.global(?:\.\w+)*)"), "stores": count(r"\b(st\.global(?:\.\w+)*)"),
            "fma": len(re.findall(r"\bfma\.rn", ptx)),
            "divisions": count(r"\b(div\.(?:rn|full|approx)[\w.]*\.f32)")}


def kernels(warps: int = 4) -> list[tuple]:
    """(name, kernel, pointer types, constants, warps, options) for every kernel and setting reported."""
    from alexnet.data import augment_triton as at

    out = []
    for ycc in (False, True):  # uint8 RGB, or the 4:2:0 planes; out in bf16, as training reads it
        pointers = dict(x_ptr="u8", c_ptr="u8", mean_ptr="fp32", std_ptr="fp32", top_ptr="i32", left_ptr="i32",
                        flip_ptr="i32", rgb_ptr="fp32", out_ptr="bf16")
        out.append((f"augment_{'420' if ycc else 'rgb'}_bf16", at._augment, pointers, dict(YCC=ycc, BLOCK=at.BLOCK),
                    warps, at.LAUNCH_OPTIONS))
    for dt in ("bf16", "fp32"):
        band = dict(sC=1, SIZE=5, BLOCK_P=lt.BAND_BLOCK_P, TC=lt.BAND_CHUNK, CHUNKS=triton.cdiv(128, lt.BAND_CHUNK))  # norm2's towers
        out.append((f"band_forward_{dt}", lt._lrn_fwd_band, dict(x_ptr=dt, y_ptr=dt), band, warps))
        out.append((f"band_backward_{dt}", lt._lrn_bwd_band, dict(g_ptr=dt, x_ptr=dt, dx_ptr=dt), band, warps))
    for width in (64, 128):  # norm1's towers (48 maps) and all of norm1 (96)
        shift = dict(sC=1, SIZE=5, BLOCK_P=lt.BLOCK_P, BLOCK_C=width)
        out.append((f"shift_forward_bf16_C{width}", lt._lrn_fwd, dict(x_ptr="bf16", y_ptr="bf16", d_ptr="fp32"),
                    shift, warps))
        out.append((f"shift_backward_bf16_C{width}", lt._lrn_bwd,
                    dict(g_ptr="bf16", x_ptr="bf16", d_ptr="fp32", dx_ptr="bf16"), shift, warps))
    from alexnet.models import pool_triton as pt

    pool = dict(sC=1, tC=1, K=3, S=2, PAD=0, BLOCK_P=pt.BLOCK_P, BLOCK_C=pt.BLOCK_C)  # channels-last, 3x3/2
    out.append(("pool_forward_bf16", pt._pool_fwd, dict(x_ptr="bf16", y_ptr="bf16", i_ptr="i8"), pool, warps))
    out.append(("pool_backward_bf16", pt._pool_bwd, dict(g_ptr="bf16", i_ptr="i8", dx_ptr="bf16"),
                dict(pool, uC=1, REACH=2), warps))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="also write every figure here")
    p.add_argument("--only", default="", help="kernels whose name contains this")
    p.add_argument("--warps", type=int, default=4, help="num_warps of every kernel (the launches use Triton's 4)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, fn, pointers, constants, warps, *options in kernels(args.warps):
            if args.only in name:
                rows.append(report(name, fn, pointers, constants, warps, Path(scratch), *options))
    print(f"{'kernel':<28}{'regs':>6}{'spills':>8}{'shared':>8}{'fma':>6}  products; global loads")
    for r in rows:
        print(f"{r['kernel']:<28}{r['registers']:>6}{r['spill_stores'] + r['spill_loads']:>8}{r['shared_bytes']:>8}"
              f"{r['fma']:>6}  {r['products'] or '-'}; {r['loads']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "target": "sm_90a", "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
