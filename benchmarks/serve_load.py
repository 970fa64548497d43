"""Load test for ``alexnet serve``: throughput, latency, and that every answer is the right one.

Starts ``alexnet serve WEIGHTS`` on 127.0.0.1 (once with --max-batch 1, once with dynamic
batching), then, for each concurrency, runs that many clients for a fixed time; each client
posts its own images in turn and checks every answer against the answer for that image
computed beforehand by ``alexnet.predict`` (same network, same preprocessing): none may be
lost, refused or swapped. Reports requests/s and p50/p99 latency.

Usage: python benchmarks/serve_load.py RUN_OR_WEIGHTS --concurrency 1 8 64 --seconds 20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: str, *flags: str, host: str = "127.0.0.1", env: dict | None = None) -> tuple:
    """``alexnet serve`` in a subprocess; returns (process, base URL) once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "serve", str(weights), "--host", host, "--port",
                             str(port), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"alexnet serve exited: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("alexnet serve did not answer /health within 60 s")


def stop_server(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def post(url: str, data: bytes, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def sample_images(count: int, seed: int = 0) -> list[bytes]:
    """Distinct JPEGs cut from scikit-image's photographs (each a different crop and size)."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(120, min(photo.shape[:2])))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        buf = io.BytesIO()
        Image.fromarray(photo[y:y + side, x:x + side]).resize((160, 160)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def expected_answers(weights: str, images: list[bytes], workdir: Path) -> list[tuple[int, float]]:
    """(top-1 index, its probability) of each image, from the library's ``predict``."""
    from alexnet import predict

    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(images):
        paths.append(workdir / f"{i:04d}.jpg")
        paths[-1].write_bytes(data)
    results = predict(weights, [str(p) for p in paths], workers=0, progress=False)
    by_path = {r["path"]: (r["top"][0]["index"], r["top"][0]["prob"]) for r in results}
    return [by_path[str(p)] for p in paths]


def run_load(url: str, images: list[bytes], expected: list[tuple[int, float]], concurrency: int,
             seconds: float) -> dict:
    """``concurrency`` clients for ``seconds``; client c posts images c, c + concurrency, ..."""
    latencies, wrong, failed, batches = [], [], [], []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(c: int) -> None:
        i = c
        while time.perf_counter() < stop_at:
            k = i % len(images)
            start = time.perf_counter()
            status, body = post(f"{url}/predict", images[k])
            took = time.perf_counter() - start
            with lock:
                if status != 200:
                    failed.append((status, body.get("error")))
                elif (body["top"][0]["index"] != expected[k][0]
                      or abs(body["top"][0]["prob"] - expected[k][1]) > 1e-3):
                    wrong.append(k)
                else:
                    latencies.append(took)
                    batches.append(body["batch"])
            i += concurrency

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    lat = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(lat), "wrong": len(wrong), "failed": len(failed),
            "failures": failed[:3], "req_per_s": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "mean_batch": statistics.fmean(batches) if batches else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5)
    p.add_argument("--workdir", default="/tmp/serve-load")
    args = p.parse_args()
    images = sample_images(args.images)
    expected = expected_answers(args.weights, images, Path(args.workdir))
    rows = []
    for label, flags in (("batch size 1", ["--max-batch", "1", "--max-wait-ms", "0"]),
                         (f"dynamic (max {args.max_batch}, {args.max_wait_ms:g} ms)",
                          ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)])):
        proc, url = start_server(args.weights, *flags)
        try:
            post(f"{url}/predict", images[0])  # warm-up
            for c in args.concurrency:
                row = {"serving": label, **run_load(url, images, expected, c, args.seconds)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop_server(proc)
    print("\n| serving | concurrency | requests/s | p50 ms | p99 ms | mean batch | wrong | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['serving']} | {r['concurrency']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
              f"| {r['mean_batch']:.1f} | {r['wrong']} | {r['failed']} |")


if __name__ == "__main__":
    main()
