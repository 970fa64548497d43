"""``--tensorboard``: event files that TensorBoard's own reader reads back, with every tag."""

import json

from alexnet.cli import main


def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_training_writes_readable_tensorboard_events(tmp_path, image_tree):
    run = tmp_path / "run"
    flags = ["--data", str(image_tree), "--variant", "lenet5", "--resize", "36", "--crop", "32", "--batch-size", "1",
             "--workers", "0", "--init", "torchvision", "--log-every", "1000", "--tensorboard"]
    assert main(["train", *flags, "--epochs", "2", "--out", str(run)]) == 0
    acc = _events(run / "tensorboard")
    tags = acc.Tags()
    assert {"train/loss", "train/top1", "val/top1", "val/top5", "val/loss", "lr", "images_per_sec",
            "train/epoch_loss", "train/epoch_top1"} <= set(tags["scalars"])
    steps = 12  # 12 training images in batches of 1
    assert [e.step for e in acc.Scalars("train/loss")] == [10, steps + 10]  # every 10 steps, on the global step
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = acc.Scalars("val/top1")
    assert [e.step for e in val] == [steps, 2 * steps]
    assert [e.value for e in val] == [pytest_approx(r["val_top1"]) for r in records]
    assert [e.value for e in acc.Scalars("lr")] == [pytest_approx(r["lr"]) for r in records]
    image = acc.Images("conv1")
    assert len(image) == 2 and image[0].width > 0 and image[0].height > 0  # the kernels, each epoch
    hparams = _events(run / "tensorboard").PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    start = hparams["_hparams_/session_start_info"]
    assert b"model.variant" in start and b"lenet5" in start  # the config, with the final metrics
    assert {"hparam/val_top1", "hparam/val_top5"} <= set(tags["scalars"])

    # finetune writes its own; a run resumed with more epochs continues the curves
    assert main(["finetune", str(run), *flags[:1], str(image_tree), "--epochs", "1", "--batch-size", "1",
                 "--workers", "0", "--tensorboard", "--out", str(tmp_path / "tuned"), "--log-every", "1000"]) == 0
    assert "val/top1" in _events(tmp_path / "tuned" / "tensorboard").Tags()["scalars"]
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert [e.step for e in _events(run / "tensorboard").Scalars("val/top1")] == [steps, 2 * steps, 3 * steps]


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-5)
