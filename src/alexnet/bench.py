"""Throughput that tells the truth: model alone, loader alone, end to end, and the plain baseline.

Every figure is measured over timed steps after warm-up, with the device
synchronised around each step: the median step for the model alone, and all
images over all the time for rows fed by loader processes (their batches come
in bursts). ``model``: forward, backward and SGD step on
synthetic data already on the device. ``loader``: batches from a packed dataset
through the batched augmentation, no model. ``end-to-end``: training steps fed
from the packed dataset. ``baseline``: what a user would otherwise write:
torchvision's ``alexnet`` in eager fp32, fed by ``ImageFolder`` + PIL transforms
+ ``DataLoader`` from the same images. The model figure is also given as a
fraction of the device's measured matmul peak.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .training.config import OptimConfig, TrainConfig
from .data import loader as data_loader
from .data.folder import resolve_workers
from .data.packed import PackedSplit, read_meta
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalizer, TrainAugment
from .errors import AlexNetError
from .models.registry import create_model, variant_info
from .options import BenchConfig
from .models.summary import summarize
from .models import fastconv
from .models.towers import TwoTowerAlexNet
from .training.runtime import Runtime, as_devices, cpu_has_bf16, resolve_runtime, streamed_calls, timed_calls
from .training.train import build_optimizer, make_scaler, train_step


IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass
class Figure:
    what: str  # model | decode | loader | end-to-end | cached | baseline | inference
    variant: str
    device: str
    images_per_sec: float
    batch_size: int
    steps: int
    peak_memory_mib: float
    settings: dict = field(default_factory=dict)
    fraction_of_peak: float | None = None
    # On a GPU, the same steps again run back to back with one wait at the end (``time_streamed``):
    # the rate a training loop sees, the host's preparation of a batch hidden under the device's
    # work; None on the CPU, whose operations finish as they are called
    streamed_images_per_sec: float | None = None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def _reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window: CUDA's allocator statistics, or on Linux the
    process's peak resident set (VmHWM, reset by writing 5 to /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux, or not allowed: the figure is the peak since the process started


def _peak_mib(device: torch.device) -> float:
    """Peak memory since ``_reset_peak``: allocated CUDA memory, or this process's resident set
    (loader worker processes not included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # lifetime peak (Linux: KiB)


def time_steps(step: Callable[[], int], device: torch.device | Sequence[torch.device], steps: int, warmup: int,
               reduce: Callable[[list[float]], float] = statistics.median) -> float:
    """Median (or ``reduce``) images/s of ``step()`` (which returns its image count) after ``warmup`` calls."""
    return reduce([n / seconds for seconds, n in timed_calls(step, device, steps, warmup)])


def time_streamed(step: Callable[[], int], devices: torch.device | Sequence[torch.device], steps: int,
                  warmup: int = 0) -> float | None:
    """Images/s of ``steps`` calls of ``step`` run back to back, one wait for the devices at the
    end (``runtime.streamed_calls``), after ``warmup`` untimed calls (for a loader-fed row, the
    batches its processes hold ready: the slower step-by-step timing before let them fill their
    queue); None where no device is a GPU."""
    devices = as_devices(devices)
    if not any(d.type == "cuda" for d in devices):
        return None
    for _ in range(warmup):
        step()
    seconds, counts = streamed_calls(step, devices, steps)
    return sum(counts) / seconds


def throughput(rates: list[float]) -> float:
    """Images over seconds across all timed steps of equal size: the harmonic mean of their rates.
    For rows fed by loader processes: the workers hand batches over in bursts (several ready at
    once, then a wait), so the median step would report the bursts (it once read 114k img/s for
    16 cores that decode 34k)."""
    return statistics.harmonic_mean(rates)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul rate (TFLOP/s): the ceiling the model figure is compared with."""
    # on a CPU 2048 reaches the rate 4096 does in an eighth of the time (2-core Zen 3, fp32,
    # 2026-11-27: 172-179 against 164-168 GFLOP/s, 0.7-0.8 s against 6.1-6.3)
    n = 8192 if device.type == "cuda" else 2048
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16():
        n = 1024  # emulated bf16: a 4096 product alone takes minutes
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops = 2 * n**3
    # The best step, not the median: a peak is what the device can do, and a slow step
    # (another process, a clock change) must not make the model look faster than the peak.
    rate = time_steps(lambda: (a @ b, 1)[1], device, steps=10 if device.type == "cuda" else 5, warmup=2, reduce=max)
    return rate * flops / 1e12


def train_flops_per_image(variant: str, size: int) -> float:
    """Forward MACs x 2 FLOPs x 3 (forward, and backward at twice the forward)."""
    rows = summarize(create_model(variant), size)
    return 6.0 * sum(r.macs for r in rows)


def _train_step(model, optimizer, rt: Runtime):
    """The training loop's own step (autocast, fp16 loss scaling, update) on a batch."""
    scaler = make_scaler(rt)

    def step(x: torch.Tensor, y: torch.Tensor) -> int:
        train_step(model, optimizer, scaler, rt, rt.prepare(x), y)
        return x.shape[0]
    return step


def _layers(variant: str, rt: Runtime, compile: bool) -> dict[str, str]:
    """The layers' implementations `alexnet train` would choose here (fastconv.resolve)."""
    return fastconv.resolve(variant, rt.device.type, fastconv.mode(compile), channels_last=rt.channels_last)


def _model_and_optimizer(variant: str, rt: Runtime, compile: bool):
    model = create_model(variant, init="kaiming")
    model = TwoTowerAlexNet(model, rt.towers) if rt.towers else model.to(rt.device)
    fastconv.use(model, **_layers(variant, rt, compile))
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, OptimConfig())
    return (torch.compile(model) if compile else model), optimizer


def bench_model(variant: str, rt: Runtime, batch: int, steps: int, warmup: int, compile: bool) -> Figure:
    size = variant_info(variant).input_size
    model, optimizer = _model_and_optimizer(variant, rt, compile)
    x = _augmented(rt, batch, size)
    y = torch.randint(0, 1000, (batch,), device=rt.device)
    step = _train_step(model, optimizer, rt)
    _reset_peak(rt.device)
    rate = time_steps(lambda: step(x, y), rt.devices, steps, warmup)
    streamed = time_streamed(lambda: step(x, y), rt.devices, steps)
    return Figure("model", variant, device_name(rt.device), rate, batch, steps, _peak_mib(rt.device),
                  streamed_images_per_sec=streamed)


def _augmented(rt: Runtime, batch: int, size: int) -> torch.Tensor:
    """A batch of random pixels as the training augmentation hands it to the step: in its dtype
    (bf16 from the fused pass on a GPU) and memory format, made once, outside the timing."""
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=rt.device)
    augment = TrainAugment(Normalizer.channel().to(rt.device), size, dtype=rt.dtype, channels_last=rt.channels_last)
    return rt.prepare(augment(pixels, torch.Generator(device=rt.device).manual_seed(0)))


@contextlib.contextmanager
def _packed_batches(packed_dir: str, rt: Runtime, batch: int, workers: int, gpu_decode: bool,
                    crop: int, cache: str = "none", cache_format: str = "rgb", calls: int = 0
                    ) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """A function returning the next augmented training batch (images, labels) from a
    packed dataset, epoch after epoch (each long enough for the row's ``calls``): the input side
    of the loader and end-to-end runs. Its loader processes stop when the ``with`` block ends,
    before the next row starts its own."""
    size = read_meta(packed_dir)["size"]
    req = data_loader.Request(splits=("train",), batch_size=batch, workers=workers, gpu_decode=gpu_decode,
                              cache=cache, cache_format=cache_format)
    splits = data_loader.build(packed_dir, size, rt.device, req)
    _lengthen_epochs(splits.train, workers, calls)
    augment = TrainAugment(Normalizer.channel().to(rt.device), crop, dtype=rt.dtype, channels_last=rt.channels_last)
    gen = torch.Generator(device=rt.device).manual_seed(0)

    def cycle() -> Iterator[data_loader.Batch]:
        epoch = 0
        while True:
            splits.train.set_epoch(epoch)
            yield from splits.train
            epoch += 1

    it = cycle()

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        b = next(it)
        return augment(b.images, gen), b.labels

    try:
        yield next_batch
    finally:
        it.close()
        splits.close()


def _lengthen_epochs(train: data_loader.Batches, workers: int, calls: int = 0) -> None:
    """Pass over a small packed set several times an epoch, so that no epoch ends within the
    warm-up and timed steps. An epoch's end drains the loader processes' queue and leaves most
    of them idle: on an H200 with 16 processes, 1,000 images (3 batches an epoch) gave 2,239
    img/s from a loader whose one core decoded 1,645 (2026-11-26). Decoding an image twice costs
    what decoding two does."""
    passes = _passes(len(train), resolve_workers(workers), data_loader.PREFETCH, calls)
    if passes > 1:
        train.repeat(passes)


def _passes(batches: int, workers: int, prefetch: int, calls: int = 0) -> int:
    """Passes over a set of ``batches`` an epoch that make the epoch the ``calls`` a row makes
    (warm-ups and timed steps) and 4 times what ``workers`` loader processes hold ahead,
    ``prefetch`` batches each, more."""
    need = calls + 4 * max(1, workers) * prefetch
    return max(1, -(-need // max(1, batches)))


def _warmup_past_prefetch(warmup: int, workers: int) -> int:
    """Warm-up steps for a loader-fed row: past the batches the workers decoded in advance,
    so that the timed steps measure the loader's rate, not its queue."""
    return warmup + data_loader.PREFETCH * workers


def bench_loader(packed_dir: str, rt: Runtime, batch: int, steps: int, warmup: int, workers: int,
                 gpu_decode: bool, crop: int = 224) -> Figure:
    warm = _warmup_past_prefetch(warmup, workers)
    with _packed_batches(packed_dir, rt, batch, workers, gpu_decode, crop, calls=warm + steps) as next_batch:
        _reset_peak(rt.device)
        rate = time_steps(lambda: next_batch()[0].shape[0], rt.device, steps, warm, reduce=throughput)
    return Figure("loader", "-", device_name(rt.device), rate, batch, steps, _peak_mib(rt.device),
                  {"workers": workers, "gpu_decode": gpu_decode})


def bench_decode(packed_dir: str, batch: int, steps: int, warmup: int) -> Figure:
    """JPEG decoding alone on one CPU core (torchvision's decode_jpeg, as the loader workers run
    it): with the model-only rate it says how many cores it takes to keep the device fed."""
    split = PackedSplit(packed_dir, "train")
    if split.encoding != "jpeg":
        raise AlexNetError(f"{packed_dir} stores raw images: there is nothing to decode")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    try:
        offset = 0

        def step() -> int:
            nonlocal offset
            indices = [(offset + i) % len(split) for i in range(batch)]
            offset += batch
            return split.batch(indices)[0].shape[0]

        rate = time_steps(step, cpu, steps, warmup)
    finally:
        torch.set_num_threads(threads)
    return Figure("decode", "-", device_name(cpu), rate, batch, steps, _peak_mib(cpu), {"threads": 1})


def bench_end_to_end(variant: str, packed_dir: str, p: "_Plan", cached: bool = False) -> Figure | None:
    """Training from the packed JPEGs, or (``cached``) from the split decoded once into memory
    as ``p.cache`` says (row ``cached``, with where it went; the decoding itself is not timed;
    None where ``auto`` finds no room)."""
    rt, batch, steps, workers, gpu_decode = p.rt, p.batch, p.steps, p.workers, p.gpu_decode
    cache, cache_format = (p.cache, p.cache_format) if cached else ("none", "auto")
    crop = variant_info(variant).input_size
    if cache != "none":  # where the cache goes (auto may find no room: then there is no cached row)
        from .data import cache as data_cache

        meta = read_meta(packed_dir)
        cache, cache_format = data_cache.choose(cache, meta["splits"]["train"]["count"], meta["size"], rt.device,
                                                cache_format)
        if cache == "none":
            return None
    warm, queued = _warmup_past_prefetch(p.warmup, workers), _warmup_past_prefetch(0, workers)
    calls = warm + steps + (queued + steps if rt.device.type == "cuda" else 0)  # and the streamed run's
    with _packed_batches(packed_dir, rt, batch, workers, gpu_decode, crop, cache, cache_format, calls) as next_batch:
        model, optimizer = _model_and_optimizer(variant, rt, p.compile)
        train = _train_step(model, optimizer, rt)
        _reset_peak(rt.device)
        rate = time_steps(lambda: train(*next_batch()), rt.devices, steps, warm, reduce=throughput)
        streamed = time_streamed(lambda: train(*next_batch()), rt.devices, steps, warmup=queued)
    return Figure("end-to-end" if cache == "none" else "cached", variant, device_name(rt.device), rate, batch, steps,
                  _peak_mib(rt.device), {"workers": workers, "gpu_decode": gpu_decode, "data": "packed",
                                         "cache": cache, **({"cache_format": cache_format} if cache != "none" else {})},
                  streamed_images_per_sec=streamed)


def bench_baseline(folder: str, device: torch.device, batch: int, steps: int, warmup: int, workers: int) -> Figure:
    """torchvision alexnet, eager fp32, ImageFolder + PIL transforms + DataLoader."""
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = torchvision.datasets.ImageFolder(os.path.join(folder, "train"), transform=tf)
    # an epoch of several shuffled passes over a small folder, as the packed rows get (_lengthen_epochs);
    # 2: DataLoader's default prefetch
    warm = warmup + 2 * workers  # past DataLoader's default prefetch of 2 batches a worker
    passes = _passes(len(dataset) // max(1, batch), workers, 2, warm + steps)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=len(dataset) * passes)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    model = torchvision.models.alexnet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def batches():
        while True:
            yield from loader

    it = batches()

    def step() -> int:
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return x.shape[0]

    _reset_peak(device)
    try:
        with _pytorch_defaults():
            rate = time_steps(step, device, steps, warm, reduce=throughput)
    finally:
        it.close()
        data_loader.close_loader(loader)
    return Figure("baseline", "torchvision (eager fp32, ImageFolder+PIL)", device_name(device), rate, batch, steps,
                  _peak_mib(device), {"workers": workers})


@contextlib.contextmanager
def _pytorch_defaults() -> Iterator[None]:
    """The arithmetic a plain PyTorch script gets, for the baseline: matrix products in full fp32
    and convolutions in TF32 (PyTorch's defaults), cuDNN's autotuner on (as the ImageNet example
    sets it), whatever this run set for its own rows."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark
    matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = False, True, True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise AlexNetError(f"--{name.replace('_', '-')} must not be negative (0 takes the default), got {value}")


def _check_inputs(variants: list[str], model_parallel: str, images: str | None, packed: str | None,
                  gpu_decode: bool, **counts: int) -> None:
    """Every input checked before any measurement, not after minutes of them."""
    for v in variants:
        variant_info(v)
    if model_parallel and variants != ["paper"]:
        raise AlexNetError("--model-parallel benchmarks the paper network only: add --variant paper")
    _check_counts(**counts)
    if images and not os.path.isdir(os.path.join(images, "train")):
        raise AlexNetError(f"--images {images}: no train/ folder of class folders there")
    if packed:
        read_meta(packed)  # a one-line error when it is not a packed dataset
    if gpu_decode and not packed and not images:
        raise AlexNetError("--gpu-decode needs packed data: pass --images or --packed")


@dataclass
class _Plan:
    """What one ``run`` measures, and how."""

    rt: Runtime
    variants: list[str]
    batch: int
    steps: int
    warmup: int
    workers: int
    compile: bool
    gpu_decode: bool
    cache: str = "none"
    cache_format: str = "auto"

    def settings(self) -> dict:
        dtype = self.rt.dtype or torch.float32
        return {"precision": str(dtype).replace("torch.", ""), "channels_last": self.rt.channels_last,
                "model_parallel": [str(d) for d in self.rt.towers] if self.rt.towers else None,
                "compile": self.compile, "batch_size": self.batch, "steps": self.steps, "warmup": self.warmup,
                "workers": self.workers, "torch": torch.__version__}


def _measure(plan: _Plan, peak: float, images: str | None, packed: str | None, baseline: bool,
             add: Callable[[Figure], None]) -> None:
    """Every row, each added as soon as it is measured. ``images`` without ``packed`` are
    packed into a temporary directory first."""
    p = plan
    for v in p.variants:
        fig = bench_model(v, p.rt, p.batch, p.steps, p.warmup, p.compile)
        fig.fraction_of_peak = fig.images_per_sec * train_flops_per_image(v, variant_info(v).input_size) / (peak * 1e12)
        fig.settings = {**p.settings(), "layers": _layers(v, p.rt, p.compile)}
        add(fig)
    with contextlib.ExitStack() as stack:
        if images and not packed:
            from .data.packed import prepare

            packed = stack.enter_context(tempfile.TemporaryDirectory(prefix="alexnet-bench-"))
            prepare(images, packed, workers=p.workers, progress=False)
        if packed:
            if read_meta(packed)["encoding"] == "jpeg":
                add(bench_decode(packed, p.batch, p.steps, p.warmup))
            add(bench_loader(packed, p.rt, p.batch, p.steps, p.warmup, p.workers, p.gpu_decode))
            for v in p.variants:
                add(bench_end_to_end(v, packed, p))
            for v in p.variants if p.cache != "none" else ():
                fig = bench_end_to_end(v, packed, p, cached=True)
                if fig is not None:
                    add(fig)
        if images and baseline:
            add(bench_baseline(images, p.rt.device, p.batch, p.steps, p.warmup, p.workers))


def _derived(figures: list[Figure], variants: list[str]) -> dict[str, dict[str, float]]:
    """Ratios, the CPU cores decoding would take at the model-only rate, and what the
    end-to-end rate means for the paper's run (90 epochs of ILSVRC-2012's 1,281,167 images)."""
    by = {(f.what, f.variant): f.images_per_sec for f in figures}
    base = next((f.images_per_sec for f in figures if f.what == "baseline"), None)
    ratios = {f"{v}: {what} / model": by[(what, v)] / by[("model", v)]
              for what in ("end-to-end", "cached") for v in variants if (what, v) in by and ("model", v) in by}
    streamed = {(f.what, f.variant): f.streamed_images_per_sec for f in figures if f.streamed_images_per_sec}
    ratios |= {f"{v}: {what} / model, streamed": streamed[(what, v)] / streamed[("model", v)]
               for what in ("end-to-end", "cached") for v in variants if (what, v) in streamed and ("model", v) in streamed}
    if base and ("end-to-end", "torchvision") in by:  # the same network on the same images
        ratios["torchvision: end-to-end / baseline"] = by[("end-to-end", "torchvision")] / base
    decode = by.get(("decode", "-"))
    cores = {f"{v}: CPU cores to decode at the model-only rate": by[("model", v)] / decode
             for v in variants if decode and ("model", v) in by}
    projection = {f"{f.variant}{' (cached)' if f.what == 'cached' else ''}: 90 ImageNet epochs (hours)":
                  90 * IMAGENET_TRAIN_IMAGES / f.images_per_sec / 3600 for f in figures if f.what in ("end-to-end", "cached")}
    return {"ratios": ratios, "decode_cores": cores, "projection": projection}


def run(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Run the benchmarks; returns {"device", "settings", "figures": [...], "ratios": {...}, ...}."""
    variants, images, packed, baseline = list(cfg.variants), cfg.images, cfg.packed, cfg.baseline
    _check_inputs(variants, cfg.model_parallel, images, packed, cfg.gpu_decode, batch_size=cfg.batch_size,
                  steps=cfg.steps, warmup=cfg.warmup)
    rt = resolve_runtime(TrainConfig(device=cfg.device, precision=cfg.precision, channels_last=cfg.channels_last,
                                     model_parallel=cfg.model_parallel))
    cuda = rt.device.type == "cuda"
    plan = _Plan(rt, variants, cfg.batch_size or (256 if cuda else 64), cfg.steps or (50 if cuda else 5),
                 cfg.warmup or (10 if cuda else 2), resolve_workers(cfg.workers), cfg.compile, cfg.gpu_decode, cfg.cache,
                 cfg.cache_format)
    figures: list[Figure] = []

    def add(fig: Figure) -> None:
        figures.append(fig)
        frac = f", {100 * fig.fraction_of_peak:.1f}% of matmul peak" if fig.fraction_of_peak else ""
        streamed = f" ({fig.streamed_images_per_sec:,.0f} streamed)" if fig.streamed_images_per_sec else ""
        log(f"{fig.what:<11} {fig.variant:<12} {fig.images_per_sec:>10,.0f} img/s{streamed}  peak "
            f"{fig.peak_memory_mib:,.0f} MiB{frac}")

    peak = matmul_peak_tflops(rt.device, rt.dtype or torch.float32)
    log(f"device: {device_name(rt.device)}; matmul peak {peak:.2f} TFLOP/s ({plan.settings()['precision']})")
    _measure(plan, peak, images, packed, baseline, add)
    derived = _derived(figures, variants)
    for name, fmt in (("ratios", "{:.2f}x"), ("decode_cores", "{:.1f}"), ("projection", "{:,.1f}")):
        for k, value in derived[name].items():
            log(f"{k}: {fmt.format(value)}")
    return {"device": device_name(rt.device), "matmul_peak_tflops": peak, "settings": plan.settings(),
            "figures": [asdict(f) for f in figures], **derived}


# ---------------------------------------------------------------------------
# Inference: images/s at batch 1 and 64, eager PyTorch against the exported model.

def bench_inference(batch_sizes: tuple[int, ...] = (1, 64), steps: int = 0, warmup: int = 0,
                    log: Callable[[str], None] = print) -> dict:
    """The ``torchvision`` network with the same weights, five ways, on the CPU."""
    _check_counts(steps=steps, warmup=warmup)
    import onnxruntime as ort
    import torchvision

    from .exporter import write_onnx

    device = torch.device("cpu")
    torch.manual_seed(0)
    reference = torchvision.models.alexnet().eval()
    ours = create_model("torchvision").eval()
    ours.load_state_dict(reference.state_dict())
    ours_cl = create_model("torchvision").eval().to(memory_format=torch.channels_last)
    ours_cl.load_state_dict(reference.state_dict())

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "alexnet.onnx")
        write_onnx(ours, torch.randn(2, 3, 224, 224), path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def bf16(model):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return run

    engines = {
        "torchvision eager fp32 (baseline)": lambda x: reference(x),
        "alexnet eager fp32": lambda x: ours(x),
        "alexnet eager fp32 channels-last": lambda x: ours_cl(x.contiguous(memory_format=torch.channels_last)),
        "alexnet eager bf16 channels-last": lambda x: bf16(ours_cl)(x.contiguous(memory_format=torch.channels_last)),
        "ONNX Runtime fp32 (alexnet export)": lambda x: session.run(None, {"images": x.numpy()})[0],
    }
    figures = []
    for batch in batch_sizes:
        x = torch.randn(batch, 3, 224, 224)
        n_steps = steps or (20 if batch == 1 else 5)
        for name, fn in engines.items():
            def step() -> int:
                fn(x)
                return batch
            with torch.inference_mode():
                rate = time_steps(step, device, n_steps, warmup or 2)
            figures.append(Figure("inference", name, device_name(device), rate, batch, n_steps, _peak_mib(device)))
            log(f"batch {batch:>3}  {name:<38} {rate:>9,.1f} img/s")
    ratios = {}
    for batch in batch_sizes:
        rates = {f.variant: f.images_per_sec for f in figures if f.batch_size == batch}
        base = rates["torchvision eager fp32 (baseline)"]
        for name, r in rates.items():
            if name != "torchvision eager fp32 (baseline)":
                ratios[f"batch {batch}: {name} / baseline"] = r / base
    for k, r in ratios.items():
        log(f"{k}: {r:.2f}x")
    return {"device": device_name(device), "figures": [asdict(f) for f in figures], "ratios": ratios,
            "torch": torch.__version__, "onnxruntime": ort.__version__}
