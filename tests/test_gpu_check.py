"""benchmarks/gpu_check.sh --smoke: every stage of the GPU acceptance script at toy size on the CPU,
so that the script cannot rot between the rare sessions that have a GPU."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_check(out: Path, *stages: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}  # the caller's own check
    env = dict(inherited, PYTHON=sys.executable, GPU_CHECK_WORK=str(out / "work")) | (env_extra or {})
    return subprocess.run(["bash", str(SCRIPT), "--smoke", str(out), *stages], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = run_check(out)
    return out, proc


def test_every_stage_runs_and_reports(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("setup", "tests", "suite", "bench", "main"):
        summary = json.loads((out / f"{stage}.json").read_text())
        assert summary["ok"] and summary["smoke"] and summary["steps"], stage
        assert all(s["rc"] == 0 for s in summary["steps"])
        assert (out / f"{stage}.log").stat().st_size > 0
    setup = json.loads((out / "setup.json").read_text())["results"]["environment"]
    assert setup["missing"] == [] and setup["data"]["fashion_mnist"]
    tests = json.loads((out / "tests.json").read_text())["results"]["pytest-gpu"]
    assert tests["tests"] >= 5 and tests["failures"] == tests["errors"] == 0  # collected (skipped on the CPU)


def test_bench_stage_measures_every_row(smoke):
    out, _ = smoke
    results = json.loads((out / "bench.json").read_text())["results"]
    rows = {(f["what"], f["variant"]) for f in results["bench-jpeg"]["figures"]}
    assert rows == {("model", "paper"), ("decode", "-"), ("loader", "-"), ("end-to-end", "paper"), ("cached", "paper"),
                    ("baseline", "torchvision (eager fp32, ImageFolder+PIL)")}  # the smoke run: one network a step
    raw = {(f["what"], f["variant"]) for f in results["bench-raw"]["figures"]}
    assert {("model", "torchvision"), ("end-to-end", "torchvision")} <= raw
    assert "decode" not in {what for what, _ in raw}  # raw packing: nothing to decode
    split = results["bench-split"]
    assert split["settings"]["model_parallel"] == ["cpu", "cpu"]


def test_main_stage_trains_and_evaluates_with_ten_crops(smoke):
    out, _ = smoke
    results = json.loads((out / "main.json").read_text())["results"]
    assert len(results["metrics"]) == 1 and results["metrics"][0]["train_images"] == 64
    ten = results["evaluate-ten-crop"]
    assert ten["protocol"] == "ten-crop" and ten["images"] == 32
    assert 0 <= ten["center_top1"] <= ten["center_top5"] <= 1  # the center protocol's figures from the same pass


def test_a_failing_stage_is_reported_and_fails_the_script(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = run_check(tmp_path / "out", "main", env_extra={"ALEXNET_FASHION_MNIST": str(empty)})
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "out" / "main.json").read_text())
    assert not summary["ok"] and summary["steps"][0]["name"] == "train" and summary["steps"][0]["rc"] != 0
    assert len(summary["steps"]) == 1  # the stage stopped there: nothing to evaluate
    assert "Fashion-MNIST file" in (tmp_path / "out" / "main.log").read_text()


def test_unknown_stage_is_refused(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "benchmark"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown stage 'benchmark'" in proc.stderr


def test_the_cifar_stage_stops_in_time_and_continues(tmp_path):
    """The cifar stage runs the CIFAR-10 study for GPU_CHECK_CIFAR_S seconds; time up is not a
    failure: the run in progress keeps its checkpoint, and the next call continues the study."""
    from conftest import write_cifar_release

    data = write_cifar_release(tmp_path / "cifar")
    study = tmp_path / "study"
    env = {"GPU_CHECK_CIFAR_DATA": str(data), "GPU_CHECK_CIFAR_S": "20", "GPU_CHECK_CIFAR_OUT": str(study)}
    proc = run_check(tmp_path / "out", "cifar", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "cifar.json").read_text())
    assert summary["ok"] and [s["name"] for s in summary["steps"]] == ["study"]
    log = (tmp_path / "out" / "cifar.log").read_text()
    assert "time is up: call the stage again to continue" in log
    # What the call did stays for the next: finished runs, and the interrupted one's checkpoint when the
    # signal came inside a run (where it lands depends on the machine's speed).
    assert list(study.rglob("result.json")) or list(study.rglob("checkpoint.pt"))


def test_the_profile_stage_writes_every_section_and_a_trace(tmp_path):
    """benchmarks/gpu_profile.py at toy size on the CPU, through the stage: the one command a GPU
    session runs first. Its compile section runs with the eager backend (inductor takes minutes
    on the CPU): each network at the choices `train --compile` makes here, torchvision's first,
    and with opaque pools."""
    proc = run_check(tmp_path, "profile")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "profile.json").read_text())["ok"]
    report = json.loads((tmp_path / "profile" / "profile.json").read_text())
    layers = {(r["layer"], r["choice"]) for r in report["layers"]}
    # every choice a layer has, measured: conv1 both ways, the towers' convolutions both ways
    assert {("conv1", "conv1=direct"), ("conv1", "conv1=s2d"), ("conv4", "towers=grouped"),
            ("conv4", "towers=split"), ("pool1", "pools=native")} <= layers
    assert all(r["forward_ms"] > 0 and r["input_grad_ms"] > 0 for r in report["layers"])
    assert all("weight_grad_ms" in r for r in report["layers"] if r["layer"].startswith("conv"))
    # the host time of each choice of the layers with the project's own kernels (one each on the CPU)
    assert [(r["layer"], r["choice"]) for r in report["host"]] == [("norm1", "lrn=torch"), ("pool1", "pools=native"),
                                                                   ("pool5", "pools=native")]
    assert all(r["host_us"] > 0 for r in report["host"])
    configs = {r["config"] for r in report["steps"]}
    assert len(configs) == 6 and all(r["images_per_sec"] > 0 for r in report["steps"])  # 4 paper, 2 torchvision
    assert report["kernels"] and (tmp_path / "profile" / "trace.json").stat().st_size > 0
    assert "## steps" in (tmp_path / "profile" / "profile.txt").read_text()
    compiled = [c["config"] for c in report["compiled"]]
    # first each network at the CPU's choices (the plain computation), as `train --compile` runs it
    assert compiled[:2] == ["torchvision conv1=direct", "paper towers=grouped conv1=direct lrn=torch"]
    assert {"torchvision conv1=direct pools=opaque", "paper towers=grouped conv1=direct lrn=torch pools=opaque"} \
        <= set(compiled)
    assert len(compiled) == len(set(compiled)) and all(c.get("images_per_sec", 0) > 0 for c in report["compiled"])


def test_the_decode_stage_measures_decoding_alone_beside_the_step_and_in_the_pipeline(tmp_path):
    """benchmarks/decode_overlap.py at toy size on the CPU (decode_jpeg on the CPU, the package's
    DeviceDecoder and training step): every section measured, the pipeline's both ways."""
    proc = run_check(tmp_path, "decode")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "decode.json").read_text())["ok"]
    report = json.loads((tmp_path / "decode" / "decode_overlap.json").read_text())
    sections = ["decode (main thread)", "step (streamed)", "concurrent: decode thread",
                "gil: decode thread beside pure Python", "pipeline: DeviceDecoder (thread)",
                "pipeline: decode inline after the step", "process: decoding process beside the step loop"]
    assert all(report[s] > 0 for s in sections), {s: report.get(s) for s in sections}


def test_the_profile_on_cuda_steps_and_compiles_each_network_with_the_triton_pools():
    """What the steps and compile sections take on a GPU (their choice, not their timing, which
    needs one): each network at its defaults with PyTorch's pools and with the Triton pools;
    compiled, the Triton pools before the opaque ones; each label once."""
    import types

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_profile as gp

    args = types.SimpleNamespace(device=torch.device("cuda"))
    labels = [gp.label(c) for c in gp.configs(args)]
    assert len(labels) == len(set(labels))
    for variant in ("paper", "torchvision"):
        base = gp.default_config(variant, args)
        assert {gp.label(dict(base, pools=p)) for p in ("native", "triton")} <= set(labels)
    compiled = [gp.label(c) for c in gp.compile_candidates([], 256, args)]
    for variant in ("paper", "torchvision"):
        d = gp.label(gp.default_config(variant, args, "compiled"))
        assert compiled.index(d + " pools=triton") < compiled.index(d + " pools=opaque")


def test_the_profile_runs_only_the_sections_named(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"), "--out", str(tmp_path),
                           "--smoke", "--sections", "layers"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["layers"] and not {"host", "steps", "graphed", "kernels", "lrn_band", "compiled"} & set(report)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"), "--out", str(tmp_path),
                           "--smoke", "--sections", "layers,stepz"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "unknown section(s) stepz" in done.stderr


def test_the_profile_times_the_band_lrn_kernels_launch_settings_and_checks_their_results():
    """The lrn_band section through Triton's interpreter at toy size: two settings whose grids
    differ (64 and 128 positions a program) at both LRN layers, forward and backward, each
    computing what the default does; a grid that missed positions would leave them unwritten."""
    from conftest import run_interpreted

    pytest.importorskip("triton")
    rows = run_interpreted(textwrap.dedent(f"""
        import json, sys, types, torch
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        import gpu_profile as gp
        args = types.SimpleNamespace(device=torch.device("cpu"), batches=[2], size=67, bf16=False)
        print(json.dumps(gp.lrn_band(args, gp.Timer(args.device, 0, 1))))
    """))
    assert rows[0]["layer"] == "copy" and rows[0]["gb_per_s"] > 0
    timed = rows[1:]
    assert {(r["layer"], r["pass"], r["block_p"]) for r in timed} == {
        (layer, direction, p) for layer in ("norm1", "norm2") for direction in ("forward", "backward") for p in (64, 128)}
    assert all(r["ms"] > 0 and r["gb_per_s"] > 0 for r in timed)
    assert all(r["max_diff"] <= 1e-6 for r in timed), [r["max_diff"] for r in timed]


def test_the_profile_times_the_triton_pools_launch_settings_and_checks_their_results():
    """The pool_tiles section through Triton's interpreter at toy size: two settings whose grids
    differ (32 x 32 and 16 x 64 positions by channels a program) at pool5, forward and backward,
    each computing what the default does."""
    from conftest import run_interpreted

    pytest.importorskip("triton")
    rows = run_interpreted(textwrap.dedent(f"""
        import json, sys, types, torch
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        import gpu_profile as gp
        args = types.SimpleNamespace(device=torch.device("cpu"), batches=[2], size=99, bf16=False)
        print(json.dumps(gp.pool_tiles(args, gp.Timer(args.device, 0, 1))))
    """))
    assert {(r["layer"], r["pass"], r["block_p"], r["block_c"]) for r in rows} == {
        ("pool5", direction, p, c) for direction in ("forward", "backward") for p, c in ((32, 32), (16, 64))}
    assert all(r["ms"] > 0 and r["gb_per_s"] > 0 and r["max_diff"] == 0 for r in rows), rows


def test_the_setup_stage_checks_every_package_the_project_names(monkeypatch):
    """benchmarks/gpu_env.py's lists against pyproject.toml: a dependency added to the package or
    its tests and not to the lists would be found missing on the GPU machine only when a test
    failed there, instead of being named by the setup stage with the command that carries it."""
    import re
    import tomllib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_env

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in requirements}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = names(project["dependencies"] + project["optional-dependencies"]["test"])
    checked = set(gpu_env.NEEDED.values()) | set(gpu_env.FOR_TESTS.values())
    assert named - gpu_env.NOT_CHECKED <= checked, named - gpu_env.NOT_CHECKED - checked
    assert set(gpu_env.NEEDED.values()) >= names(project["dependencies"])  # the package's own, as such
