"""alexnet.training.runtime: the device each process takes, refused where it cannot work."""

import pytest
import torch

from alexnet import AlexNetError


def test_a_fixed_cuda_device_is_refused_under_torchrun():
    """--device cuda:1 with several processes would put every rank on one GPU."""
    from alexnet.training.runtime import resolve_device

    for name in ("cuda:0", "cuda:1"):
        with pytest.raises(AlexNetError, match="would put every process on the same device"):
            resolve_device(name, local_rank=1, world=2)
    assert resolve_device("cpu", local_rank=1, world=2) == torch.device("cpu")


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    """torchrun --nproc-per-node 2 on a one-GPU node: rank 1 would take a cuda:1 that is not there."""
    from alexnet.training.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", local_rank=0, world=2) == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=0, world=2) == torch.device("cuda:0")
    for name in ("auto", "cuda"):
        with pytest.raises(AlexNetError, match=r"cuda:1, but the node has 1 CUDA device\(s\).*--nproc-per-node"):
            resolve_device(name, local_rank=1, world=2)
    with pytest.raises(AlexNetError, match=r"there is no cuda:3: this machine has 1 CUDA device"):
        resolve_device("cuda:3")


def test_each_timed_call_waits_for_every_device_of_the_split(monkeypatch):
    """With the towers on two GPUs the second tower's backward and update end after the first's:
    a call is timed until both devices have finished, each once, and the warm-up's work is
    finished before the first timed call starts."""
    from alexnet.training.runtime import timed_calls

    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(str(device)))
    towers = (torch.device("cuda:0"), torch.device("cuda:1"))
    out = timed_calls(lambda: log.append("call") or 7, towers, calls=2, warmup=1)
    assert [result for _, result in out] == [7, 7]
    assert log == ["call", "cuda:0", "cuda:1"] + ["call", "cuda:0", "cuda:1"] * 2
    log.clear()
    timed_calls(lambda: log.append("call"), (torch.device("cuda:0"),) * 2, calls=1, warmup=0)  # both on one GPU
    assert log == ["cuda:0", "call", "cuda:0"]
    log.clear()
    timed_calls(lambda: log.append("call"), torch.device("cpu"), calls=1, warmup=0)
    assert log == ["call"]


def test_streamed_calls_wait_once_at_each_end_not_after_every_call(monkeypatch):
    """The training loop's pace: the host queues call k + 1 while the devices still run call k,
    so nothing waits between calls; before the first and after the last, every device is waited for."""
    from alexnet.training.runtime import streamed_calls

    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(str(device)))
    towers = (torch.device("cuda:0"), torch.device("cuda:1"))
    seconds, results = streamed_calls(lambda: log.append("call") or 3, towers, calls=3)
    assert results == [3, 3, 3] and seconds >= 0
    assert log == ["cuda:0", "cuda:1", "call", "call", "call", "cuda:0", "cuda:1"]
