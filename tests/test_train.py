import json
import math

import pytest
import torch
import torch.nn.functional as F

from alexnet import AlexNetError, create_model
from alexnet.checkpoint import atomic_write, load_checkpoint, load_model, read_weights
from alexnet.config import OptimConfig, TrainConfig, apply_overrides
from alexnet.data import fashion_mnist
from alexnet.data.loader import resize_batch
from alexnet import train
from alexnet.train import LRSchedule, fit

TINY = dict(variant="paper", resize=76, crop=67, batch_size=32, limit_train=128, limit_val=64, init="kaiming",
            mean_samples=128, lr=0.01)


def tiny_config(out, **kw):
    return apply_overrides(TrainConfig(), {**TINY, "out": str(out), **kw})


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, fmnist_dir):
    full = fit(tiny_config(tmp_path / "full", epochs=3, fashion_mnist_dir=fmnist_dir))
    fit(tiny_config(tmp_path / "cut", epochs=1, fashion_mnist_dir=fmnist_dir))
    resumed = fit(TrainConfig(out=str(tmp_path / "cut")), resume=True, overrides={"epochs": 3})
    losses = [h["train_loss"] for h in full["history"]]
    assert [h["train_loss"] for h in resumed["history"]] == losses
    assert [h["val_top1"] for h in resumed["history"]] == [h["val_top1"] for h in full["history"]]
    assert len(set(losses)) == 3  # the epochs really differ
    a = read_weights(tmp_path / "full" / "model.safetensors")[0]
    b = read_weights(tmp_path / "cut" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_memorises_a_small_real_batch(fmnist_dir):
    """32 real garments, the paper's input scale (0-255 minus the mean image): loss goes to ~0."""
    torch.manual_seed(0)
    x, y = fashion_mnist.load("train", fmnist_dir)
    x = resize_batch(x[:32], 67).expand(-1, 3, -1, -1).float()
    x, y = x - x.mean(0), y[:32]
    model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming")
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    losses = []
    for _ in range(50):
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 2.0 and min(losses[-5:]) < 0.01
    assert (model(x).argmax(1) == y).all()


def test_plateau_schedule_divides_at_most_three_times():
    s = LRSchedule(OptimConfig(lr=0.01, patience=1, max_drops=3), steps_per_epoch=10)
    errors = [0.5, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    lrs = []
    for e in errors:
        lrs.append(s.lr(0, 0))
        s.end_epoch(e)
    assert lrs[:4] == [0.01] * 4
    assert math.isclose(lrs[4], 0.001) and math.isclose(min(lrs), 1e-5)
    assert s.drops == 3
    restored = LRSchedule(OptimConfig(lr=0.01), 10)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(5, 0) == s.lr(5, 0)


def test_other_schedules_and_warmup():
    step = LRSchedule(OptimConfig(lr=0.1, schedule="step", step_epochs=30, epochs=90), 100)
    assert [round(step.lr(e, 0), 6) for e in (0, 29, 30, 60, 89)] == [0.1, 0.1, 0.01, 0.001, 0.001]
    cos = LRSchedule(OptimConfig(lr=0.1, schedule="cosine", epochs=10, warmup_epochs=1), 100)
    assert cos.lr(0, 0) == pytest.approx(0.1 * 0.01 * (1 + math.cos(0)) / 2)
    assert cos.lr(0, 99) > cos.lr(0, 50) > cos.lr(0, 0)  # warming up
    assert cos.lr(5, 0) == pytest.approx(0.05) and cos.lr(9, 99) < 1e-3


def test_checkpoint_rebuilds_its_model_and_rejects_mismatches(tmp_path, fmnist_dir, monkeypatch):
    fit(tiny_config(tmp_path / "run", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir, lrn_k=1.0,
                    lrn_span="tower"))
    model, normalizer, meta = load_model(tmp_path / "run")
    assert meta["variant"] == "paper" and meta["num_classes"] == 10 and meta["input_size"] == 67
    norm = model.features.norm2  # the network's options come back with it
    assert (norm.k, norm.groups) == (1.0, 2)
    assert meta["classes"][0] == "T-shirt/top" and meta["accuracy"]["protocol"] == "center"
    assert normalizer.mean.shape == (3, 76, 76)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"]["variant"] == "paper"
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    with pytest.raises(AlexNetError, match="'paper' network, not 'torchvision'"):
        load_model(tmp_path / "run", variant="torchvision")
    with pytest.raises(AlexNetError, match="10 classes, not 1000"):
        load_model(tmp_path / "run", num_classes=1000)
    # the weights of another class count, forced into the run's checkpoint, fail with a one-line error
    from alexnet.checkpoint import load_state
    with pytest.raises(AlexNetError, match=r"classifier.fc8.weight has shape \(10, 4096\), expected \(1000, 4096\)"):
        load_state(create_model("paper"), ckpt["model"], "run")
    with pytest.raises(AlexNetError, match="wrong variant"):
        load_state(create_model("torchvision", num_classes=10), ckpt["model"], "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(AlexNetError, match="already holds a run; continue it with --resume"):
        fit(tiny_config(tmp_path / "run", epochs=1, fashion_mnist_dir=fmnist_dir))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # nothing written was lost
    # --overwrite starts afresh: none of the first run's files survive a second run stopped early
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(train, "evaluate", stop)  # stops the run after its first training epoch
    with pytest.raises(Stop):
        fit(tiny_config(tmp_path / "run", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir), overwrite=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "model.safetensors").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(AlexNetError, match="not a readable alexnet checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(AlexNetError, match="not a readable safetensors"):
        load_model(tmp_path / "w.safetensors")
