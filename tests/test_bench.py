"""The benchmark harness runs every measurement and reports consistent ratios (no timing asserted)."""

import pytest

from alexnet.bench import bench_inference, run


def test_bench_reports_every_figure(image_tree):
    result = run(["torchvision"], device="cpu", batch_size=4, steps=1, warmup=1, images=str(image_tree),
                 workers=0, log=lambda _: None)
    figures = {(f["what"], f["variant"]): f for f in result["figures"]}
    assert {w for w, _ in figures} == {"model", "decode", "loader", "end-to-end", "baseline"}
    assert all(f["images_per_sec"] > 0 and f["peak_memory_mib"] > 0 for f in figures.values())
    model = figures[("model", "torchvision")]
    assert 0 < model["fraction_of_peak"] and model["settings"]["precision"] == "float32"
    e2e = figures[("end-to-end", "torchvision")]["images_per_sec"]
    base = next(f for (w, _), f in figures.items() if w == "baseline")["images_per_sec"]
    assert result["ratios"]["torchvision: end-to-end / baseline"] == pytest.approx(e2e / base)
    decode = figures[("decode", "-")]["images_per_sec"]
    assert result["decode_cores"]["torchvision: CPU cores to decode at the model-only rate"] == pytest.approx(
        model["images_per_sec"] / decode)


def test_inference_bench_compares_with_the_baseline():
    result = bench_inference(batch_sizes=(1, 2), steps=1, warmup=1, log=lambda _: None)
    names = {f["variant"] for f in result["figures"]}
    assert "torchvision eager fp32 (baseline)" in names and "ONNX Runtime fp32 (alexnet export)" in names
    assert len(result["figures"]) == 10 and len(result["ratios"]) == 8



def test_bad_bench_input_fails_before_measuring(tmp_path):
    from alexnet import AlexNetError

    for kwargs, message in [(dict(steps=-1), "--steps must not be negative"),
                            (dict(batch_size=-3), "--batch-size must not be negative"),
                            (dict(images=str(tmp_path)), "no train/ folder"),
                            (dict(packed=str(tmp_path)), "not a packed dataset"),
                            (dict(gpu_decode=True), "--gpu-decode needs packed data")]:
        with pytest.raises(AlexNetError, match=message):
            run(["torchvision"], device="cpu", log=lambda _: None, **kwargs)
    with pytest.raises(AlexNetError, match="--warmup must not be negative"):
        bench_inference(warmup=-1, log=lambda _: None)
