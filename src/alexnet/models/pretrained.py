"""Published weights by name, the way torchvision users ask for them:
``create_model("torchvision", weights="IMAGENET1K_V1")`` (or ``"DEFAULT"``, or torchvision's own
``AlexNet_Weights.IMAGENET1K_V1``), ``alexnet predict IMAGENET1K_V1 photo.jpg``.

The file is taken from torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where
``torchvision.models.alexnet(weights=...)`` leaves it), else downloaded there once. Either way
its SHA-256 must begin with the hash its published name carries (torchvision's convention:
``alexnet-owt-7be5be79.pth``), and it is read with ``torch.load(weights_only=True)``: a plain
state dict of tensors, never pickled code. The published prefix is 32 bits of the hash: it
catches a damaged, truncated or different file, as torch.hub's own check does, not a forgery
made to match it; a mirror should be served over HTTPS. ``ALEXNET_WEIGHTS_MIRROR`` points the download at a
mirror of ``download.pytorch.org/models`` (a machine without internet, an internal cache).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import AlexNetError
from ..files import sha256_of

MIRROR_ENV = "ALEXNET_WEIGHTS_MIRROR"
TORCHVISION_MODELS = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Published:
    """One set of published weights: where it comes from and how it was measured."""

    name: str
    variant: str
    file: str  # the published file name; the hex before its suffix starts its SHA-256
    base_url: str
    num_classes: int
    crop: int  # the evaluation crop and the resize before it
    resize: int
    accuracy: dict = field(default_factory=dict)  # as published, with who measured it and how

    @property
    def sha256_prefix(self) -> str:
        return self.file.rsplit(".", 1)[0].rsplit("-", 1)[1]

    @property
    def url(self) -> str:
        return (os.environ.get(MIRROR_ENV) or self.base_url).rstrip("/") + "/" + self.file


PUBLISHED = {
    # torchvision's AlexNet_Weights.IMAGENET1K_V1: trained with the single-tower "one weird trick"
    # recipe (Krizhevsky 2014); 61,100,840 parameters.
    "IMAGENET1K_V1": Published(
        "IMAGENET1K_V1", "torchvision", "alexnet-owt-7be5be79.pth", TORCHVISION_MODELS, 1000, crop=224, resize=256,
        accuracy={"top1": 0.56522, "top5": 0.79066, "protocol": "center", "split": "ILSVRC-2012 val",
                  "by": "torchvision (not measured here)"}),
}
ALIASES = {"DEFAULT": "IMAGENET1K_V1"}


def lookup(weights) -> Published | None:
    """The published weights a name stands for ("IMAGENET1K_V1", "DEFAULT", or torchvision's
    ``AlexNet_Weights.IMAGENET1K_V1``, as the enum or its text); None for anything else, and
    for every path (a ``Path`` is a file, never a name, whatever its last part)."""
    if isinstance(weights, os.PathLike):
        return None
    name = getattr(weights, "name", None) or str(weights)
    name = name.rsplit(".", 1)[-1] if name.startswith("AlexNet_Weights.") else name
    return PUBLISHED.get(ALIASES.get(name, name))


def require(weights) -> Published:
    entry = lookup(weights)
    if entry is None:
        names = ", ".join([*PUBLISHED, *ALIASES])
        raise AlexNetError(f"no published weights called {weights!r}; choose one of {names}, or give a weights file")
    return entry


def cache_dir() -> Path:
    """torch's hub cache, where torchvision keeps the same files (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(entry: Published, download: bool = True) -> Path:
    """The file of ``entry``: from the hub cache, else downloaded into it, its hash checked
    (once per process while the file stays as it was)."""
    path = cache_dir() / entry.file
    if path.is_file():
        stamp = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
        if stamp not in _CHECKED:
            _check_hash(path, entry, where="in the cache")
            _CHECKED.add(stamp)
        return path
    if not download:
        raise AlexNetError(f"{entry.name}: {path} not found and downloading is off; put {entry.file} there")
    _download(entry, path)
    return path


def published_source(weights) -> Published | None:
    """The published weights ``weights`` names, unless it is a file or folder that exists here
    (a run directory called DEFAULT stays a run directory)."""
    if isinstance(weights, (str, os.PathLike)) and os.path.exists(weights):
        return None
    return lookup(weights)


def state_dict(entry: Published, download: bool = True) -> dict[str, torch.Tensor]:
    path = weights_file(entry, download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise AlexNetError(f"{path} is not a readable PyTorch weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AlexNetError(f"{path} does not hold a state dict of tensors")
    return state


_CHECKED: set[tuple[str, int, int]] = set()
MAX_DOWNLOAD = 1 << 30  # the published file is 233 MB


def _check_hash(path: Path, entry: Published, where: str) -> None:
    actual = sha256_of(path)
    if not actual.startswith(entry.sha256_prefix):
        raise AlexNetError(f"{path} ({where}) has SHA-256 {actual[:16]}..., not the published {entry.sha256_prefix}...: "
                           "a damaged or different file; delete it to download it again")


def _download(entry: Published, path: Path) -> None:
    """Into a temporary file beside ``path``, hash checked, then renamed: a failed download, or
    one whose hash is not the published one, never leaves a file in the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=path.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > MAX_DOWNLOAD:
                    raise AlexNetError(f"the download of {entry.url} is larger than {MAX_DOWNLOAD >> 20} MiB: "
                                       "refused, nothing kept")
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(entry.sha256_prefix):
            raise AlexNetError(f"the download of {entry.url} has SHA-256 {digest.hexdigest()[:16]}..., not the "
                               f"published {entry.sha256_prefix}...: refused, nothing kept")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise AlexNetError(f"could not download {entry.name} from {entry.url} ({reason}); without a network, "
                           f"put {entry.file} in {path.parent} (or set {MIRROR_ENV} to a mirror)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
