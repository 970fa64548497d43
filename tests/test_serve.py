"""``alexnet serve``: the API, dynamic batching, hostile input, shutdown (the web page: test_serve_page.py)."""

import asyncio
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from alexnet.infer import extract_features, predict
from alexnet.serve import Batcher, Rejected, ServeConfig, create_app, is_local
from conftest import _png_with_size
from serve_load import expected_answers, post, run_load, sample_images, start_server, stop_server


def _client(serve_run, **kw):
    from fastapi.testclient import TestClient

    return TestClient(create_app(ServeConfig(weights=str(serve_run), **kw)))


def test_api_answers_as_the_library_does(serve_run, photo):
    with _client(serve_run) as client:
        assert client.get("/health").json()["status"] == "ok"
        info = client.get("/model").json()
        assert info["variant"] == "lenet5" and info["classes"] == ["cat", "dog", "fish"] and info["input_size"] == 32
        assert info["accuracy"]["protocol"] == "center" and len(info["sha256"]) == 64
        data = photo.read_bytes()
        multipart = client.post("/predict", files={"file": ("chelsea.jpg", data, "image/jpeg")}).json()
        raw = client.post("/predict?topk=2", content=data, headers={"content-type": "image/jpeg"}).json()
        expected = predict(serve_run, [str(photo)], workers=0, progress=False)[0]["top"]
        assert [t["index"] for t in multipart["top"]] == [t["index"] for t in expected][:3]  # 3 classes: topk 5 -> 3
        assert [t["prob"] for t in multipart["top"]] == pytest.approx([t["prob"] for t in expected], abs=1e-5)
        assert raw["top"] == multipart["top"][:2] and raw["protocol"] == "center"
        assert raw["model"] == {"variant": "lenet5", "weights": "model.safetensors", "sha256": info["sha256"][:16]}
        features = client.post("/features", files={"file": ("c.jpg", data)}).json()
        library = extract_features(serve_run, [str(photo)], workers=0, progress=False)
        assert features["layer"] == "f6" == library.layer
        assert features["features"] == pytest.approx(library.features[0].tolist(), abs=1e-4)
        schema = client.get("/openapi.json").json()
        assert {"/predict", "/features", "/model", "/health"} <= set(schema["paths"])
        assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert client.get("/").text.count("/static/app.js") == 1 and client.get("/static/app.js").status_code == 200


def _error(response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and text in body["error"] and "\n" not in body["error"]


def test_hostile_uploads_get_one_line_json_errors(serve_run, photo):
    data = photo.read_bytes()
    assert len(data) > 30_000
    with _client(serve_run, max_upload_mb=0.02) as client:  # 21 kB
        _error(client.post("/predict", content=data), 413, "larger than the limit")  # by its Content-Length
        _error(client.post("/predict", content=iter([data[:15000], data[15000:]])), 413, "larger than the limit")
        _error(client.post("/predict", content=b"just some text"), 400, "not a readable image")
        _error(client.post("/predict", content=b""), 400, "empty")
        _error(client.post("/predict", content=data[:2000]), 400, "not a readable image")  # truncated
        _error(client.post("/predict", content=_png_with_size(40_000, 40_000)), 400, "decompression bomb")
        _error(client.post("/predict", files={"image": ("x.jpg", data[:100])}), 400, "no file field named 'file'")
        _error(client.post("/predict?topk=0", content=data[:100]), 422, "topk")
        _error(client.post("/predict?topk=many", content=data[:100]), 422, "topk")
        _error(client.get("/nowhere"), 404, "Not Found")
        _error(client.get("/predict"), 405, "Method Not Allowed")
        assert client.get("/health").status_code == 200  # still serving


def test_a_token_guards_the_api(serve_run, photo):
    with _client(serve_run, token="s3cret") as client:
        _error(client.post("/predict", content=photo.read_bytes()), 401, "bearer token")
        _error(client.get("/model", headers={"Authorization": "Bearer wrong"}), 401, "bearer token")
        assert client.get("/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200  # public
    assert is_local("127.0.0.1") and is_local("::1") and is_local("localhost") and not is_local("0.0.0.0")


def test_a_full_queue_is_refused_with_503_and_the_rest_are_answered():
    """The batcher holds at most max_queue images; beyond that, 503 at once (no unbounded memory)."""
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()

    def run(items):
        release.wait(10)
        return [x * 10 for x in items]

    async def scenario():
        batcher = Batcher(run, ThreadPoolExecutor(1), max_batch=2, max_wait=0.0, max_queue=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # taken off the queue, its batch blocked in the executor
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Rejected) as refused:
            await batcher.submit(5)
        release.set()
        results = await asyncio.gather(first, *queued)
        await batcher.stop()
        return refused.value, results

    refused, results = asyncio.run(scenario())
    assert refused.status == 503 and refused.headers == {"Retry-After": "1"}
    assert [r for r, _ in results] == [10, 20, 30, 40]  # each its own answer
    assert [b for _, b in results] == [1, 2, 2, 1]  # 2 and 3 shared a batch, 4 came after


@pytest.fixture(scope="module")
def server(serve_run):
    proc, url = start_server(serve_run, "--max-batch", "16", "--max-wait-ms", "20", "--read-timeout", "1")
    yield url
    stop_server(proc)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(serve_run, server, tmp_path):
    images = sample_images(48)
    expected = expected_answers(str(serve_run), images, tmp_path)
    load = run_load(server, images, expected, concurrency=16, seconds=3)
    assert load["requests"] >= 48 and load["wrong"] == 0 and load["failed"] == 0
    assert load["mean_batch"] > 2  # gathered into shared forward passes


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_that_writes_its_whole_upload_first_still_reads_the_413(server, chunked):
    """Python's urllib sends all 64 MiB before it reads: the server reads and drops the rest of a
    refused body, so the client gets the 413 and its JSON, not a reset connection. Declared by
    Content-Length (refused before any of it is read) or sent in chunks (refused on arrival)."""
    body = bytes(64 * 2**20)
    data = iter([body[i:i + 2**20] for i in range(0, len(body), 2**20)]) if chunked else body
    request = urllib.request.Request(f"{server}/predict", data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert "larger than the limit of 10 MiB" in json.loads(refused.value.read())["error"]


def test_a_client_that_waits_for_100_continue_is_refused_before_it_sends(server):
    """Expect: 100-continue with a body over the limit: the 413 comes at once, not an invitation
    to send the body (which the server would then have to read and drop)."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 104857600\r\n\r\n")
        client.settimeout(10)
        reply = b""
        while chunk := client.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply


def test_a_slow_client_cannot_hold_the_server(server):
    """A client that stops sending its upload gets 408 after --read-timeout (1 s here), and
    others are served while it stalls."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"\xff" * 10)
        with urllib.request.urlopen(f"{server}/health", timeout=5) as r:  # answered meanwhile
            assert r.status == 200
        slow.settimeout(30)
        reply = b""
        while chunk := slow.recv(4096):  # until the server closes the connection
            reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 408") and json.loads(body) == {"error": "the request body was not sent within 1 s"}


def test_sigterm_finishes_requests_in_flight_then_exits(serve_run, photo):
    """Also: binding a non-local address without a token warns."""
    proc, url = start_server(serve_run, "--max-wait-ms", "400", host="0.0.0.0")
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post(f"{url}/predict", photo.read_bytes())))
               for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.15)  # the requests wait in the batcher
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert [status for status, _ in answers] == [200] * 6
    assert proc.wait(30) == -signal.SIGTERM  # uvicorn ends by re-raising the signal: the status says why
    err = proc.stderr.read()
    assert "without a token" in err and "Traceback" not in err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_a_failing_forward_pass_is_a_json_500_and_the_server_goes_on(serve_run, photo):
    from fastapi.testclient import TestClient

    from alexnet.serve import Model

    cfg = ServeConfig(weights=str(serve_run))
    model = Model(cfg)
    calls = []

    def flaky(images):  # the first batch fails (as an out-of-memory error would), the next ones work
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("out of memory\nwith a second line")
        return Model.probabilities(model, images)

    model.probabilities = flaky
    with TestClient(create_app(cfg, model), raise_server_exceptions=False) as client:
        _error(client.post("/predict", content=photo.read_bytes()), 500, "internal error (RuntimeError): out of memory")
        assert client.post("/predict", content=photo.read_bytes()).status_code == 200


def test_the_explanation_answers_as_json_and_as_png(serve_run, photo):
    """/explain: the top class, Grad-CAM at the last stage and each stage's maps as PNG data URLs,
    the same class as /predict's first; ?image=NAME gives one picture as a PNG."""
    import base64

    data = photo.read_bytes()
    with _client(serve_run) as client:
        top = client.post("/predict", content=data).json()["top"][0]
        body = client.post("/explain", files={"file": ("chelsea.jpg", data, "image/jpeg")}).json()
        png = client.post("/explain?image=gradcam_conv2", content=data)
        bad = client.post("/explain?image=nothing", content=data)
    assert body["target"]["index"] == top["index"] and body["top"][0]["prob"] == pytest.approx(top["prob"], abs=1e-4)
    assert body["gradcam"]["stage"] == "conv2" and [s["name"] for s in body["stages"]] == ["conv1", "conv2"]
    for url in [body["gradcam"]["png"], *(s["png"] for s in body["stages"])]:
        assert base64.b64decode(url.removeprefix("data:image/png;base64,")).startswith(b"\x89PNG")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    _error(bad, 422, "image must be one of")


def test_explanations_beyond_the_few_allowed_are_refused_not_queued(serve_run, photo, monkeypatch):
    from alexnet import serve

    monkeypatch.setattr(serve, "EXPLAIN_PENDING", 0)  # as if two were under way
    with _client(serve_run) as client:
        response = client.post("/explain", content=photo.read_bytes())
        assert client.post("/predict", content=photo.read_bytes()).status_code == 200  # classes still answered
    _error(response, 503, "explanations are already under way")
    assert response.headers["retry-after"] == "1"
