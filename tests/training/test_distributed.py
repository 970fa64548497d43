"""Data-parallel training on the gloo backend: two processes equal one with the same global batch."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from alexnet import create_model
from alexnet.training.checkpoint import load_checkpoint, read_weights

# A small learning rate: at 0.01 with the biases' doubled rate these 4 steps on 32 images are
# chaotic enough that the split's different summation order (rounding, ~1e-6) grows to 4e-2 of the
# distance moved by the last step; at 0.002 it stays at ~5e-6 (measured).
ARGS = ["--variant", "paper", "--resize", "76", "--crop", "67", "--epochs", "2", "--batch-size", "16",
        "--limit-train", "32", "--limit-val", "40", "--mean-samples", "32", "--init", "kaiming", "--lr", "0.002",
        "--no-random-crop", "--no-flip", "--lighting", "0", "--dropout", "0", "--device", "cpu", "--precision", "fp32"]


def run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, fmnist_dir):
    """The reference: one process, one device."""
    tmp = tmp_path_factory.mktemp("one")
    run([sys.executable, "-m", "alexnet", "train", *ARGS, "--fashion-mnist-dir", fmnist_dir,
         "--out", str(tmp / "run")], tmp)
    return tmp / "run"


def torchrun(tmp_path, fmnist_dir, out, *extra):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "alexnet", "train", *ARGS, "--fashion-mnist-dir", fmnist_dir, "--out", str(out), *extra],
               tmp_path)


def test_two_torchrun_agents_over_c10d_match_one_process(tmp_path, fmnist_dir, one_process):
    """Multi-node rendezvous: two torchrun agents (--nnodes 2, one process each) meet through the
    c10d backend on 127.0.0.1, and train as one process with the same global batch does."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "alexnet-test",
           "-m", "alexnet", "train", *ARGS, "--fashion-mnist-dir", fmnist_dir, "--out", str(tmp_path / "two"),
           "--tensorboard"]
    agents = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [a.communicate(timeout=600)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert sum("x 2 processes" in o for o in outputs) == 1  # rank 0 alone prints
    events = list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1  # and writes TensorBoard: one pid
    one, _, _ = read_weights(one_process / "model.safetensors")
    two, _, _ = read_weights(tmp_path / "two" / "model.safetensors")
    init = initial_weights()
    for k in one:
        assert (two[k] - one[k]).norm() <= 1e-4 * (one[k] - init[k]).norm(), k  # as two processes on one node


def initial_weights():
    torch.manual_seed(0)  # the runs' common starting point (fit seeds with --seed 0, then builds the model)
    # at 67 px fc6 reads the 1x1 pool5 once (the trainer's default grid there)
    return create_model("paper", num_classes=10, dropout=0.0, init="kaiming", pool5_grid=1).state_dict()


def test_two_gloo_processes_match_one_process(tmp_path, fmnist_dir, one_process):
    # with a time budget that holds every epoch: both processes plan together (25 steps, undone)
    r = torchrun(tmp_path, fmnist_dir, tmp_path / "two", "--time-budget", "3600")
    assert "x 2 processes" in r.stdout
    assert r.stdout.count("time budget 3600 s") == 1 and ": 2 epochs" in r.stdout
    assert r.stdout.count("epoch 2/2") == 1  # only rank 0 prints
    one, _, _ = read_weights(one_process / "model.safetensors")
    two, _, _ = read_weights(tmp_path / "two" / "model.safetensors")
    init = initial_weights()
    assert one.keys() == two.keys() == init.keys()
    for k in one:
        moved = (one[k] - init[k]).norm()
        assert moved > 0, k  # training changed every tensor
        # The two runs agree to float rounding (measured: ~1e-6 of the distance moved, after 4 steps).
        # Kept short on purpose: over many steps, rounding flips units at the ReLU boundary and grows.
        assert (two[k] - one[k]).norm() <= 1e-4 * moved, k
    h1 = load_checkpoint(one_process)["history"]
    h2 = load_checkpoint(tmp_path / "two")["history"]
    for a, b in zip(h1, h2):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
        assert a["train_images"] == b["train_images"] == 32  # metrics are reduced across ranks
        assert a["val_top1"] == b["val_top1"]
    # the two-process checkpoint resumes in one process (any world size)
    # (its planned 2 epochs set anew: a budgeted run's --epochs can otherwise only go down)
    run([sys.executable, "-m", "alexnet", "train", "--resume", str(tmp_path / "two"), "--epochs", "3",
         "--time-budget", "0"], tmp_path)
    assert load_checkpoint(tmp_path / "two")["epoch"] == 3


def test_data_parallel_over_two_tower_splits_matches_one_process(tmp_path, fmnist_dir, one_process):
    """torchrun x --model-parallel: each process holds the split network (here both towers on
    'cpu'), DistributedDataParallel spans the processes; same weights as one plain process."""
    r = torchrun(tmp_path, fmnist_dir, tmp_path / "mp", "--model-parallel", "cpu,cpu")
    assert "(two towers) x 2 processes" in r.stdout
    one, _, _ = read_weights(one_process / "model.safetensors")
    split, _, _ = read_weights(tmp_path / "mp" / "model.safetensors")
    init = initial_weights()
    assert split.keys() == one.keys()  # the single-device layout
    for k in one:
        # measured: ~1e-6 of the distance moved (one thread per process, as in the test above)
        assert (split[k] - one[k]).norm() <= 1e-4 * (one[k] - init[k]).norm(), k


def _gather_worker(rank, init_file, out_dir):
    import torch.distributed as dist
    from alexnet.training import distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        got = distributed.gather_lists([f"bad-{rank}.jpg"] * (rank + 1))
        total = distributed.all_reduce_sum(torch.tensor([float(rank + 1)]))
        torch.save({"got": got, "total": total}, os.path.join(out_dir, f"{rank}.pt"))
        dist.barrier()  # neither rank tears the group down while the other still talks in it
    finally:
        dist.destroy_process_group()


def test_every_rank_sees_every_ranks_skipped_files(tmp_path):
    """Unreadable files found by any rank reach rank 0's log (names gathered, counts summed)."""
    torch.multiprocessing.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert r["got"] == ["bad-0.jpg", "bad-1.jpg", "bad-1.jpg"]
        assert r["total"].item() == 3.0


class _Fixed:
    """Given batches, in order: the loader interface train_one_epoch reads."""

    def __init__(self, items):
        self.items = items

    def set_epoch(self, epoch, start=0):
        pass

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def _empty_batch_worker(rank, init_file, out_dir, skip_nonfinite=0):
    from datetime import timedelta

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from alexnet.training import distributed
    from alexnet.training.config import OptimConfig
    from alexnet.data.loader import Batch
    from alexnet.data.transforms import Normalizer, TrainAugment
    from alexnet.training.runtime import Runtime
    from alexnet.training.train import Learner, LRSchedule, build_optimizer, make_scaler, train_one_epoch

    # a short timeout: a rank that skips a step leaves the other waiting in its all-reduce
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = create_model("paper", num_classes=3, dropout=0.0, init="kaiming")
        ddp = DistributedDataParallel(model)
        g = torch.Generator().manual_seed(rank)
        full = [Batch(torch.randint(0, 256, (2, 3, 67, 67), dtype=torch.uint8, generator=g),
                      torch.tensor([0, rank + 1])) for _ in range(2)]
        empty = Batch(torch.empty(0, 3, 67, 67, dtype=torch.uint8), torch.empty(0, dtype=torch.long),
                      skipped=["bad-0.jpg", "bad-1.jpg"])
        items = [empty, full[1]] if rank == 1 else full  # rank 1's first batch was all unreadable
        rt = Runtime(torch.device("cpu"), None, False, distributed.Env(rank, rank, 2))
        cfg = OptimConfig(lr=0.01, epochs=1)
        learner = Learner(ddp, build_optimizer(model, cfg), LRSchedule(cfg, 2), make_scaler(rt),
                          TrainAugment(Normalizer.channel(), 67, False, False, 0.0), rt,
                          skip_nonfinite=skip_nonfinite)
        stats = train_one_epoch(learner, _Fixed(items), 0, torch.Generator(), progress=False)
        torch.save({"weights": model.state_dict(), "stats": stats}, os.path.join(out_dir, f"{rank}.pt"))
        del learner, ddp  # the reducer's communication goes before the group does
        dist.barrier()  # neither rank tears the group down while the other still talks in it
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("skip_nonfinite", [0, 3])
def test_a_rank_with_an_unreadable_batch_still_takes_part_in_the_step(tmp_path, skip_nonfinite):
    """Without its share of the step's gradient all-reduce (and, with --skip-nonfinite, of the
    vote on the loss), the other rank would wait until the timeout; with it, both ranks finish
    with the same weights and count the images of both."""
    torch.multiprocessing.spawn(_empty_batch_worker, args=(str(tmp_path / "init"), str(tmp_path), skip_nonfinite),
                                nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    init = create_model("paper", num_classes=3, dropout=0.0, init="kaiming").state_dict()
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    assert not torch.equal(r0["weights"]["classifier.fc8.weight"], init["classifier.fc8.weight"])
    for stats in (r0["stats"], r1["stats"]):
        assert stats["train_images"] == 6 and stats["skipped"] == 2


def _layout_worker(rank, init_file, out_dir):
    import warnings

    import torch.distributed as dist
    import torch.nn.functional as F

    from alexnet.training import distributed
    from alexnet.training.config import TrainConfig
    from alexnet.training.runtime import Runtime
    from alexnet.training.train import _wrap

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = create_model("paper", num_classes=3, lrn_span="tower").to(memory_format=torch.channels_last)
        rt = Runtime(torch.device("cpu"), None, True, distributed.Env(rank, rank, 2))
        ddp = _wrap(model, TrainConfig(), rt)
        x = torch.randn(2, 3, 67, 67).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            F.cross_entropy(ddp(x), torch.tensor([0, 1])).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        torch.save({"views": {n: g._base is not None for n, g in grads.items()},
                    "channels_last": {n: g.is_contiguous(memory_format=torch.channels_last)
                                      for n, g in grads.items() if g.dim() == 4},
                    "warnings": [str(w.message) for w in caught]}, os.path.join(out_dir, f"{rank}.pt"))
        del ddp  # its reducer's communication hooks go before the group does
        dist.barrier()  # neither rank tears the group down while the other still talks in it
    finally:
        dist.destroy_process_group()


def test_channels_last_gradients_are_ddp_bucket_views(tmp_path):
    """The gradients DistributedDataParallel reduces are views into its buckets, in each
    parameter's channels-last layout: no copy between the two per step."""
    torch.multiprocessing.spawn(_layout_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert all(r["views"].values()), r["views"]
        assert len(r["channels_last"]) == 5 and all(r["channels_last"].values())
        assert not [w for w in r["warnings"] if "stride" in w], r["warnings"]


def _torchrun(out, *extra):
    """Two gloo workers under torchrun, restarted once if one dies, continuing with --resume auto."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "--monitor-interval", "0.5", "-m", "alexnet", "train", "--variant", "lenet5",
           "--init", "torchvision", "--resize", "36", "--crop", "32", "--limit-train", "2048", "--limit-val", "64",
           "--batch-size", "32", "--epochs", "2", "--mean-samples", "256", "--workers", "0", "--log-every", "1000",
           "--out", str(out), "--resume", "auto", "--checkpoint-every", "1", "--device", "cpu", "--precision", "fp32",
           *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_nothing_happened(tmp_path):
    """torchrun --max-restarts 1: one of two workers is SIGKILLed inside an epoch; torchrun
    restarts both, they find the mid-epoch checkpoint (--resume auto) and finish with the
    weights of a run that was never interrupted."""
    import time

    whole = _torchrun(tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()[-3000:]
    proc = _torchrun(tmp_path / "cut")
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline:  # training is under way
        time.sleep(0.05)
    time.sleep(0.5)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text[-3000:]
    assert "resuming in epoch" in text or "resuming after epoch" in text
    a = read_weights(tmp_path / "whole" / "model.safetensors")[0]
    b = read_weights(tmp_path / "cut" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc), in start order."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append((int(fields[19]), int(entry)))
    return [p for _, p in sorted(found)]
