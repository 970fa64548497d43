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
