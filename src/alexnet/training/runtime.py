"""Runtime switches: device, precision, memory format and the process group, each decided
in one place (``resolve_runtime``) and used through ``Runtime`` by training, evaluation,
inference and the benchmark."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import distributed
from .config import TrainConfig
from ..errors import AlexNetError
from ..models.towers import resolve_devices


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool
    env: distributed.Env
    towers: tuple[torch.device, torch.device] | None = None  # --model-parallel: the two towers' devices
    graphed: bool = False  # the training step replayed from a CUDA graph (--cuda-graphs; training.graphs.wanted)

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Every device the model computes on: the two towers', or the one."""
        return self.towers or (self.device,)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    if world > 1 and name not in ("auto", "cpu", "cuda"):
        raise AlexNetError(f"--device {name} under torchrun would put every process on the same device; "
                           "use --device cuda (process r takes cuda:LOCAL_RANK) or auto")
    if name == "auto":
        return _existing(torch.device(f"cuda:{local_rank}"), local_rank, world) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AlexNetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlexNetError("--device cuda was asked for, but no CUDA device is available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return _existing(device, local_rank, world)


def _existing(device: torch.device, local_rank: int, world: int) -> torch.device:
    """The device itself, or one line saying that this machine has no such GPU."""
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type != "cuda" or device.index < count:
        return device
    if world > 1:
        raise AlexNetError(f"process {local_rank} of this node would take cuda:{device.index}, but the node has "
                           f"{count} CUDA device(s): start at most {count} process(es) per node "
                           "(torchrun --nproc-per-node) or train on --device cpu")
    raise AlexNetError(f"there is no cuda:{device.index}: this machine has {count} CUDA device(s)")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX, through oneDNN). Without it
    PyTorch emulates bf16 convolutions and matrix products: training ran about 30x slower than
    fp32 on an AVX2 machine (docs/benchmarks.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` (None: fp32). ``auto``: bf16 on CUDA and on CPUs
    with native bf16, fp32 elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise AlexNetError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        print("alexnet: warning: this CPU has no native bf16 (AVX-512 BF16 or AMX); bf16 runs emulated, "
              "many times slower than fp32 (--precision auto chooses for you)", file=sys.stderr)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    env = distributed.from_environment()
    towers = resolve_devices(cfg.model_parallel, env.local_rank, env.world) if cfg.model_parallel else None
    # With the towers split, the batch, the loss and the metrics live on tower 1's device.
    device = towers[0] if towers else resolve_device(cfg.device, env.local_rank, env.world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        # TF32 for what runs outside autocast, except where fp32 was asked for by name: then every
        # product is full fp32 (the cifar preset's "the same arithmetic on any machine").
        tf32 = cfg.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    dtype = autocast_dtype(cfg.precision, device)
    # auto: on where measured faster, CUDA and the CPU (every network's step, docs/benchmarks.md)
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type in ("cuda", "cpu"))
    env = distributed.setup(device)
    return Runtime(device, dtype, channels_last, env, towers)


def timed_calls(fn, devices: torch.device | Sequence[torch.device], calls: int,
                warmup: int) -> list[tuple[float, object]]:
    """(seconds, result) of ``calls`` calls of ``fn`` after ``warmup`` untimed ones, each timed
    to the completion of its work on every one of ``devices`` (with the towers split, the second
    tower's backward and update end after the first's): the benchmarks' and the time budget's
    one clock."""
    devices = as_devices(devices)
    for _ in range(warmup):
        fn()
    _sync(devices)
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        result = fn()
        _sync(devices)
        out.append((time.perf_counter() - start, result))
    return out


def streamed_calls(fn, devices: torch.device | Sequence[torch.device], calls: int) -> tuple[float, list]:
    """(seconds, results) of ``calls`` calls of ``fn`` back to back, waiting for ``devices`` once
    before and once after: the pace of a training loop, where the host queues step k + 1 (its
    batch's preparation too) while a GPU still runs step k. ``timed_calls`` waits after every
    call, so the host's part of each step adds to the device's instead of hiding under it."""
    devices = as_devices(devices)
    _sync(devices)
    start = time.perf_counter()
    results = [fn() for _ in range(calls)]
    _sync(devices)
    return time.perf_counter() - start, results


def as_devices(devices: torch.device | Sequence[torch.device]) -> tuple[torch.device, ...]:
    """One device or several, as a tuple."""
    return (devices,) if isinstance(devices, torch.device) else tuple(devices)


def _sync(devices: tuple[torch.device, ...]) -> None:
    for device in dict.fromkeys(devices):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
