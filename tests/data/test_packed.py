import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet import AlexNetError
from alexnet.data import packed
from alexnet.data.folder import load_image
from alexnet.data.loader import Request, build
from conftest import write_tree


@pytest.fixture
def tree(tmp_path):
    root = write_tree(tmp_path / "src", per_class=6, size=48)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_pack_raw_round_trip_counts_and_skips(tree, tmp_path):
    meta = packed.prepare(tree, tmp_path / "dst", size=32, encoding="raw", workers=1, shard_size=5, progress=False)
    train = meta["splits"]["train"]
    assert train["count"] == 18 and len(train["shards"]) == 4  # 19 files, one unreadable, 5 per shard
    assert [os.path.basename(p) for p in train["skipped"]] == ["broken.jpg (not an image Pillow can read)"]
    assert train["bytes"] == 18 * 3 * 32 * 32
    split = packed.PackedSplit(tmp_path / "dst", "train")
    assert split.classes == ["cat", "dog", "fish"] and len(split) == 18
    images, labels = split.batch(list(range(18)))
    assert images.shape == (18, 3, 32, 32) and images.dtype == torch.uint8
    # every packed image is exactly the preprocessed source image with its label
    from alexnet.data.folder import list_images
    sources = {(load_image(p, 32).numpy().tobytes(), l) for p, l in list_images(tree / "train", split.classes)
               if not p.endswith("broken.jpg")}
    assert {(images[i].numpy().tobytes(), int(labels[i])) for i in range(18)} == sources


def test_pack_jpeg_is_close_to_the_source(tree, tmp_path):
    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", quality=95, workers=2, shard_size=4,
                   progress=False)
    split = packed.PackedSplit(tmp_path / "dst", "val")
    images, labels = split.batch([0, 1, 2])
    assert images.shape == (3, 3, 32, 32)
    assert sorted(torch.bincount(split.labels).tolist()) == [6, 6, 6]
    from alexnet.data.folder import list_images
    originals = [load_image(p, 32).float() for p, _ in list_images(tree / "val", split.classes)]
    for img in images.float():
        assert min((img - o).abs().mean() for o in originals) < 6  # JPEG q95: a few grey levels off


def test_interrupted_pack_finishes_on_rerun(tree, tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    calls = []
    real = packed._write_shard

    def dies_after_two(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.name)
        return real(job)

    monkeypatch.setattr(packed, "_write_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        packed.prepare(tree, dst, size=32, encoding="raw", workers=1, shard_size=3, progress=False)
    assert not (dst / "meta.json").exists() and not packed.is_packed(dst)
    assert len(list(dst.glob("*.npz"))) == 2 and not list(dst.glob(".*.tmp"))
    done_before = sorted(calls)
    calls.clear()
    monkeypatch.setattr(packed, "_write_shard", lambda job: calls.append(job.name) or real(job))
    meta = packed.prepare(tree, dst, size=32, encoding="raw", workers=1, shard_size=3, progress=False)
    assert not set(calls) & set(done_before)  # finished shards were not redone
    assert meta["splits"]["train"]["count"] == 18 and packed.is_packed(dst)
    fresh = packed.prepare(tree, tmp_path / "fresh", size=32, encoding="raw", workers=1, shard_size=3,
                           progress=False)
    assert fresh["splits"] == meta["splits"]


def test_killed_pack_leaves_no_corrupt_file(tree, tmp_path):
    """SIGKILL in the middle of packing, then run again: the result is complete and readable."""
    dst = tmp_path / "dst"
    code = ("import sys, time; from alexnet.data import packed\n"
            "real = packed._write_shard\n"
            "def slow(job):\n    r = real(job); time.sleep(0.5); return r\n"
            "packed._write_shard = slow\n"
            f"packed.prepare({str(tree)!r}, {str(dst)!r}, size=32, encoding='jpeg', workers=1, shard_size=2,"
            " progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while len(list(dst.glob("*.npz"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not packed.is_packed(dst)
    meta = packed.prepare(tree, dst, size=32, encoding="jpeg", workers=1, shard_size=2, progress=False)
    split = packed.PackedSplit(dst, "train")
    assert len(split) == meta["splits"]["train"]["count"] == 18
    assert split.batch(list(range(18)))[0].shape == (18, 3, 32, 32)


def test_pack_into_a_directory_of_another_packing_is_refused(tree, tmp_path):
    packed.prepare(tree, tmp_path / "dst", size=32, encoding="raw", workers=1, progress=False)
    with pytest.raises(AlexNetError, match="other files or settings"):
        packed.prepare(tree, tmp_path / "dst", size=48, encoding="raw", workers=1, progress=False)


def test_packed_loader_is_deterministic_and_sharded(tree, tmp_path):
    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    cpu = torch.device("cpu")

    def batches_of(epoch, rank=0, world=1, workers=0, batch=4):
        req = Request(batch_size=batch, workers=workers, seed=5, rank=rank, world=world)
        b = build(str(tmp_path / "dst"), 32, cpu, req).train
        b.set_epoch(epoch)
        return [(x.images, x.labels) for x in b]

    def keys(batch):  # each image's pixels and label: what identifies it
        images, labels = batch
        return {(bytes(img.numpy()), int(y)) for img, y in zip(images, labels)}

    a = batches_of(0)
    b = batches_of(0, workers=2)
    assert len(a) == len(b) == 4 and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert [keys(x) for x in batches_of(1)] != [keys(x) for x in a]  # epochs reshuffle
    r0, r1 = batches_of(0, 0, 2), batches_of(0, 1, 2)
    assert len(r0) == len(r1) == 4
    for step in range(4):  # at every step the two ranks' halves make the single process's batch
        assert keys(r0[step]) | keys(r1[step]) == keys(a[step]) and not keys(r0[step]) & keys(r1[step])


@pytest.mark.parametrize("cache", ["none", "auto"])
def test_train_from_packed_data(tree, tmp_path, cache):
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.training.train import fit

    packed.prepare(tree, tmp_path / "dst", size=76, encoding="jpeg", workers=1, progress=False)
    cfg = apply_overrides(TrainConfig(), dict(data=str(tmp_path / "dst"), resize=76, crop=67, epochs=1,
                                              batch_size=6, workers=0, out=str(tmp_path / "run"), init="kaiming",
                                              cache=cache))
    result = fit(cfg)
    assert result["history"][0]["train_images"] == 18 and result["final"]["images"] == 18
    with pytest.raises(AlexNetError, match="holds 76-px images"):
        fit(apply_overrides(cfg, {"resize": 96, "out": str(tmp_path / "run2")}))


def test_device_decode_path_delivers_the_same_batches(tree, tmp_path):
    """--gpu-decode's path (workers send encoded JPEGs, the device decodes whole batches), run
    here with the CPU as the decoding device, against Pillow's decoding of the same stored
    bytes: same images (to a grey level), labels and order."""
    import io

    import numpy as np
    from PIL import Image

    from alexnet.data.loader import PackedBatches

    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    split = packed.PackedSplit(tmp_path / "dst", "train", decode_later=True)
    b = PackedBatches(split, 2, batch_size=4, shuffle=True, drop_last=True, device=torch.device("cpu"),
                      seed=3)
    b.set_epoch(1)
    chunks = b._chunks()
    batches = list(b)
    b.close()
    assert len(batches) == len(chunks) == 4
    for batch, idx in zip(batches, chunks):
        pil = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(bytes(split._bytes(i)))).convert("RGB")))
                           .permute(2, 0, 1) for i in idx.tolist()])
        assert batch.images.shape == (4, 3, 32, 32)
        assert (batch.images.int() - pil.int()).abs().max() <= 2  # decoders may round differently
        assert torch.equal(batch.labels, split.labels[idx])


def test_a_batch_of_encoded_images_crosses_from_a_worker_as_one_buffer(tree, tmp_path):
    """decode_later: a loader process sends the batch as (bytes, offsets), two tensors whatever
    the batch size, whose views are each image's stored bytes exactly."""
    from alexnet.data.loader import PackedBatches

    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    split = packed.PackedSplit(tmp_path / "dst", "train", decode_later=True)
    b = PackedBatches(split, 1, batch_size=4, shuffle=False, drop_last=True, device=torch.device("cpu"))
    (data, offsets), labels = next(iter(b.loader))
    b.close()
    assert data.dtype == torch.uint8 and data.dim() == 1 and offsets.tolist()[0] == 0 and len(offsets) == 5
    idx = b._chunks()[0].tolist()
    views = packed.split_encoded(data, offsets)
    assert [bytes(v.numpy()) for v in views] == [bytes(split._bytes(i)) for i in idx]
    assert offsets[-1] == data.numel() and torch.equal(labels, split.labels[idx])


class _InWorker(torch.utils.data.Dataset):
    """A split's batches made in a loader process, with whether they were made in shared memory."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return 1

    def __getitem__(self, i):
        images, labels = self.split.batch(list(range(4)))
        return images, images.is_shared()


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_a_worker_decodes_a_batch_into_shared_memory_as_the_main_process_would(tree, tmp_path, encoding):
    """Made in a loader process, a batch is written straight into shared memory (sending it then
    copies nothing) and holds the pixels the main process decodes; JPEG batches keep the decoder's
    pixel order, channels-last (stacked without a transpose)."""
    packed.prepare(tree, tmp_path / "dst", size=32, encoding=encoding, workers=1, progress=False)
    split = packed.PackedSplit(tmp_path / "dst", "train")
    here, _ = split.batch(list(range(4)))
    assert not here.is_shared() and here.shape == (4, 3, 32, 32)
    loader = torch.utils.data.DataLoader(_InWorker(split), batch_size=None, num_workers=1)
    (there, shared), = list(loader)
    assert shared and torch.equal(there, here)
    if encoding == "jpeg":  # made so, and received so: sending it copied nothing into another layout
        assert here.is_contiguous(memory_format=torch.channels_last)
        assert there.is_contiguous(memory_format=torch.channels_last)


def test_device_decoding_runs_in_its_own_thread_one_batch_ahead_of_the_step(tree, tmp_path, monkeypatch):
    """While the consumer holds batch k (its step), batch k + 1 is already being decoded, in the
    decoder's thread; a decoding error reaches the consumer."""
    import threading

    import torchvision.io

    from alexnet.data.loader import PackedBatches

    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    split = packed.PackedSplit(tmp_path / "dst", "train", decode_later=True)
    events, real = [], torchvision.io.decode_jpeg

    def decode(views, **kw):
        events.append(("decode", threading.current_thread().name))
        return real(views, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode)
    b = PackedBatches(split, 0, batch_size=4, shuffle=False, drop_last=True, device=torch.device("cpu"))
    submit = b.decoder.pool.submit
    b.decoder.pool.submit = lambda *a: (events.append(("submit", None)), submit(*a))[1]
    for _ in b:
        events.append(("step", threading.current_thread().name))
    decoded = [name for kind, name in events if kind == "decode"]
    assert len(decoded) == 4 and all(name.startswith("alexnet-decode") for name in decoded)
    # the second batch's decoding was handed to the thread before the first step ran
    assert [kind for kind, _ in events if kind != "decode"][:3] == ["submit", "submit", "step"]

    def broken(views, **kw):
        raise RuntimeError("corrupt JPEG data")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", broken)
    with pytest.raises(RuntimeError, match="corrupt JPEG data"):
        list(b)
    b.close()


def test_gpu_decode_is_refused_where_it_cannot_work(tree, tmp_path):
    packed.prepare(tree, tmp_path / "raw", size=32, encoding="raw", workers=1, progress=False)
    packed.prepare(tree, tmp_path / "jpeg", size=32, encoding="jpeg", workers=1, progress=False)
    for data in (str(tmp_path / "raw"), str(tree), "fashion-mnist"):
        with pytest.raises(AlexNetError, match="reads packed JPEG datasets"):
            build(data, 32, torch.device("cpu"), Request(batch_size=4, workers=0, gpu_decode=True))
    with pytest.raises(AlexNetError, match="needs a CUDA device"):
        build(str(tmp_path / "jpeg"), 32, torch.device("cpu"), Request(batch_size=4, workers=0, gpu_decode=True))


def test_a_damaged_shard_is_named_in_one_line_and_prepare_repairs_it(tree, tmp_path, capsys):
    """Damage after prepare: a truncated shard is refused when the split opens; bytes overwritten
    in place are caught by the image's checksum when read (in a loader worker too, still one
    line); prepare --verify finds both and, given the source, rewrites exactly the damaged shards."""
    from alexnet.cli import main

    dst = tmp_path / "dst"
    packed.prepare(tree, dst, size=32, encoding="jpeg", workers=1, shard_size=6, progress=False)
    assert main(["prepare", "--verify", str(dst)]) == 0
    assert "7 of 7 shard(s) intact" in capsys.readouterr().out  # 19 + 18 files in shards of 6
    shards = {n: (dst / f"{n}.bin").read_bytes() for n in ("train-00001", "val-00000")}
    split = packed.PackedSplit(dst, "train")
    (dst / "train-00001.bin").write_bytes(shards["train-00001"][:-10])  # truncated after it was opened
    with pytest.raises(AlexNetError, match="train-00001.bin is shorter than its index"):
        split.batch([i for i in range(len(split)) if split._shard[i] == 1])
    with pytest.raises(AlexNetError, match=r"train-00001.bin is damaged: [\d,]+ bytes where its index says"):
        packed.PackedSplit(dst, "train")
    bad = bytearray(shards["val-00000"])
    bad[len(bad) // 2: len(bad) // 2 + 64] = bytes(64)  # overwritten in place: the same size
    (dst / "val-00000.bin").write_bytes(bytes(bad))
    val = packed.PackedSplit(dst, "val")  # the size check passes
    with pytest.raises(AlexNetError, match=r"val-00000.bin is damaged: image \d+'s bytes do not match"):
        val.batch(list(range(len(val))))
    assert main(["prepare", "--verify", str(dst)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "train-00001.bin is damaged" in err[0] and "val-00000.bin is damaged" in err[1]
    splits = build(str(dst), 32, torch.device("cpu"), Request(splits=("val",), batch_size=9, workers=1))
    with pytest.raises(AlexNetError) as caught:
        next(iter(splits.val))  # read in a worker process
    splits.close()
    assert "val-00000.bin is damaged" in caught.value.args[0]
    from alexnet.errors import one_line
    assert one_line(caught.value).startswith("packed shard ") and "\n" not in one_line(caught.value)
    before = {n: (dst / f"{n}.bin").stat().st_mtime_ns for n in ("train-00000", "train-00002")}
    assert main(["prepare", str(tree), str(dst), "--size", "32", "--shard-size", "6", "--verify",
                 "--workers", "1"]) == 0
    assert main(["prepare", "--verify", str(dst)]) == 0
    assert {n: (dst / f"{n}.bin").read_bytes() for n in shards} == shards  # rewritten as they were
    assert {n: (dst / f"{n}.bin").stat().st_mtime_ns for n in before} == before  # the intact ones untouched


def test_close_stops_the_loader_processes(tree, tmp_path):
    """A closed split leaves no worker behind, so the next loader forks from a clean parent."""
    packed.prepare(tree, tmp_path / "dst", size=32, workers=1, progress=False)
    splits = build(str(tmp_path / "dst"), 32, torch.device("cpu"), Request(batch_size=4, workers=2))
    next(iter(splits.train))
    workers = list(splits.train.loader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    splits.train.close()
    splits.val.close()  # never started: closing it is harmless
    assert not any(w.is_alive() for w in workers)
    assert [b.labels.numel() for b in splits.train] == [4] * (len(splits.train))  # usable again after close
    splits.train.close()


def test_names_in_any_byte_encoding_pack_and_print(tree, tmp_path, capsys):
    """File and class-folder names that are not UTF-8 (Latin-1 bytes from another system) are
    packed like any other; an unreadable one is named with its odd bytes as \\xNN."""
    train = os.fsencode(tree / "train")
    os.rename(os.path.join(train, b"dog", b"0.png"), os.path.join(train, b"dog", b"caf\xe9-\xff.png"))
    for split in (b"train", b"val"):
        os.rename(os.path.join(os.fsencode(tree), split, b"fish"), os.path.join(os.fsencode(tree), split, b"poisson-\xe9"))
    with open(os.path.join(train, b"dog", b"\xe9t\xe9-broken.jpg"), "wb") as f:
        f.write(b"not an image")
    from alexnet.cli import main

    assert main(["prepare", str(tree), str(tmp_path / "dst"), "--size", "32", "--encoding", "raw",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "\\xe9t\\xe9-broken.jpg" in out  # named, printable
    meta = packed.read_meta(tmp_path / "dst")
    assert meta["classes"] == ["cat", "dog", "poisson-\\xe9"]
    assert meta["splits"]["train"]["count"] == 18  # every readable image, the renamed ones too
    skipped = meta["splits"]["train"]["skipped"]
    assert sorted(os.path.basename(p).split(" (")[0] for p in skipped) == ["\\xe9t\\xe9-broken.jpg", "broken.jpg"]
