"""Published weights by name (create_model(..., weights="IMAGENET1K_V1"), alexnet predict
IMAGENET1K_V1): from the torch hub cache, else downloaded from a local HTTP server standing in
for download.pytorch.org, the hash always checked. Nothing here reaches the internet."""

import hashlib
import http.server
import io
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision

from alexnet import AlexNetError, create_model, load_model
from alexnet.cli import main
from alexnet.models import pretrained


@pytest.fixture(scope="module")
def published_file():
    """torchvision's alexnet with its own random weights, saved as torchvision publishes them."""
    torch.manual_seed(0)
    state = torchvision.models.alexnet().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return state, data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(published_file, tmp_path, monkeypatch):
    """IMAGENET1K_V1 pointing at a file of known hash, served by a local server; an empty cache."""
    state, data, digest = published_file
    served = {"body": data, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            served["requests"] += 1
            if self.path != f"/models/{entry.file}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served["body"])))
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = replace(pretrained.PUBLISHED["IMAGENET1K_V1"], file=f"alexnet-owt-{digest[:8]}.pth",
                    base_url=f"http://127.0.0.1:{server.server_address[1]}/models/")
    monkeypatch.setitem(pretrained.PUBLISHED, "IMAGENET1K_V1", entry)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pretrained.MIRROR_ENV, raising=False)
    yield state, served, entry
    server.shutdown()
    server.server_close()


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_first_use_downloads_into_the_hub_cache_and_later_ones_read_it(fake):
    state, served, entry = fake
    model = create_model("torchvision", weights="IMAGENET1K_V1")
    assert _same(model, state) and served["requests"] == 1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.file  # where torchvision would keep it too
    assert cached.is_file()
    for name in ("DEFAULT", torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet_Weights.IMAGENET1K_V1"):
        assert _same(create_model("torchvision", weights=name), state)
    assert served["requests"] == 1  # the cache served every later call


def test_a_file_already_in_the_hub_cache_needs_no_network(fake, published_file, monkeypatch):
    state, served, entry = fake
    cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(published_file[1])
    monkeypatch.setenv(pretrained.MIRROR_ENV, "http://127.0.0.1:9/nowhere/")  # a closed port
    assert _same(create_model("torchvision", weights="IMAGENET1K_V1"), state) and served["requests"] == 0


def test_a_download_that_fails_its_hash_is_refused_and_not_kept(fake):
    state, served, entry = fake
    served["body"] = served["body"][:-1] + bytes([served["body"][-1] ^ 1])  # one bit changed on the way
    with pytest.raises(AlexNetError, match=r"has SHA-256 [0-9a-f]{16}\.\.\., not the published [0-9a-f]{8}\.\.\.: refused"):
        create_model("torchvision", weights="IMAGENET1K_V1")
    assert list((Path(torch.hub.get_dir()) / "checkpoints").iterdir()) == []  # no file, no leftover part


def test_a_damaged_file_in_the_cache_is_named(fake, published_file):
    _, _, entry = fake
    cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(published_file[1][:1000])
    with pytest.raises(AlexNetError, match=r"\(in the cache\) has SHA-256 .* delete it to download it again"):
        create_model("torchvision", weights="IMAGENET1K_V1")


def test_without_network_or_cache_the_error_says_where_to_put_the_file(fake, monkeypatch):
    monkeypatch.setenv(pretrained.MIRROR_ENV, "http://127.0.0.1:9/models/")
    with pytest.raises(AlexNetError) as e:
        create_model("torchvision", weights="IMAGENET1K_V1")
    message = str(e.value)
    assert "\n" not in message and "could not download IMAGENET1K_V1 from http://127.0.0.1:9/models/" in message
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in message


def test_names_and_networks_that_do_not_fit_are_clear_errors(fake):
    with pytest.raises(AlexNetError, match="IMAGENET1K_V1 are weights for the 'torchvision' network, not 'paper'"):
        create_model("paper", weights="IMAGENET1K_V1")
    with pytest.raises(AlexNetError, match="has 1000 classes, not 10"):
        create_model("torchvision", num_classes=10, weights="IMAGENET1K_V1")
    with pytest.raises(AlexNetError, match="no published weights called 'IMAGENET1K_V9'"):
        create_model("torchvision", weights="IMAGENET1K_V9")


def test_commands_take_the_published_name_where_they_take_weights(fake, tmp_path, capsys):
    state, _, _ = fake
    from PIL import Image
    from skimage import data as skdata

    photo = tmp_path / "cat.png"
    Image.fromarray(skdata.chelsea()).save(photo)
    model, normalizer, meta = load_model("IMAGENET1K_V1")
    assert _same(model, state) and not model.training
    assert meta["num_classes"] == 1000 and meta["classes"][281] == "tabby cat" and meta["input_size"] == 224
    assert main(["predict", "IMAGENET1K_V1", str(photo)]) == 0
    out = capsys.readouterr().out
    assert "cat.png" in out and out.count("%") >= 5  # the top-5 with ImageNet's names
    assert main(["import-weights", "torchvision", "IMAGENET1K_V1", "--out", str(tmp_path / "w.safetensors")]) == 0
    imported, _, meta = load_model(tmp_path / "w.safetensors")
    assert _same(imported, state) and meta["published_accuracy"]["top1"] == pytest.approx(0.56522)


def test_a_path_is_never_a_name(fake, tmp_path):
    """A missing run directory whose last part happens to be a published name is a missing
    path, not a download (a Path's .name once read as the weights' name)."""
    _, served, _ = fake
    with pytest.raises(AlexNetError, match="not found"):
        load_model(tmp_path / "runs" / "DEFAULT")
    assert served["requests"] == 0
