"""The applications' settings as typed dataclasses with their help texts: ``alexnet serve``'s
and ``alexnet bench``'s flags are generated from them, as ``alexnet train``'s are from
``training.config``, so a default is written once. Kept free of torch, so that the command
line builds every parser without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import AlexNetError
from .training.config import setting

DEVICE_HELP = "auto (cuda if present), cpu, cuda or cuda:N"


@dataclass
class ServeConfig:
    weights: str = field(metadata={"help": "run directory, weights file or published weights name"})
    host: str = setting("127.0.0.1", "address to bind; anything but loopback wants --token")
    port: int = setting(8000, "TCP port to listen on")
    max_batch: int = setting(32, "images in one forward pass (1: no batching)")
    max_wait_ms: float = setting(5.0, "how long a request waits for others to batch with")
    max_queue: int = setting(256, "queued images beyond this are refused with 503")
    max_upload_mb: float = setting(10.0, "larger uploads are refused with 413")
    read_timeout: float = setting(10.0, "seconds a client has to send its upload (else 408)")
    token: str | None = setting(None, "require 'Authorization: Bearer TOKEN' (or set ALEXNET_TOKEN)")
    ten_crop: bool = setting(False, "the paper's 10-crop protocol instead of the center crop")
    topk: int = setting(5, "classes returned when a request does not say (?topk=)")
    device: str = setting("auto", DEVICE_HELP)
    precision: str = setting("fp32", "bf16: autocast + channels-last", choices=("fp32", "bf16"))

    def check(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_ms < 0:
            raise AlexNetError("--max-batch and --max-queue must be at least 1, --max-wait-ms at least 0")
        if self.max_upload_mb <= 0 or self.read_timeout <= 0:
            raise AlexNetError("--max-upload-mb and --read-timeout must be positive")
        if not 1 <= self.port <= 65535:
            raise AlexNetError(f"--port must be in 1..65535, got {self.port}")


@dataclass
class BenchConfig:
    """What ``alexnet bench`` measures and how (0 and -1: the device's default)."""

    variants: tuple[str, ...] = setting(("paper", "torchvision"), "the networks (--variant, repeated)")
    images: str | None = setting(None, "class-per-folder tree of images for the loader, end-to-end and baseline runs")
    packed: str | None = setting(None, "an already packed copy of --images (alexnet prepare)")
    device: str = setting("auto", DEVICE_HELP)
    precision: str = setting("auto", "auto: bf16 on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: str = setting("auto", "auto: on for CUDA and the CPU", choices=("auto", "on", "off"))
    compile: bool = setting(False, "torch.compile the network")
    batch_size: int = setting(0, "0: 256 on GPU, 64 on CPU")
    steps: int = setting(0, "timed steps; 0: 50 on GPU, 5 on CPU")
    warmup: int = setting(0, "untimed steps first; 0: 10 on GPU, 2 on CPU")
    workers: int = setting(-1, "image-decoding processes; -1 = one per CPU core")
    gpu_decode: bool = setting(False, "decode packed JPEGs on the GPU")
    cache: str = setting("none", "also train end to end from the packed split decoded once into memory (row 'cached')",
                    choices=("none", "auto", "gpu", "host"))
    cache_format: str = setting("auto", "the cached row's pixels: rgb, 420 (half the bytes, converted on the device), "
                                   "auto (rgb where it fits)", choices=("auto", "rgb", "420"))
    model_parallel: str = setting("", "the paper network split in two towers: 'auto' or two devices, e.g. cuda:0,cuda:1")
    baseline: bool = setting(True, "also run the plain PyTorch baseline on the same images")
