"""The file policy (data/folder.py, docs/data.md "Odd and hostile files"): one generated tree of every
odd and hostile kind of file, through every command that reads images."""

import json
import os
from pathlib import Path

import pytest
import torch

from alexnet.cli import main
from alexnet.data.folder import UnreadableImage, image_files, load_image
from alexnet.infer import load_features
from conftest import ODD_BYTES_NAME, ODD_CONVERTED, ODD_SKIPPED, write_odd_files, write_odd_tree

READABLE_PER_SPLIT = 8 + len(ODD_CONVERTED) + 2  # the photographs, the converted, exif-rotated, the byte name
LENET = ["--variant", "lenet5", "--resize", "36", "--crop", "32", "--epochs", "1", "--batch-size", "8",
         "--workers", "0", "--init", "torchvision", "--log-every", "1000"]


def test_each_odd_file_is_converted_or_skipped_with_its_reason(tmp_path):
    write_odd_files(tmp_path)
    for name, rgb in ODD_CONVERTED.items():
        x = load_image(str(tmp_path / name), 32)
        assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
        assert (x[:, 16, 16].int() - torch.tensor(rgb)).abs().max() <= 8, name
    upright = load_image(str(tmp_path / "exif-rotated.jpg"), 32).float().mean(0)
    assert upright[:12].mean() < 30 and upright[-12:].mean() > 210  # stored on its side, seen upright
    assert upright[:, :12].mean() == pytest.approx(upright[:, -12:].mean(), abs=10)
    odd_name = os.fsdecode(os.fsencode(tmp_path) + b"/" + ODD_BYTES_NAME)
    assert load_image(odd_name, 32).float().mean() == pytest.approx(128, abs=2)
    for name, why in ODD_SKIPPED.items():
        with pytest.raises(UnreadableImage, match=why):
            load_image(str(tmp_path / name), 32)
    with pytest.raises(UnreadableImage, match="a directory"):
        load_image(str(tmp_path / "folder.jpg"), 32)
    listed = sorted(os.path.basename(p) for p in image_files(tmp_path))
    assert len(listed) == len(set(listed))  # the link back up is followed once, not forever
    assert set(listed) == {*ODD_CONVERTED, *ODD_SKIPPED, "exif-rotated.jpg", os.fsdecode(ODD_BYTES_NAME)}


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    return write_odd_tree(tmp_path_factory.mktemp("odd") / "data")


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return status, out, err


def test_prepare_train_evaluate_finetune_skip_and_count(odd, tmp_path, capsys):
    status, out, _ = _run(capsys, "prepare", odd, tmp_path / "packed", "--size", "36", "--workers", "1", "--json")
    assert status == 0
    meta = json.loads(out)
    for split in ("train", "val"):
        info = meta["splits"][split]
        assert info["count"] == READABLE_PER_SPLIT
        reasons = {os.path.basename(s).split(" (")[0]: s.split(" (", 1)[1] for s in info["skipped"]}
        assert set(reasons) == set(ODD_SKIPPED)
        assert all(why in reasons[name] for name, why in ODD_SKIPPED.items())

    run = tmp_path / "run"
    status, _, _ = _run(capsys, "train", "--data", odd, *LENET, "--out", run)
    assert status == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped"] == len(ODD_SKIPPED) and record["val_skipped"] == len(ODD_SKIPPED)
    assert record["train_images"] == READABLE_PER_SPLIT  # 24 files: three full batches, less the skipped
    assert len(record["skipped_files"]) == len(ODD_SKIPPED)

    status, _, _ = _run(capsys, "train", "--data", tmp_path / "packed", *LENET, "--out", tmp_path / "run-packed")
    assert status == 0

    status, out, _ = _run(capsys, "evaluate", run, "--data", odd, "--split", "val", "--workers", "0", "--json")
    result = json.loads(out)
    assert status == 0 and result["images"] == READABLE_PER_SPLIT and result["skipped"] == len(ODD_SKIPPED)

    status, _, _ = _run(capsys, "finetune", run, "--data", odd, *LENET[LENET.index("--epochs"):],
                        "--out", tmp_path / "tuned")
    assert status == 0 and (tmp_path / "tuned" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def lenet_run(odd, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("lenet") / "run"
    assert main(["train", "--data", str(odd), *LENET, "--out", str(run)]) == 0
    return run


def test_predict_features_neighbors_name_what_they_skip(odd, lenet_run, tmp_path, capsys):
    val = odd / "val" / "dog"
    status, out, err = _run(capsys, "predict", lenet_run, odd / "val", "--json", "--workers", "0")
    assert status == 0 and len(json.loads(out)) == READABLE_PER_SPLIT  # in a folder: skipped and counted
    for name, why in ODD_SKIPPED.items():
        assert f"skipped {val / name} (" in err and why in err
    assert f"skipped {len(ODD_SKIPPED)} unreadable image(s) in the folders given" in err
    paths = [r["path"] for r in json.loads(out)]
    assert str(val / "caf\\xe9-latin1.png") in paths  # a name that is not UTF-8, its odd byte escaped

    for named in ("empty.jpg", "dangling.jpg", "pipe.jpg", "bomb.png", "folder.jpg"):  # named: exit 1
        status, out, err = _run(capsys, "predict", lenet_run, val / named, val / "cmyk.jpg", "--json",
                                "--workers", "0")
        assert status == 1 and [r["path"] for r in json.loads(out)] == [str(val / "cmyk.jpg")], named
        assert f"could not read 1 of the paths named: {val / named}" in err
    status, out, err = _run(capsys, "predict", lenet_run, val / "text.png", "--workers", "0")
    assert status == 1 and out == ""

    features = tmp_path / "f.npz"
    features.write_bytes(b"an earlier file: kept when nothing could be read")
    status, _, err = _run(capsys, "features", lenet_run, val / "empty.jpg", "--out", features, "--workers", "0")
    assert status == 2 and "none of the 1 input(s) held a readable image" in err
    assert features.read_bytes().startswith(b"an earlier file")
    status, _, _ = _run(capsys, "features", lenet_run, odd / "val", "--out", features, "--workers", "0")
    feats, paths, layer = load_features(features)
    assert status == 0 and feats.shape == (READABLE_PER_SPLIT, 84) and layer == "f6"  # LeNet-5's last hidden layer
    assert os.fsdecode(os.fsencode(val) + b"/" + ODD_BYTES_NAME) in paths  # the file's own bytes, reopenable

    (odd / "moved.png").write_bytes((val / "palette.png").read_bytes())
    status, _, _ = _run(capsys, "features", lenet_run, odd / "moved.png", val / "cmyk.jpg", "--out",
                        tmp_path / "g.npz", "--workers", "0")
    (odd / "moved.png").unlink()  # a gallery file gone since: a grey tile, not a crash
    status, out, err = _run(capsys, "neighbors", lenet_run, "--query", val / "UPPER.JPG", val / "empty.jpg",
                            "--gallery", tmp_path / "g.npz", "--k", "2", "--out", tmp_path / "grid.png", "--json")
    assert status == 1 and "could not read 1 of the paths named" in err
    assert [r["query"] for r in json.loads(out)] == [str(val / "UPPER.JPG")]
    assert (tmp_path / "grid.png").is_file()
    status, out, _ = _run(capsys, "neighbors", lenet_run, "--query", val / "cmyk.jpg", "--gallery", odd / "train",
                          "--k", "3", "--out", tmp_path / "grid2.png", "--json")
    assert status == 0 and len(json.loads(out)[0]["neighbors"]) == 3
