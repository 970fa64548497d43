"""Training that survives faults: signals, kills, restarts, a full disk, non-finite losses."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet import AlexNetError
from alexnet.training import train
from alexnet.training.checkpoint import load_checkpoint, read_weights
from alexnet.training.config import TrainConfig
from alexnet.training.train import fit
from conftest import tiny_config


_real_train_step = train.train_step


def _signal_at(monkeypatch, calls: list[int], signum=signal.SIGTERM):
    """Make training send itself ``signum`` during its n-th step, for each n in ``calls``."""
    real, count = train.train_step, {"n": 0}

    def step(*args, **kw):
        count["n"] += 1
        if count["n"] in calls:
            signal.raise_signal(signum)  # to this thread, at once
        return real(*args, **kw)

    monkeypatch.setattr(train, "train_step", step)


def test_sigterm_mid_epoch_then_resume_is_the_uninterrupted_run_bit_for_bit(tmp_path, fmnist_dir, monkeypatch):
    """Stopped twice (in epoch 1 and in epoch 2, dropout and augmentation on), each time with a
    checkpoint inside the epoch: the resumed run's weights, epoch records and per-step curve
    equal the uninterrupted run's exactly."""
    kw = dict(epochs=2, limit_train=256, trace_steps=True, fashion_mnist_dir=fmnist_dir)
    full = fit(tiny_config(tmp_path / "full", **kw))
    _signal_at(monkeypatch, [3])
    with pytest.raises(SystemExit) as stopped:
        fit(tiny_config(tmp_path / "cut", **kw))
    assert stopped.value.code == 128 + signal.SIGTERM
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and ckpt["position"]["ranks"][0]["state"]["step"] == 3
    _signal_at(monkeypatch, [4], signal.SIGINT)  # 8 steps an epoch: step 4 of the resumed run is in epoch 2
    with pytest.raises(SystemExit) as stopped:
        fit(TrainConfig(out=str(tmp_path / "cut")), resume=True)
    assert stopped.value.code == 128 + signal.SIGINT
    monkeypatch.setattr(train, "train_step", _real_train_step)
    resumed = fit(TrainConfig(out=str(tmp_path / "cut")), resume=True)
    strip = lambda h: {k: v for k, v in h.items() if k not in ("epoch_time", "images_per_sec")}  # noqa: E731
    assert [strip(h) for h in resumed["history"]] == [strip(h) for h in full["history"]]
    a = read_weights(tmp_path / "full" / "model.safetensors")[0]
    b = read_weights(tmp_path / "cut" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are the caller's again


def test_a_second_signal_stops_at_once():
    from alexnet.training.preempt import StopRequest

    # Python's own SIGINT handler, whatever an earlier test in this process (a library's server,
    # a test runner) installed: the second signal must do what that handler does
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _second_signal_raises(StopRequest)
    finally:
        signal.signal(signal.SIGINT, outer)


def _second_signal_raises(StopRequest) -> None:
    # raise_signal: delivered to this thread, handled before the next line
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first only asks
        with pytest.raises(KeyboardInterrupt):  # the second does what SIGINT does without the handler
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_checkpoint_every_is_checked():
    with pytest.raises(AlexNetError, match="--checkpoint-every takes"):
        fit(tiny_config("unused", checkpoint_every="soon"))


def _train_cli(out, *extra):
    """`alexnet train` in its own process: LeNet-5 on 2,048 Fashion-MNIST images, 64 steps an epoch,
    on one CPU thread in fp32, so that every process computes the same numbers. (On an H100 the
    processes did not, 2026-11-26: cuDNN's autotuner may choose other kernels in each process.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "alexnet", "train", "--variant", "lenet5", "--init", "torchvision", "--resize",
           "36", "--crop", "32", "--limit-train", "2048", "--limit-val", "64", "--batch-size", "32", "--epochs", "3",
           "--mean-samples", "256", "--workers", "0", "--device", "cpu", "--precision", "fp32",
           "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_at_any_moment_and_restarted_it_ends_as_if_never_stopped(tmp_path):
    """SIGKILL at random moments (during steps, checkpoint writes, start-up), each time restarted
    with the same command (--resume auto, as a restarted job would be), then SIGTERM once: the
    weights at the end equal an uninterrupted run's bit for bit."""
    import random

    assert _train_cli(tmp_path / "whole").wait(timeout=300) == 0
    out, rng, kills = tmp_path / "cut", random.Random(0), 0
    args = ("--resume", "auto", "--checkpoint-every", "1")
    while kills < 3:
        proc = _train_cli(out, *args)
        # a checkpoint every step: counted in steps, not seconds, so that a fast machine cannot finish
        # first (the whole run takes 2 s on some); kills land in start-up, in steps and in writes
        if not _wait_for_writes(proc, out / "checkpoint.pt", rng.randint(0, 4), rng) or proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        kills += 1
        assert load_checkpoint(out / "checkpoint.pt")  # whatever the moment, a loadable checkpoint
    before = _mtime(out / "checkpoint.pt")
    proc = _train_cli(out, *args)
    while _mtime(out / "checkpoint.pt") == before and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, 128 + signal.SIGTERM)  # it may have finished first
    if proc.returncode:
        assert "stopped by SIGTERM" in text and f"alexnet train --resume {out}" in text
    assert _train_cli(out, *args).wait(timeout=300) == 0
    a = read_weights(tmp_path / "whole" / "model.safetensors")[0]
    b = read_weights(out / "model.safetensors")[0]
    assert kills == 3 and all(torch.equal(a[k], b[k]) for k in a)


def _mtime(path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _wait_for_writes(proc, path, writes: int, rng) -> bool:
    """Wait until ``path`` has been written ``writes`` times more (0: not at all), then a random part
    of the time one write took to follow the last; False if the process ended first."""
    times = [time.monotonic()]
    for _ in range(writes):
        before = _mtime(path)
        while _mtime(path) == before:
            if proc.poll() is not None:
                return False
            time.sleep(0.002)
        times.append(time.monotonic())
    time.sleep(rng.random() * (times[-1] - times[-2] if writes > 1 else 0.5))
    return True


def test_a_non_finite_loss_stops_naming_its_step_and_keeps_the_last_checkpoint(tmp_path, fmnist_dir, monkeypatch):
    run = tmp_path / "run"
    fit(tiny_config(run, epochs=1, limit_train=256, fashion_mnist_dir=fmnist_dir))
    before = (run / "checkpoint.pt").read_bytes()
    real, count = train.train_step, {"n": 0}

    def poisoned(model, optimizer, scaler, rt, x, labels, weight=1.0):
        count["n"] += 1
        if count["n"] == 3:  # one batch with a NaN pixel: the loss, then the weights, become NaN
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return real(model, optimizer, scaler, rt, x, labels, weight)

    monkeypatch.setattr(train, "train_step", poisoned)
    with pytest.raises(AlexNetError, match="not finite at step 3 of epoch 2; the last checkpoint is kept"):
        fit(TrainConfig(out=str(run)), resume=True, overrides={"epochs": 2, "checkpoint_every": "5"})
    assert (run / "checkpoint.pt").read_bytes() == before  # no checkpoint of the diverged weights


def test_a_checkpoint_write_that_fails_keeps_the_previous_one(tmp_path, fmnist_dir, monkeypatch, capsys):
    """A full disk while the checkpoint is written: one line, and the last checkpoint intact."""
    import errno

    from alexnet.training import checkpoint
    from alexnet.cli import main

    run = tmp_path / "run"
    fit(tiny_config(run, epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir))
    before = (run / "checkpoint.pt").read_bytes()

    def full_disk(obj, f):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("alexnet: error: could not write the checkpoint") and "No space left" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written file left behind


def test_skip_nonfinite_skips_the_bad_batch_counts_it_and_has_a_cap(tmp_path, fmnist_dir, monkeypatch, capsys):
    """--skip-nonfinite: a batch with a NaN is skipped without touching the weights (the run then
    trains on), counted in the epoch's record and logged; more than the cap stops the run."""
    real, count = train.forward_backward, {"n": 0}

    def poisoned(model, optimizer, scaler, rt, x, labels, weight=1.0):
        count["n"] += 1
        if count["n"] in (2, 5):
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return real(model, optimizer, scaler, rt, x, labels, weight)

    monkeypatch.setattr(train, "forward_backward", poisoned)
    result = fit(tiny_config(tmp_path / "ok", epochs=1, limit_train=256, skip_nonfinite=2, fashion_mnist_dir=fmnist_dir))
    record = result["history"][0]
    assert record["nonfinite_skipped"] == 2 and math.isfinite(record["train_loss"])
    assert record["train_images"] == 256 - 2 * 32  # the skipped batches are not counted as trained
    weights = read_weights(tmp_path / "ok" / "model.safetensors")[0]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "skipped step 2 of epoch 1: its loss was not finite (1 of at most 2 this epoch)" in capsys.readouterr().out
    count["n"] = 0
    with pytest.raises(AlexNetError, match="2 batches of epoch 1 had a loss that was not finite, more than"):
        fit(tiny_config(tmp_path / "capped", epochs=1, limit_train=256, skip_nonfinite=1,
                        fashion_mnist_dir=fmnist_dir))


@pytest.mark.gpu
def test_a_run_stopped_inside_an_epoch_continues_on_cuda(tmp_path, fmnist_dir, monkeypatch):
    """The mid-epoch checkpoint restores a CUDA generator's state (a host ByteTensor: moving it to
    the device once made every resume on a GPU fail). The body is the CPU suite's, which checks the
    continued run against the uninterrupted one; here the device is cuda:0. Both runs are in this
    process, so cuDNN's autotuner keeps its kernels and the weights come out equal (H100, 2026-11-26)."""
    test_sigterm_mid_epoch_then_resume_is_the_uninterrupted_run_bit_for_bit(tmp_path, fmnist_dir, monkeypatch)


def test_a_run_stopped_inside_an_epoch_on_a_gpu_continues_on_a_cpu(tmp_path, fmnist_dir, monkeypatch, capsys):
    """A preempted job may come back on another kind of machine. A CUDA generator's state (16
    bytes: seed and offset) cannot seed a CPU generator, nor the reverse: the run continues from
    the checkpoint with the epoch's own seeding, says that the epoch's remaining draws differ
    from an uninterrupted run's, and ends with every epoch trained."""
    kw = dict(epochs=2, limit_train=256, fashion_mnist_dir=fmnist_dir)
    _signal_at(monkeypatch, [3])
    with pytest.raises(SystemExit):
        fit(tiny_config(tmp_path / "cut", **kw))
    path = tmp_path / "cut" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    own = ckpt["position"]["ranks"][0]
    assert own["device"] == "cpu" and own["cuda_rng"] == []
    # what a GPU run writes there: its generator's seed and offset, and dropout's CUDA state
    own.update(device="cuda", augment=torch.zeros(16, dtype=torch.uint8), cuda_rng=[torch.zeros(16, dtype=torch.uint8)])
    torch.save(ckpt, path)
    monkeypatch.setattr(train, "train_step", _real_train_step)
    capsys.readouterr()
    resumed = fit(TrainConfig(out=str(tmp_path / "cut")), resume=True)
    assert "taken inside epoch 1 on cuda and continues on cpu" in capsys.readouterr().err
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert all(math.isfinite(h["train_loss"]) for h in resumed["history"])


def test_a_checkpoint_with_dropout_states_for_other_gpus_still_restores_the_augmentation(tmp_path, fmnist_dir,
                                                                                         monkeypatch, capsys):
    """Fewer or more GPUs' dropout states than the resumed run uses (an older checkpoint of a
    split run held tower 1's alone): the generator is restored all the same, so a run whose
    dropout draws on the CPU ends bit for bit as the uninterrupted one, and the mismatch is said."""
    kw = dict(epochs=1, limit_train=256, fashion_mnist_dir=fmnist_dir)
    fit(tiny_config(tmp_path / "full", **kw))
    _signal_at(monkeypatch, [3])
    with pytest.raises(SystemExit):
        fit(tiny_config(tmp_path / "cut", **kw))
    path = tmp_path / "cut" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["position"]["ranks"][0]["cuda_rng"] = [torch.zeros(16, dtype=torch.uint8)]
    torch.save(ckpt, path)
    monkeypatch.setattr(train, "train_step", _real_train_step)
    capsys.readouterr()
    fit(TrainConfig(out=str(tmp_path / "cut")), resume=True)
    assert "with the dropout state of 1 GPU(s) for 0" in capsys.readouterr().err
    a = read_weights(tmp_path / "full" / "model.safetensors")[0]
    b = read_weights(tmp_path / "cut" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
