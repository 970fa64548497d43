"""Why GPU-decoded training runs at the two stages' series rate: one short diagnostic run.

On an H200 (2026-11-27, `alexnet bench --gpu-decode`) the GPU-decode loader alone gave 32.5k
img/s and the paper network alone 27.3k, yet end to end ran at 13.8k, below the 14.8k of the two
in series: decoding is not hidden under the step. This script separates the candidate causes,
each section a fixed few seconds on the same in-memory JPEG batches (no loader processes):

1. decode: torchvision's batched ``decode_jpeg`` (nvJPEG) alone in the main thread, and with
   the decoded images stacked and augmented as training does; ``nvidia-smi dmon`` samples the
   engines meanwhile (its ``jpg`` column: the hardware JPEG decoder's load, 0 when the SMs decode).
2. step: the training step alone, streamed.
3. concurrent: a decoding thread and the step loop in the main thread, independent, side by
   side, the thread's batches counted over the step loop's own window: both rates near their
   solo rates mean that nothing shared (SMs, the GIL, a synchronisation) serialises them.
   Again with ``sys.setswitchinterval`` at 0.1 ms (the GIL handed over 50 times as often), with
   the step on a CUDA stream of its own instead of PyTorch's default (CUDA's legacy stream 0,
   which any work nvJPEG puts there waits for), and with the step loop held to two steps ahead
   of the device (a full launch queue blocks the host). The thread times each step of its
   decoding (split, stream wait, decode_jpeg, stack, labels and event): where the time goes.
4. gil: the decoding thread, timed the same way, beside a main thread that sleeps, then one that
   runs pure Python and no CUDA at all.
5. pipeline: the package's own ``DeviceDecoder`` feeding augmentation and the step (as `alexnet
   train --gpu-decode` runs), with its decoding thread, with the switch interval at 0.1 ms, with
   the same decoding done in the main thread after each step is queued (no thread), and the
   thread and inline forms again with the step on a stream of its own.
6. process: the same decoding in a process of its own (its own CUDA context, its own
   interpreter), alone and then beside the step loop: whether a decoding process would keep
   its rate where a decoding thread is starved (the design that would hand batches over in
   shared GPU memory; not built).

    python benchmarks/decode_overlap.py --out OUT           # on a GPU: about two minutes
    python benchmarks/decode_overlap.py --out OUT --smoke   # toy sizes on the CPU
    python benchmarks/decode_overlap.py --out OUT --sections process   # one section (and the step)

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
from alexnet.data.packed import split_encoded  # noqa: E402
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


def window(fn, seconds: float, sync) -> tuple[int, float, float]:
    """Calls ``fn`` (returns images) for about ``seconds`` after one warm-up call: the images and
    the window (perf_counter start and end), one wait for the device at each end."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    sync()
    return n, t0, time.perf_counter()


def rate(fn, seconds: float, sync) -> float:
    n, t0, t1 = window(fn, seconds, sync)
    return n / (t1 - t0)


SECTIONS = ("decode", "concurrent", "gil", "pipeline", "process")


class Looper(threading.Thread):
    """Calls ``fn`` (returns images) in a thread until stopped, noting when each call ended, so
    that its rate can be read over another loop's exact window (``rate_within``)."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.ends, self.error, self.stop_flag = fn, [], None, threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                n = self.fn()
                self.ends.append((time.perf_counter(), n))
        except BaseException as e:  # raised again in the main thread by stop()
            self.error = e

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        if self.error is not None:
            raise self.error

    def rate_within(self, t0: float, t1: float) -> float:
        return sum(n for t, n in self.ends if t0 < t <= t1) / (t1 - t0)


class PhasedDecode:
    """``DeviceDecoder._decode``'s steps one by one, each timed (wall ms a batch, summed over
    the calls): where a starved decoding thread spends its time."""

    PHASES = ("split", "stream wait", "decode_jpeg", "stack", "labels and event")

    def __init__(self, decoder: DeviceDecoder, batches) -> None:
        self.decoder, self.batches = decoder, batches
        self.totals, self.calls = dict.fromkeys(self.PHASES, 0.0), 0

    def __call__(self) -> int:
        from torchvision.io import decode_jpeg

        (data, offsets), labels = next(self.batches)
        d, marks = self.decoder, [time.perf_counter()]
        views = split_encoded(data, offsets)
        marks.append(time.perf_counter())
        with torch.cuda.stream(d.stream) if d.cuda else contextlib.nullcontext():
            if d.cuda:
                d.stream.synchronize()
            marks.append(time.perf_counter())
            decoded = decode_jpeg(views, device=d.device) if d.cuda else decode_jpeg(views)
            marks.append(time.perf_counter())
            images = torch.stack(decoded)
            marks.append(time.perf_counter())
            if d.cuda:
                labels.to(d.device, non_blocking=True)
                torch.cuda.Event().record(d.stream)
            marks.append(time.perf_counter())
        for phase, a, b in zip(self.PHASES, marks, marks[1:]):
            self.totals[phase] += b - a
        self.calls += 1
        return images.shape[0]

    def report(self) -> dict[str, float]:
        return {phase: round(1000 * t / max(self.calls, 1), 3) for phase, t in self.totals.items()}


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
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"which to run, comma-separated (default all: {','.join(SECTIONS)}; the step alone always)")
    args = ap.parse_args()
    wanted = set(args.sections.split(","))
    if wanted - set(SECTIONS):
        ap.error(f"unknown section(s) {', '.join(sorted(wanted - set(SECTIONS)))}: choose from {', '.join(SECTIONS)}")
    smoke = args.smoke or not torch.cuda.is_available()
    batch, size, seconds = (4, 80, 0.3) if smoke else (256, 256, args.seconds)
    rt = resolve_runtime(TrainConfig(device="cpu" if smoke else "cuda", precision="auto"))
    dev = rt.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    net = "torchvision" if smoke else args.variant  # the smoke run's 64-px crops are too small for the paper's
    crop = 64 if smoke else variant_info(net).input_size
    results: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
                     "torch": torch.__version__, "batch": batch, "variant": net, "seconds": seconds,
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node()}
    rows: list[tuple[str, str]] = []

    def record(name: str, value) -> None:
        results[name] = value
        rows.append((name, f"{value:,.0f}" if isinstance(value, float) else str(value)))
        print(f"{name:<52} {rows[-1][1]}", flush=True)

    data = encoded_batches(2 if smoke else 6, batch, size)
    cycle = itertools.cycle(data)
    decoder = DeviceDecoder(dev)
    augment = TrainAugment(Normalizer.channel().to(dev), crop, dtype=rt.dtype, channels_last=rt.channels_last)
    gen = torch.Generator(device=dev).manual_seed(0)

    def ready(encoded, labels):
        """A batch decoded here and handed to the current stream, as DeviceDecoder hands it."""
        return decoder._ready(_Done(decoder._decode(encoded, labels)))

    def decode() -> int:
        return ready(*next(cycle)).images.shape[0]

    def decode_augment() -> int:
        b = ready(*next(cycle))
        return augment(b.images, gen).shape[0]

    try:
        # 1. decoding alone
        if "decode" in wanted:
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
        model, optimizer = _model_and_optimizer(net, rt, False)
        step = _train_step(model, optimizer, rt)
        x = augment(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=dev), gen)
        y = torch.randint(0, 1000, (batch,), device=dev)
        for _ in range(3):
            step(x, y)
        record("step (streamed)", rate(lambda: step(x, y), seconds, sync))

        # 3. side by side, the thread's rate over the step loop's own window (twice as long: the
        # starved thread finishes few batches). The step on PyTorch's default stream (CUDA's
        # legacy stream 0, which any work nvJPEG puts on stream 0 waits for), on a stream of its
        # own, or never more than two steps ahead of the device (a full launch queue blocks the
        # host where it would otherwise run ahead)
        side = torch.cuda.Stream(dev) if dev.type == "cuda" else None

        def on_side():
            if side is None:
                return contextlib.nullcontext()
            side.wait_stream(torch.cuda.current_stream(dev))
            return torch.cuda.stream(side)

        ahead: list = []

        def step_bounded() -> int:
            n = step(x, y)
            if dev.type == "cuda":
                ahead.append(torch.cuda.Event())
                ahead[-1].record()
                if len(ahead) > 2:
                    ahead.pop(0).synchronize()
            return n

        if "concurrent" in wanted:
            for label, interval, stream, fn in (("", None, False, lambda: step(x, y)),
                                                (", switch 0.1 ms", 1e-4, False, lambda: step(x, y)),
                                                (", step on a side stream", None, True, lambda: step(x, y)),
                                                (", step two ahead at most", None, False, step_bounded)):
                phased = PhasedDecode(decoder, cycle)
                old = sys.getswitchinterval()
                loop = Looper(phased)
                try:
                    if interval:
                        sys.setswitchinterval(interval)
                    loop.start()
                    with on_side() if stream else contextlib.nullcontext():
                        n, t0, t1 = window(fn, 2 * seconds, sync)
                finally:
                    sys.setswitchinterval(old)
                    loop.stop()
                record(f"concurrent{label}: step", n / (t1 - t0))
                record(f"concurrent{label}: decode thread", loop.rate_within(t0, t1))
                results[f"concurrent{label}: decode thread's ms a batch"] = phased.report()

        # 4. the decoding thread beside a main thread that sleeps, or runs pure Python
        if "gil" in wanted:
            for label, busy in (("sleeping", False), ("pure Python", True)):
                phased = PhasedDecode(decoder, cycle)
                loop = Looper(phased)
                loop.start()
                try:
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < 2 * seconds:
                        if busy:
                            sum(i * i for i in range(1000))
                        else:
                            time.sleep(0.01)
                    t1 = time.perf_counter()
                finally:
                    loop.stop()
                record(f"gil: decode thread beside {label}", loop.rate_within(t0, t1))
                results[f"gil: decode thread beside {label}: ms a batch"] = phased.report()

        # 5. the package's pipeline: DeviceDecoder -> augment -> step
        def pipeline(inline: bool, interval: float | None, stream: bool = False) -> float:
            source = (data[i % len(data)] for i in itertools.count())
            it = (ready(*item) for item in source) if inline else decoder.batches(source)

            def one() -> int:
                b = next(it)
                return step(augment(b.images, gen), b.labels)
            old = sys.getswitchinterval()
            try:
                if interval:
                    sys.setswitchinterval(interval)
                with on_side() if stream else contextlib.nullcontext():
                    return rate(one, seconds, sync)
            finally:
                sys.setswitchinterval(old)
                it.close()
                decoder.pool.submit(lambda: None).result()  # the batch it had started, finished

        if "pipeline" in wanted:
            record("pipeline: DeviceDecoder (thread)", pipeline(False, None))
            record("pipeline: DeviceDecoder, switch 0.1 ms", pipeline(False, 1e-4))
            record("pipeline: decode inline after the step", pipeline(True, None))
            record("pipeline: DeviceDecoder, step on a side stream", pipeline(False, None, True))
            record("pipeline: inline, step on a side stream", pipeline(True, None, True))

        # 6. decoding in a process of its own, alone (this process sleeps) and beside the step loop
        if "process" in wanted:
            try:
                with DecodingProcess(batch, size, dev) as child:
                    for label, fn in (("alone", None), ("beside the step loop", lambda: step(x, y))):
                        child.go()
                        if fn is None:
                            t0 = time.perf_counter()
                            time.sleep(2 * seconds)
                            t1 = time.perf_counter()
                        else:
                            n, t0, t1 = window(fn, 2 * seconds, sync)
                            record("process: step", n / (t1 - t0))
                        record(f"process: decoding process {label}", child.rate_within(t0, t1))
            except Exception as e:  # a finding; the sections before it stand
                record("process: error", f"{type(e).__name__}: {e}"[:300])
    finally:
        decoder.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_overlap.json").write_text(json.dumps(results, indent=1))
    print(f"\n{results['device']}, torch {results['torch']}, batch {batch}, {net}: images/s")
    for name, value in rows:
        print(f"{name:<52} {value:>10}")
    for name, phases in results.items():
        if name.endswith("ms a batch"):
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in phases.items()))
    return 0


class DecodingProcess:
    """A child process (spawned: its own CUDA context and interpreter) that decodes
    ``encoded_batches`` with nvJPEG in a loop between ``go()`` and the next, noting when each
    batch was decoded, on the clock this process reads (``perf_counter``, CLOCK_MONOTONIC on
    Linux, which all processes share)."""

    def __init__(self, batch: int, size: int, device: torch.device) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child_end = ctx.Pipe()
        self.proc = ctx.Process(target=_decode_loop, args=(child_end, batch, size, str(device)), daemon=True)

    def __enter__(self) -> "DecodingProcess":
        self.proc.start()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError("the decoding process did not start")
        return self

    def go(self) -> None:
        """Start decoding."""
        self.conn.send("go")

    def rate_within(self, t0: float, t1: float) -> float:
        """Stop decoding; the images a second it decoded between ``t0`` and ``t1``."""
        self.conn.send("stop")
        ends = self.conn.recv()
        return sum(n for t, n in ends if t0 < t <= t1) / (t1 - t0)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.conn.send("quit")
        self.conn.close()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def _decode_loop(conn, batch: int, size: int, device: str) -> None:
    """The decoding process: decode batches from ``go`` to ``stop``, then send their end times."""
    from torchvision.io import decode_jpeg

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    data = encoded_batches(2 if not cuda else 6, batch, size)

    def one(i: int) -> int:
        (buf, offsets), _ = data[i % len(data)]
        views = split_encoded(buf, offsets)
        images = torch.stack(decode_jpeg(views, device=dev) if cuda else decode_jpeg(views))
        if cuda:
            torch.cuda.current_stream(dev).synchronize()
        return images.shape[0]

    for i in range(3):
        one(i)
    conn.send("ready")
    while (msg := conn.recv()) != "quit":
        if msg != "go":
            continue
        ends, i = [], 0
        while not conn.poll():
            n = one(i)
            ends.append((time.perf_counter(), n))
            i += 1
        if conn.recv() == "quit":  # the parent gave up mid-window (an error there)
            return
        conn.send(ends)


class _Done:
    """A finished job's stand-in for ``DeviceDecoder._ready`` (which takes a future)."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


if __name__ == "__main__":
    sys.exit(main())
