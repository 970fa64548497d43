"""Why GPU-decoded training runs at the two stages' series rate: one short diagnostic run.

On an H200 (2026-11-27, `alexnet bench --gpu-decode`) the GPU-decode loader alone gave 32.5k
img/s and the paper network alone 27.3k, yet end to end ran at 13.8k, below the 14.8k of the two
in series: decoding is not hidden under the step. This script separates the candidate causes,
each section a fixed few seconds on the same in-memory JPEG batches (no loader processes):

1. decode: torchvision's batched ``decode_jpeg`` (nvJPEG) alone in the main thread, and with
   the decoded images stacked and augmented as training does; ``nvidia-smi dmon`` samples the
   engines meanwhile (its ``jpg`` column: the hardware JPEG decoder's load, 0 when the SMs decode).
2. step: the training step alone, streamed.
3. concurrent: a decoding thread and the step loop in the main thread, independent, run side by
   side: both rates near their solo rates mean that nothing shared (SMs, the GIL) serialises them.
   Again with ``sys.setswitchinterval`` at 0.1 ms (the GIL handed over 50 times as often).
4. gil: the decoding thread beside a main thread that runs pure Python and no CUDA at all.
5. pipeline: the package's own ``DeviceDecoder`` feeding augmentation and the step (as `alexnet
   train --gpu-decode` runs), with its decoding thread, with the switch interval at 0.1 ms, and
   with the same decoding done in the main thread after each step is queued (no thread).

    python benchmarks/decode_overlap.py --out OUT           # on a GPU: about a minute
    python benchmarks/decode_overlap.py --out OUT --smoke   # toy sizes on the CPU

Writes OUT/decode_overlap.json and prints a table (images per second for each section).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alexnet.bench import _model_and_optimizer, _train_step  # noqa: E402
from alexnet.data.loader import DeviceDecoder  # noqa: E402
from alexnet.data.transforms import Normalizer, TrainAugment  # noqa: E402
from alexnet.models.registry import variant_info  # noqa: E402
from alexnet.training.config import TrainConfig  # noqa: E402
from alexnet.training.runtime import resolve_runtime  # noqa: E402


def encoded_batches(count: int, batch: int, size: int, seed: int = 0) -> list:
    """``count`` batches of ``batch`` distinct baseline JPEGs (quality 90, 4:2:0, as `alexnet
    prepare` writes them) in the loader's form: ((one buffer, offsets), labels). The pictures are
    smooth colour fields with noise, so that they compress about as photographs do."""
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        low = torch.rand(batch, 3, 8, 8, generator=gen) * 255
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        img = (img + torch.randn(img.shape, generator=gen) * 12).clamp(0, 255).to(torch.uint8)
        jpegs = encode_jpeg(list(img), quality=90)
        offsets = torch.tensor([0, *itertools.accumulate(len(j) for j in jpegs)])
        out.append(((torch.cat(jpegs), offsets), torch.randint(0, 1000, (batch,), generator=gen)))
    return out


def rate(fn, seconds: float, sync) -> float:
    """Images/s of ``fn`` (returns images) called for about ``seconds``, one wait at the end."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    sync()
    return n / (time.perf_counter() - t0)


class Looper(threading.Thread):
    """Calls ``fn`` (returns images) until stopped; ``rate()``: images/s between start and stop."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.images, self.stop_flag = fn, 0, threading.Event()

    def run(self) -> None:
        self.t0 = time.perf_counter()
        while not self.stop_flag.is_set():
            self.images += self.fn()
        self.t1 = time.perf_counter()

    def finish(self) -> float:
        self.stop_flag.set()
        self.join()
        return self.images / (self.t1 - self.t0)


def dmon(seconds: int) -> subprocess.Popen | None:
    """``nvidia-smi dmon`` sampling utilisation each second for ``seconds`` (None without it)."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", "dmon", "-s", "u", "-c", str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU")
    ap.add_argument("--variant", default="paper")
    ap.add_argument("--seconds", type=float, default=3.0, help="each section's timed length")
    args = ap.parse_args()
    smoke = args.smoke or not torch.cuda.is_available()
    batch, size, seconds = (4, 80, 0.3) if smoke else (256, 256, args.seconds)
    rt = resolve_runtime(TrainConfig(device="cpu" if smoke else "cuda", precision="auto"))
    dev = rt.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    crop = 64 if smoke else variant_info(args.variant).input_size
    results: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
                     "torch": torch.__version__, "batch": batch, "variant": args.variant, "seconds": seconds,
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node()}
    rows: list[tuple[str, str]] = []

    def record(name: str, value) -> None:
        results[name] = value
        rows.append((name, f"{value:,.0f}" if isinstance(value, float) else str(value)))
        print(f"{name:<44} {rows[-1][1]}", flush=True)

    data = encoded_batches(2 if smoke else 6, batch, size)
    cycle = itertools.cycle(data)
    decoder = DeviceDecoder(dev)
    augment = TrainAugment(Normalizer.channel().to(dev), crop, dtype=rt.dtype, channels_last=rt.channels_last)
    gen = torch.Generator(device=dev).manual_seed(0)

    def decode() -> int:
        images, _, _ = decoder._decode(*next(cycle))
        return images.shape[0]

    def decode_augment() -> int:
        images, labels, done = decoder._decode(*next(cycle))
        if done is not None:
            torch.cuda.current_stream(dev).wait_event(done)
        return augment(images, gen).shape[0]

    # 1. decoding alone
    mon = dmon(int(seconds) + 1) if dev.type == "cuda" else None
    record("decode (main thread)", rate(decode, seconds, sync))
    if mon is not None:
        try:
            results["dmon"] = mon.communicate(timeout=seconds + 10)[0]
        except subprocess.TimeoutExpired:
            mon.kill()
            results["dmon"] = "timed out"
        print(results["dmon"], flush=True)
    record("decode + augment (main thread)", rate(decode_augment, seconds, sync))

    # 2. the step alone
    model, optimizer = _model_and_optimizer(args.variant if not smoke else "torchvision", rt, False)
    step = _train_step(model, optimizer, rt)
    x = augment(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=dev), gen)
    y = torch.randint(0, 1000, (batch,), device=dev)
    for _ in range(3):
        step(x, y)
    record("step (streamed)", rate(lambda: step(x, y), seconds, sync))

    # 3. and 4. side by side; the step on PyTorch's default stream (CUDA's legacy stream 0, with
    # which any work nvJPEG puts on stream 0 is serialised) or on a stream of its own
    side = torch.cuda.Stream(dev) if dev.type == "cuda" else None

    def on_side():
        if side is None:
            return contextlib.nullcontext()
        side.wait_stream(torch.cuda.current_stream(dev))
        return torch.cuda.stream(side)

    for label, interval, stream in (("", None, False), (", switch 0.1 ms", 1e-4, False),
                                    (", step on a side stream", None, True)):
        old = sys.getswitchinterval()
        if interval:
            sys.setswitchinterval(interval)
        loop = Looper(decode)
        loop.start()
        with on_side() if stream else contextlib.nullcontext():
            steps = rate(lambda: step(x, y), seconds, sync)
        record(f"concurrent{label}: step", steps)
        record(f"concurrent{label}: decode thread", loop.finish())
        sys.setswitchinterval(old)
    for label, busy in (("sleeping", False), ("pure Python", True)):
        loop = Looper(decode)
        loop.start()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if busy:
                sum(i * i for i in range(1000))
            else:
                time.sleep(0.01)
        record(f"gil: decode thread beside {label}", loop.finish())

    # 5. the package's pipeline: DeviceDecoder -> augment -> step
    def pipeline(inline: bool, interval: float | None, stream: bool = False) -> float:
        source = (data[i % len(data)] for i in itertools.count())
        if inline:
            def batches():
                for encoded, labels in source:
                    yield decoder._ready_now(encoded, labels)
            it = batches()
        else:
            it = decoder.batches(source)

        def one() -> int:
            b = next(it)
            return step(augment(b.images, gen), b.labels)
        old = sys.getswitchinterval()
        if interval:
            sys.setswitchinterval(interval)
        try:
            with on_side() if stream else contextlib.nullcontext():
                return rate(one, seconds, sync)
        finally:
            sys.setswitchinterval(old)
            it.close()

    DeviceDecoder._ready_now = lambda self, encoded, labels: self._ready(_Done(self._decode(encoded, labels)))
    record("pipeline: DeviceDecoder (thread)", pipeline(False, None))
    record("pipeline: DeviceDecoder, switch 0.1 ms", pipeline(False, 1e-4))
    record("pipeline: decode inline after the step", pipeline(True, None))
    record("pipeline: DeviceDecoder, step on a side stream", pipeline(False, None, True))
    record("pipeline: inline, step on a side stream", pipeline(True, None, True))
    decoder.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_overlap.json").write_text(json.dumps(results, indent=1))
    print(f"\n{results['device']}, torch {results['torch']}, batch {batch}, {args.variant}: images/s")
    for name, value in rows:
        print(f"{name:<44} {value:>10}")
    return 0


class _Done:
    """A finished job's stand-in for ``DeviceDecoder._ready`` (which takes a future)."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


if __name__ == "__main__":
    sys.exit(main())
