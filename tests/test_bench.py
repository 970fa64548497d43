"""The benchmark harness runs every measurement (no timing asserted: figures are measured, not tested)."""

import pytest
import torch

from alexnet.bench import BenchConfig, bench_inference, run, train_flops_per_image


@pytest.fixture
def matmul_tf32():
    """Matrix products in TF32, as a GPU run in bf16 sets them for its own rows; put back after."""
    matmul = torch.backends.cuda.matmul
    saved, matmul.allow_tf32 = matmul.allow_tf32, True
    yield
    matmul.allow_tf32 = saved


def test_bench_reports_every_figure(image_tree, monkeypatch, matmul_tf32):
    from alexnet import bench

    reducers, tf32, real = [], [], bench.time_steps

    def spy(*a, **kw):
        reducers.append(kw.get("reduce"))
        tf32.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                     torch.backends.cudnn.benchmark))
        return real(*a, **kw)
    monkeypatch.setattr(bench, "time_steps", spy)
    result = run(BenchConfig(["torchvision"], device="cpu", precision="fp32", batch_size=4, steps=1, warmup=1,
                             images=str(image_tree), workers=0, cache="host"), log=lambda _: None)
    figures = {(f["what"], f["variant"]): f for f in result["figures"]}
    assert {w for w, _ in figures} == {"model", "decode", "loader", "end-to-end", "cached", "baseline"}
    assert figures[("model", "torchvision")]["settings"]["precision"] == "float32"
    # the layers as `alexnet train` runs them there: the plain computation on a CPU
    assert figures[("model", "torchvision")]["settings"]["layers"] == {"towers": "grouped", "conv1": "direct",
                                                                     "pools": "native"}
    assert figures[("cached", "torchvision")]["settings"]["cache"] == "host"
    assert set(result["ratios"]) == {"torchvision: end-to-end / model", "torchvision: cached / model",
                                     "torchvision: end-to-end / baseline"}
    assert set(result["projection"]) == {"torchvision: 90 ImageNet epochs (hours)",
                                         "torchvision (cached): 90 ImageNet epochs (hours)"}
    # images over time for the four rows that loader processes feed (loader, end to end, cached, baseline)
    assert reducers.count(bench.throughput) == 4
    # the baseline (the last row) in a plain PyTorch script's arithmetic: matrix products in fp32,
    # convolutions in TF32, cuDNN's autotuner on; the run's own settings before and after it
    assert tf32[-1] == (False, True, True) and all(t[0] for t in tf32[:-1])
    assert torch.backends.cuda.matmul.allow_tf32 and tf32[0][1:] == (torch.backends.cudnn.allow_tf32,
                                                                      torch.backends.cudnn.benchmark)
    _check_measured(result["figures"])
    assert all(f["streamed_images_per_sec"] is None for f in result["figures"])  # a CPU's calls finish as made
    rate = {key: f["images_per_sec"] for key, f in figures.items()}
    tv = "torchvision"
    assert result["ratios"] == pytest.approx({f"{tv}: end-to-end / model": rate[("end-to-end", tv)] / rate[("model", tv)],
                                              f"{tv}: cached / model": rate[("cached", tv)] / rate[("model", tv)],
                                              f"{tv}: end-to-end / baseline": rate[("end-to-end", tv)] / next(r for (w, _), r in rate.items() if w == "baseline")})
    hours = result["projection"][f"{tv}: 90 ImageNet epochs (hours)"]
    assert hours * 3600 * rate[("end-to-end", tv)] == pytest.approx(90 * 1_281_167)  # ILSVRC-2012's training set


def _check_measured(figures):
    """Every figure was measured: a finite, positive rate over the steps asked for, and a peak memory."""
    import math

    for f in figures:
        assert math.isfinite(f["images_per_sec"]) and f["images_per_sec"] > 0, f
        assert f["steps"] >= 1 and f["batch_size"] >= 1, f
        assert f["peak_memory_mib"] is None or f["peak_memory_mib"] > 0, f


def test_training_flops_are_three_forward_passes():
    """The figure the matmul-peak fraction uses: 2 FLOPs per multiply-accumulate, forward plus a
    backward of twice the forward (0.714 GMAC torchvision, as torchvision's model card says; about 724M
    MACs paper)."""
    assert train_flops_per_image("torchvision", 224) == pytest.approx(6 * 0.714e9, rel=0.005)
    assert train_flops_per_image("paper", 227) == pytest.approx(6 * 724e6, rel=0.005)


def test_inference_bench_compares_with_the_baseline():
    result = bench_inference(batch_sizes=(1, 2), steps=1, warmup=1, log=lambda _: None)
    _check_measured(result["figures"])
    rate = {(f["batch_size"], f["variant"]): f["images_per_sec"] for f in result["figures"]}
    baseline = "torchvision eager fp32 (baseline)"
    assert {v for _, v in rate} >= {baseline, "alexnet eager fp32", "ONNX Runtime fp32 (alexnet export)"}
    # one ratio per batch size and contender, each the contender's rate over the baseline's at that batch
    expected = {f"batch {b}: {v} / baseline": r / rate[(b, baseline)] for (b, v), r in rate.items() if v != baseline}
    assert {b for b, _ in rate} == {1, 2} and result["ratios"] == pytest.approx(expected)


def test_bad_bench_input_fails_before_measuring(tmp_path):
    from alexnet import AlexNetError

    for kwargs, message in [(dict(steps=-1), "--steps must not be negative"),
                            (dict(batch_size=-3), "--batch-size must not be negative"),
                            (dict(images=str(tmp_path)), "no train/ folder"),
                            (dict(packed=str(tmp_path)), "not a packed dataset"),
                            (dict(gpu_decode=True), "--gpu-decode needs packed data")]:
        with pytest.raises(AlexNetError, match=message):
            run(BenchConfig(["torchvision"], device="cpu", **kwargs), log=lambda _: None)
    with pytest.raises(AlexNetError, match="--warmup must not be negative"):
        bench_inference(warmup=-1, log=lambda _: None)


def test_loader_fed_rows_count_the_waits_between_bursts(monkeypatch):
    """Loader processes hand batches over in bursts: three at once, then a long wait. The rate of
    such rows is images over time, which a median of steps would hide (it would read the bursts)."""
    import time

    import torch

    from alexnet import bench

    clock, waits = [0.0], iter([0.001, 0.001, 0.001, 0.097] * 2)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # the one clock bench and the budget read

    def step():
        clock[0] += next(waits)
        return 100

    rate = bench.time_steps(step, torch.device("cpu"), steps=8, warmup=0, reduce=bench.throughput)
    assert rate == pytest.approx(800 / 0.2)  # 4,000 img/s; the median step reads 100,000


def test_the_pytorch_example_peer_trains_and_the_side_by_side_run_times_every_arm(tmp_path):
    """benchmarks/vs_imagenet_example.py at toy size: each arm is a whole process, timed, in a
    table; the peer's (the ImageNet example's recipe) trains, validates and writes its checkpoint."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import torch
    import torchvision
    from conftest import write_tree

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    tree = write_tree(tmp_path / "imgs", per_class=2, size=40)
    both = subprocess.run([sys.executable, str(root / "vs_imagenet_example.py"), str(tree), "--rounds", "1", "-b", "4",
                           "-j", "0", "--out", str(tmp_path / "vs")], capture_output=True, text=True, timeout=600)
    assert both.returncode == 0, both.stderr
    # the example's arm: its own checkpoint, after one epoch of training and a validation
    saved = torch.load(tmp_path / "vs" / "checkpoint.pth.tar", weights_only=True)
    torch.manual_seed(0)
    untrained = torchvision.models.alexnet().state_dict()
    assert saved["epoch"] == 1 and not torch.equal(saved["state_dict"]["classifier.6.weight"],
                                                   untrained["classifier.6.weight"])
    assert 0 <= saved["best_acc1"] <= 1
    result = json.loads(both.stdout.strip().splitlines()[-1])
    rows, n = result["rows"], sum(1 for f in (tree / "train").rglob("*") if f.is_file())
    assert result["images_trained"] == {"example": n, "alexnet": n - n % 4}  # whole batches of 4
    assert [r["arm"] for r in rows] == ["example", "alexnet fp32", "alexnet auto"]
    assert all(len(r["seconds"]) == 1 and r["seconds"][0] > 0 for r in rows)
    example = rows[0]["seconds"][0]
    for r in rows:  # one round: each ratio is the example's seconds over the arm's
        assert r["speedup_median"] == pytest.approx(example / r["seconds"][0], abs=6e-4)  # stored to 3 places
    assert (tmp_path / "vs" / "fp32" / "model.safetensors").is_file()


def test_gpu_rows_are_also_timed_streamed_and_their_ratios_say_so(monkeypatch):
    """On a GPU the model and end-to-end rows are timed again as a training loop runs, one wait at
    the end: the count of images over that one span; the streamed ratios stand beside the
    step-by-step ones, only where both rows of a pair have a streamed rate."""
    import types

    from alexnet import bench
    from alexnet.bench import Figure
    from alexnet.training import runtime

    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waits.append(device))
    clock = iter([10.0, 12.0])  # the span's start and end
    monkeypatch.setattr(runtime, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert bench.time_streamed(lambda: 64, torch.device("cuda:0"), 5) == pytest.approx(5 * 64 / 2.0)
    assert len(waits) == 2
    assert bench.time_streamed(lambda: 64, torch.device("cpu"), 5) is None

    def fig(what, variant, rate, streamed):
        return Figure(what, variant, "gpu", rate, 256, 50, 1.0, streamed_images_per_sec=streamed)

    figures = [fig("model", "paper", 100.0, 120.0), fig("cached", "paper", 80.0, 114.0),
               fig("model", "torchvision", 200.0, None), fig("cached", "torchvision", 150.0, 190.0)]
    ratios = bench._derived(figures, ["paper", "torchvision"])["ratios"]
    assert ratios == pytest.approx({"paper: cached / model": 0.8, "paper: cached / model, streamed": 0.95,
                                    "torchvision: cached / model": 0.75})


def test_a_small_sets_epoch_outlasts_every_call_a_row_makes_and_the_queue_ahead():
    """A loader-fed row's warm-up, timed steps and (on a GPU) streamed steps all fall inside one
    epoch with the loader processes' queue to spare: an epoch's end drains the queue and the
    rate read across it is the drain's, not the loader's."""
    from alexnet.bench import _passes

    for batches, workers, prefetch, calls in [(3, 16, 4, 238), (3, 8, 4, 174), (40, 2, 4, 70), (1, 0, 4, 7)]:
        assert _passes(batches, workers, prefetch, calls) * batches >= calls + 4 * max(1, workers) * prefetch
    assert _passes(1000, 16, 4, 100) == 1  # a large set is not lengthened

