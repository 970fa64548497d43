"""``alexnet serve``: a trained network over HTTP, with dynamic batching and a web page.

FastAPI on uvicorn. Requests are decoded in a thread pool under the file policy (data/folder.py)
and queued; a batcher gathers what is queued, up to ``max_batch`` images or ``max_wait_ms``
after the first, into one forward pass on a single inference thread, so that under load the
network runs at its batched throughput (docs/benchmarks.md, "Serving"). Everything the page
needs is served from the package (``web/``): it works with no network at all.

Hostile input: a body over ``max_upload_mb`` is refused with 413 (from its Content-Length
before it is read, or as soon as it has sent too much), a body not sent within
``read_timeout`` seconds with 408, an upload that is not a readable image with 400, a full
queue with 503 (never unbounded memory); every error is a JSON ``{"error": "one line"}``.
A bearer token (``--token`` or ``ALEXNET_TOKEN``) guards the API when set. SIGTERM stops
accepting connections, finishes the requests in flight, then exits (uvicorn's shutdown).
"""


import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from .models import pretrained
from .options import ServeConfig
from .training.checkpoint import find_weights
from .data.folder import UnreadableImage, decode_image
from .errors import AlexNetError
from .files import sha256_of

WEB = Path(__file__).with_name("web")
TOKEN_ENV = "ALEXNET_TOKEN"


class Rejected(Exception):
    """A request refused with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# ---------------------------------------------------------------------------
# The network and the batcher.


EXPLAIN_PENDING = 2  # explanations taken or waiting at once; more are refused with 503


class Model:
    """The loaded network: identity, metadata and batched forward passes (one thread)."""

    def __init__(self, cfg: ServeConfig) -> None:
        from .infer import Loaded

        published = pretrained.published_source(cfg.weights)
        self.path = pretrained.weights_file(published) if published else find_weights(cfg.weights)
        self.net = Loaded.from_path(published.name if published else self.path, cfg.device, cfg.precision)
        meta = self.net.meta
        self.names = self.net.names
        self.layer = self.net.model.feature_layers[-1]
        from .explain import stages

        self.stages = [s.name for s in stages(self.net.model)]  # conv1, conv2, ...
        self.ten_crop = cfg.ten_crop
        self.protocol = "ten-crop" if cfg.ten_crop else "center"
        self.sha256 = sha256_of(self.path)
        self.info = {"variant": meta["variant"], "weights": self.path.name, "sha256": self.sha256,
                     "num_classes": meta["num_classes"], "classes": self.names, "input_size": meta["input_size"],
                     "resize": meta["resize"], "num_params": meta.get("num_params"),
                     "accuracy": meta.get("accuracy"), "protocol": self.protocol, "features_layer": self.layer,
                     "device": str(self.net.device)}
        self.identity = {"variant": meta["variant"], "weights": self.path.name, "sha256": self.sha256[:16]}

    def probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.net.probabilities(torch.stack(images), self.ten_crop).cpu())

    def explanation(self, image: torch.Tensor) -> dict:
        """Grad-CAM at the last stage and each stage's most active maps (``explain.describe``),
        the pictures as PNG bytes. Runs in the inference thread, one image at a time."""
        from .explain import describe, png_bytes

        result = describe(self.net, image, methods=("gradcam",), columns=16)
        result["images"] = {k: png_bytes(v) for k, v in result["images"].items()}
        return result

    def features(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.net.features(torch.stack(images), self.layer).cpu())


class Batcher:
    """Gathers queued images into batches for ``run`` (one batch at a time, on ``executor``).

    A batch starts when the network is free and takes what is queued, then waits for more, up to
    ``max_wait`` after its first image, unless the server looks idle: the last batch held one
    image and no other request is being read or decoded (``arriving``). So a lone request
    never waits for company that is not coming, and under load batches fill up. ``submit``
    returns the image's own result and the size of the batch it ran in; a full queue raises
    ``Rejected(503)``."""

    def __init__(self, run: Callable[[list], list], executor: ThreadPoolExecutor, max_batch: int,
                 max_wait: float, max_queue: int) -> None:
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait = max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue(max_queue)
        self.task: asyncio.Task | None = None
        self.arriving = 0  # requests being read or decoded for this batcher
        self.last = 1  # the size of the last batch

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @contextlib.contextmanager
    def arrival(self):
        """Count a request as arriving (being read or decoded) while the block runs: the batch
        being gathered waits for it rather than leave at once."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def submit(self, item: Any) -> tuple[Any, int]:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Rejected(503, "the server is at capacity; retry shortly", {"Retry-After": "1"}) from None
        return await future

    async def _gather(self) -> list:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            if not self.arriving and self.last <= 1:  # idle: nobody else is coming
                break
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.last = len(batch)
            try:
                results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 -- one bad batch answers its requests, the server goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # its client may have gone
                    future.set_result((result, len(batch)))


# ---------------------------------------------------------------------------
# The application.


def create_app(cfg: ServeConfig, model: Model | None = None):
    """The FastAPI application (``model`` may be given already loaded)."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    cfg.check()
    model = model or Model(cfg)
    executor = ThreadPoolExecutor(1, thread_name_prefix="alexnet-infer")  # one forward pass at a time
    explaining = {"n": 0}  # explanations taken or waiting
    wait = cfg.max_wait_ms / 1000
    predictor = Batcher(model.probabilities, executor, cfg.max_batch, wait, cfg.max_queue)
    extractor = Batcher(model.features, executor, cfg.max_batch, wait, cfg.max_queue)

    @asynccontextmanager
    async def lifespan(app):
        predictor.start()
        extractor.start()
        yield
        await predictor.stop()
        await extractor.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="alexnet serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A trained AlexNet (or LeNet-5) network: top-k classes, features and an explanation "
                              "of an image.")
    app.state.model, app.state.cfg = model, cfg

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    app.add_exception_handler(Rejected, lambda request, e: error(e.status, e.message, e.headers))
    app.add_exception_handler(HTTPException, lambda request, e: error(e.status_code, str(e.detail), e.headers))
    app.add_exception_handler(RequestValidationError, lambda request, e: error(
        422, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())))
    app.add_exception_handler(Exception, lambda request, e: error(500, f"internal error ({type(e).__name__}): {e}"
                                                                   .splitlines()[0][:200]))

    async def authorised(request: Request) -> None:
        if cfg.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {cfg.token}".encode()):
            raise Rejected(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": "Bearer"})

    upload = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/predict", dependencies=[Depends(authorised)], openapi_extra=upload,
              summary="top-k classes of an image (multipart field `file`, or the raw body)")
    async def predict(request: Request, topk: int | None = None) -> dict:
        k = cfg.topk if topk is None else topk
        if k < 1:
            raise Rejected(422, "topk must be at least 1")
        probs, batch = await predictor.submit(await _arriving(predictor, request, model.info["resize"]))
        return {"top": model.net.top(probs[None], k)[0], "protocol": model.protocol, "model": model.identity,
                "batch": batch}

    @app.post("/features", dependencies=[Depends(authorised)], openapi_extra=upload,
              summary="the image's activations in the last hidden layer (fc7; LeNet-5: f6)")
    async def features(request: Request) -> dict:
        vector, batch = await extractor.submit(await _arriving(extractor, request, model.info["resize"]))
        return {"layer": model.layer, "features": vector.tolist(), "model": model.identity, "batch": batch}

    @app.post("/explain", dependencies=[Depends(authorised)], openapi_extra=upload,
              summary="where the top class's evidence lies (Grad-CAM at the last stage) and each stage's most "
                      "active maps, as PNG data URLs; ?image=NAME returns that picture as a PNG")
    async def explain_image(request: Request, image: str | None = None):
        import base64

        names = [f"gradcam_{model.stages[-1]}", *(f"maps_{s}" for s in model.stages)]
        if image is not None and image not in names:
            raise Rejected(422, f"image must be one of {', '.join(names)}")
        # an explanation takes the inference thread for several passes and a backward one:
        # at most EXPLAIN_PENDING wait, so that /predict's batches are never held up by a crowd
        if explaining["n"] >= EXPLAIN_PENDING:
            raise Rejected(503, f"{EXPLAIN_PENDING} explanations are already under way; try again shortly",
                           {"Retry-After": "1"})
        explaining["n"] += 1
        try:
            picture = await _image(request, model.info["resize"])
            result = await asyncio.get_running_loop().run_in_executor(executor, model.explanation, picture)
        except AlexNetError as e:  # Captum not installed
            raise Rejected(501, str(e)) from None
        finally:
            explaining["n"] -= 1
        pngs = result.pop("images")
        if image is not None:
            return Response(pngs[image], media_type="image/png")
        url = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in pngs.items()}
        heat = next(k for k in pngs if k.startswith("gradcam_"))
        return {**result, "gradcam": {"stage": heat.removeprefix("gradcam_"), "png": url[heat]},
                "stages": [{**st, "png": url[f"maps_{st['name']}"]} for st in result["stages"]],
                "model": model.identity}

    @app.get("/model", dependencies=[Depends(authorised)], summary="the network's metadata")
    async def info() -> dict:
        return model.info

    @app.get("/health", summary="liveness: 200 while the server takes requests")
    async def health() -> dict:
        return {"status": "ok", "queued": predictor.queue.qsize() + extractor.queue.qsize() + explaining["n"]}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return BodyGuard(app, int(cfg.max_upload_mb * 2**20), cfg.read_timeout)


async def _arriving(batcher: Batcher, request, size: int) -> torch.Tensor:
    """The request's image, counted as arriving for ``batcher`` while it is read and decoded."""
    with batcher.arrival():
        return await _image(request, size)


async def _image(request, size: int) -> torch.Tensor:
    """The uploaded image (multipart field ``file``, or the whole body), decoded in a thread."""
    from starlette.concurrency import run_in_threadpool

    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise Rejected(400, "the multipart form has no file field named 'file'")
        data = await upload.read()
    else:
        data = await request.body()
    try:
        return await run_in_threadpool(decode_image, data, size)
    except UnreadableImage as e:
        raise Rejected(400, f"not a readable image: {e}") from None


class BodyGuard:
    """ASGI middleware: refuses a body over ``limit`` bytes (413: at once from Content-Length,
    else when that much has arrived) or not sent within ``timeout`` seconds (408)."""

    def __init__(self, app, limit: int, timeout: float) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else it has sent nothing yet: say no now
                await self._discard(receive, int(length))
            return await _send_error(send, 413, self._too_large())
        received, done = 0, False

        async def guarded() -> dict:
            nonlocal received, done
            if done:  # after the body only a disconnect can come: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                raise Rejected(408, f"the request body was not sent within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > self.limit:
                    if not done:
                        await self._discard(receive, None)
                    raise Rejected(413, self._too_large())
            return message

        await self.app(scope, guarded, send)

    async def _discard(self, receive, length: int | None) -> None:
        await _discard_body(receive, length, max_bytes=DISCARD_LIMITS * self.limit, gap=self.timeout,
                            total=DISCARD_LIMITS * self.timeout)

    def _too_large(self) -> str:
        return f"the upload is larger than the limit of {self.limit / 2**20:g} MiB (--max-upload-mb)"

    @property
    def state(self):  # the wrapped application's state (tests, the command line)
        return self.app.state


# Reading the rest of a refused upload before answering, as reverse proxies do (nginx's
# lingering close): a client that writes its whole body before it reads (Python's urllib, many
# others) would otherwise see the connection reset instead of the 413. Bounded, so that a
# refused client holds the server no longer than an accepted one may: at most this many times
# the upload limit, and as many read timeouts in all (one between two pieces); past a bound the
# connection closes as before. A client that asked to be told first (Expect: 100-continue) has
# sent nothing and is answered at once.
DISCARD_LIMITS = 8


async def _discard_body(receive, length: int | None, max_bytes: int, gap: float, total: float) -> None:
    """Read and drop the rest of a request body (``length``: its declared size, if any)."""
    if length is not None and length > max_bytes:
        return  # too much to read: close at once
    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + total, 0
    while dropped <= max_bytes:
        wait = min(gap, deadline - loop.time())
        if wait <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), wait)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return  # the client went away
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_error(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------
# The command.


def is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port(host: str, port: int) -> None:
    """Refuse, in one line and before loading anything, an address that cannot be listened on."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise AlexNetError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(cfg: ServeConfig) -> None:
    """Run the service until SIGTERM or Ctrl-C (in-flight requests finish first)."""
    try:
        import uvicorn
    except ImportError:
        raise AlexNetError("alexnet serve needs FastAPI and uvicorn: pip install 'alexnet[serve]'") from None
    cfg = dataclasses.replace(cfg, token=cfg.token or os.environ.get(TOKEN_ENV) or None)  # the caller's stays
    if not is_local(cfg.host) and cfg.token is None:
        print(f"alexnet: warning: serving on {cfg.host} without a token: anyone who can reach it can use it "
              f"(--token or {TOKEN_ENV})", file=sys.stderr)
    _check_port(cfg.host, cfg.port)
    start = time.perf_counter()
    app = create_app(cfg)
    model = app.state.model
    print(f"alexnet serve: {model.info['variant']} ({model.path}, sha256 {model.sha256[:16]}) on "
          f"{model.info['device']}, loaded in {time.perf_counter() - start:.1f}s; batches of up to {cfg.max_batch} "
          f"within {cfg.max_wait_ms:g} ms; http://{cfg.host}:{cfg.port}/", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=30,
                limit_concurrency=max(64, 4 * cfg.max_queue), timeout_keep_alive=5)
