"""GPU paths: skipped without CUDA (see conftest.py); run them on a GPU machine with `pytest -m gpu`
(benchmarks/gpu_check.sh runs them as its `tests` stage)."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.training import distributed
from alexnet.training.config import OptimConfig
from alexnet.data import packed
from alexnet.data.loader import Request, TensorBatches, build
from alexnet.data.transforms import Normalizer, TrainAugment
from alexnet.data.ycc import Planes420
from alexnet.models.lrn import local_response_norm
from alexnet.training.runtime import Runtime
from alexnet.training.train import Learner, LRSchedule, build_optimizer, make_scaler, set_lr, train_one_epoch, train_step
from conftest import write_tree

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_compiled_lrn_matches_the_reference():
    x = torch.randn(8, 96, 55, 55, device="cuda") * 50
    fast = torch.compile(local_response_norm)
    torch.testing.assert_close(fast(x), torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("kernel", ["shift", "band"])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_fused_lrn_on_the_gpu_matches_the_fp64_formula_at_the_papers_shapes(dtype, groups, kernel, layout):
    """The Triton kernels compiled for the device (the suite checks them interpreted on the CPU)."""
    from alexnet.models import lrn_triton
    from alexnet.models.lrn import local_response_norm_reference

    torch.manual_seed(0)
    x64 = (torch.randn(4, 96, 55, 55, device="cuda", dtype=torch.float64) * 120).relu()
    fmt = getattr(torch, layout + "_format" if layout == "contiguous" else layout)
    x = x64.to(dtype).contiguous(memory_format=fmt).requires_grad_()
    xr = x.detach().double().requires_grad_()
    want = torch.cat([local_response_norm_reference(p) for p in xr.chunk(groups, 1)], 1)
    g = torch.randn_like(want)
    want.backward(g)
    y = lrn_triton.local_response_norm(x, 5, 1e-4, 0.75, 2.0, groups, kernel)
    y.backward(g.to(dtype))
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert ((y.double() - want).abs().max() / want.abs().max()).item() < tol
    assert ((x.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()).item() < tol
    assert y.is_contiguous(memory_format=fmt) and y.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 96, 55, 55), (64, 256, 27, 27), (64, 64, 55, 55), (64, 192, 27, 27)])
def test_triton_pools_on_the_gpu_match_pytorchs_at_the_networks_shapes(dtype, shape):
    """The Triton max pool compiled for the device (the suite checks it interpreted): the same
    maxima as PyTorch's CUDA pool, and gradients equal to the fp64 sum of what PyTorch routes."""
    from alexnet.models import pool_triton

    torch.manual_seed(0)
    x = (torch.randn(*shape, device="cuda") * 3).relu().round().to(dtype)  # ties, as ReLU maps have
    x = x.contiguous(memory_format=torch.channels_last)
    want = F.max_pool2d(x, 3, 2)
    g = torch.randn_like(want)
    xr, xa = x.double().requires_grad_(), x.double().requires_grad_()
    F.max_pool2d(xr, 3, 2).backward(g.double())
    F.max_pool2d(xa, 3, 2).backward(g.double().abs())
    xt = x.clone().requires_grad_()
    y = pool_triton.max_pool2d(xt, 3, 2)
    y.backward(g)
    assert torch.equal(y, want) and y.is_contiguous(memory_format=torch.channels_last)
    assert ((xt.grad.double() - xr.grad).abs() <= 2 * torch.finfo(dtype).eps * xa.grad).all()
    assert xt.grad.is_contiguous(memory_format=torch.channels_last)


def test_compiled_networks_with_triton_pools_train_as_eager_ones_do():
    """Inductor keeps the pools as the registered operators: one compiled step gives the
    gradients of one eager step (fp32, no dropout)."""
    from alexnet.models import fastconv

    torch.manual_seed(0)
    base = fastconv.use(create_model("paper", num_classes=10, init="kaiming", dropout=0.0).cuda(), pools="triton")
    x, y = torch.randn(8, 3, 227, 227, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    grads = []
    for model in (base, torch.compile(copy.deepcopy(base))):
        F.cross_entropy(model(x), y).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_bf16_channels_last_forward_agrees_with_fp32(variant):
    torch.manual_seed(0)
    model = create_model(variant, init="kaiming").cuda().eval()
    x = torch.randn(16, 3, model.info.input_size, model.info.input_size, device="cuda")
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = cl(x.contiguous(memory_format=torch.channels_last)).float()
    assert F.cosine_similarity(ref, fast).min() > 0.99


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_bf16_training_step_moves_the_weights_as_fp32_does(variant):
    """One real step (forward, backward, SGD update) with bf16 autocast and channels-last,
    against plain fp32: every layer's update points the same way and has the same size.

    How close is close is set by a control computed alongside: the fp32 step on the input and
    weights rounded once to bf16. At initialisation on random data the early layers' gradients
    are sums that mostly cancel, so that single rounding alone turns conv1's update by
    1 - cos = 0.015 (CPU, 2026-11-26); autocast rounds at every layer, and may drift up to four
    times as far (never less than cos 0.99 is demanded). Weights kept in bf16, a lost loss
    scale or a gradient routed to the wrong layer land far outside that."""
    torch.manual_seed(0)
    base = create_model(variant, num_classes=10, init="kaiming", dropout=0.0).cuda()
    size = base.info.input_size
    x, y = torch.randn(32, 3, size, size, device="cuda") * 60, torch.randint(0, 10, (32,), device="cuda")

    def update(dtype, channels_last, inputs=x, round_weights=False):
        model = copy.deepcopy(base)
        if round_weights:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.bfloat16().float())
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        rt = Runtime(CUDA, dtype, channels_last, distributed.Env())
        opt = build_optimizer(model, OptimConfig(lr=0.01))
        set_lr(opt, 0.01)
        train_step(model, opt, make_scaler(rt), rt, rt.prepare(inputs), y)
        return {n: (p.detach() - before[n]).double().flatten() for n, p in model.named_parameters()}

    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = update(None, False)
        control = update(None, False, x.bfloat16().float(), round_weights=True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    fast = update(torch.bfloat16, True)
    for name, r in ref.items():
        assert r.norm() > 0 and r.isfinite().all(), name
        cos, cos_control = (F.cosine_similarity(r, u[name], dim=0).item() for u in (fast, control))
        ratio = (fast[name].norm() / r.norm()).item()
        print(f"{variant} {name}: 1-cos bf16 {1 - cos:.2e}, control {1 - cos_control:.2e}; norm ratio {ratio:.4f}")
        assert 1 - cos <= max(4 * (1 - cos_control), 0.01), (name, cos, cos_control)
        assert abs(ratio - 1) < 0.05, (name, ratio)


def test_training_steps_do_not_wait_for_the_host():
    """Once warm, an epoch of steps runs without a host synchronisation per step: the data
    and its order live on the device, the PCA constants too, and metrics stay there."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (160, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (160,))
    batches = TensorBatches(images, labels, 76, batch_size=16, shuffle=True, drop_last=True, device=CUDA)
    model = create_model("paper", num_classes=10, init="kaiming").cuda().to(memory_format=torch.channels_last)
    rt = Runtime(CUDA, torch.bfloat16, True, distributed.Env())
    cfg = OptimConfig(lr=0.01, epochs=2)
    opt, schedule, scaler = build_optimizer(model, cfg), LRSchedule(cfg, len(batches)), make_scaler(rt)
    augment = TrainAugment(Normalizer.mean_image(torch.full((3, 76, 76), 0.5)).to(CUDA), 67)

    learner = Learner(model, opt, schedule, scaler, augment, rt)

    def epoch(e):
        return train_one_epoch(learner, batches, e, torch.Generator(device=CUDA).manual_seed(e), progress=False)

    epoch(0)  # warm-up: cuDNN's algorithm search may synchronise
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = epoch(1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert stats["train_images"] == 160
    assert len(syncs) <= 3, syncs  # the end of the epoch's reduction, not one per step (10 steps)


def test_gpu_jpeg_decode_matches_cpu(tmp_path):
    tree = write_tree(tmp_path / "src", per_class=4, size=64)
    packed.prepare(tree, tmp_path / "dst", size=64, workers=1, progress=False)
    req = Request(splits=("val",), batch_size=4, workers=0)
    cpu = build(str(tmp_path / "dst"), 64, CUDA, req).val
    gpu = build(str(tmp_path / "dst"), 64, CUDA, Request(splits=("val",), batch_size=4, workers=0,
                                                         gpu_decode=True)).val
    for a, b in zip(cpu, gpu):
        assert a.images.shape == b.images.shape
        assert (a.images.float() - b.images.float()).abs().mean() < 2  # decoders may round differently


def test_gpu_decode_while_a_step_is_in_flight(tmp_path):
    """nvJPEG's hardware engine can write its output before work queued on the stream has
    run, into memory that work still reads (pytorch/vision pull request 9606). Here every
    batch is decoded while ~tens of ms of queued work still reads tensors already freed to
    PyTorch's cache: that work's results, the images, the labels and the batch count must
    all be right."""
    tree = write_tree(tmp_path / "src", per_class=16, size=64)
    packed.prepare(tree, tmp_path / "dst", size=64, workers=1, progress=False)
    req = Request(splits=("train",), batch_size=8, workers=0, seed=1)
    expected = [(b.images.cpu(), b.labels.cpu()) for b in build(str(tmp_path / "dst"), 64, CUDA, req).train]
    gpu = build(str(tmp_path / "dst"), 64, CUDA, Request(splits=("train",), batch_size=8, workers=0, seed=1,
                                                         gpu_decode=True)).train
    a = torch.randn(2048, 2048, device="cuda")
    got, sums = [], []
    for batch in gpu:  # each next() decodes while the previous iteration's work is still queued
        got.append((batch.images.clone(), batch.labels.clone()))
        held = [torch.full((256, 1024), float(i), device="cuda") for i in range(32)]
        for _ in range(20):
            a = torch.tanh(a @ a)  # keeps the stream busy
        sums.append(torch.stack([h.sum() for h in held]))
        del held  # back to the cache, with reductions of them still queued
    torch.cuda.synchronize()
    assert len(got) == len(expected) == 6
    want = torch.arange(32, dtype=torch.float32, device="cuda") * 256 * 1024
    assert all(torch.equal(s, want) for s in sums), "queued work read memory the decoder overwrote"
    for (img, lab), (ref_img, ref_lab) in zip(got, expected):
        assert torch.equal(lab.cpu(), ref_lab)
        assert (img.cpu().float() - ref_img.float()).abs().mean() < 2


@pytest.mark.parametrize("two_devices", [False, True])
def test_two_tower_split_on_cuda_matches_one_device(two_devices):
    """The paper's model-parallel split: both towers on cuda:0, and on cuda:0 and cuda:1."""
    from alexnet.models.towers import TwoTowerAlexNet

    if two_devices and torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    torch.manual_seed(0)
    single = create_model("paper", num_classes=1000, dropout=0.0, init="kaiming").cuda()
    split = TwoTowerAlexNet(single, ("cuda:0", "cuda:1" if two_devices else "cuda:0"))
    x = torch.randn(8, 3, 227, 227, device="cuda") * 60
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32 to compare
    try:
        with torch.no_grad():
            reference = single(x)
            torch.testing.assert_close(split(x), reference, rtol=1e-4, atol=1e-5)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fast = split(x).float()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert F.cosine_similarity(reference, fast).min() > 0.99


def test_fp32_by_name_turns_tf32_off_and_the_other_precisions_on():
    """--precision fp32 promises full fp32 products on a GPU (the cifar preset relies on it)."""
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.training.runtime import resolve_runtime

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for precision, tf32 in (("fp32", False), ("bf16", True), ("fp32", False)):
            resolve_runtime(apply_overrides(TrainConfig(), {"device": "cuda", "precision": precision}))
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (tf32, tf32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("pools", ["native", "triton"])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_graphed_steps_train_as_the_eager_steps_do(variant, pools):
    """--cuda-graphs: 3 eager steps, a capture, replays; the same weights as eager steps on the
    same batches (fp32, no dropout), the rate changed between steps read from its tensor; with
    PyTorch's pools and with the Triton pools that --pools auto takes graphed."""
    from alexnet.models import fastconv
    from alexnet.training.graphs import GraphedStep
    from alexnet.training.train import set_lr, train_step

    torch.manual_seed(0)
    base = fastconv.use(create_model(variant, num_classes=10, init="kaiming", dropout=0.0).cuda(), pools=pools)
    models = [copy.deepcopy(base), copy.deepcopy(base)]
    opts = [build_optimizer(m, OptimConfig(lr=0.01)) for m in models]
    rt = Runtime(CUDA, None, False, distributed.from_environment(), None)
    scaler = make_scaler(rt)
    size = base.info.input_size
    batches = [(torch.randn(8, 3, size, size, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))
               for _ in range(7)]
    graphed = GraphedStep(train_step)
    for i, (x, y) in enumerate(batches):
        for model, opt, step in zip(models, opts, (train_step, graphed)):
            set_lr(opt, 0.01 / (i + 1))
            step(model, opt, scaler, rt, x, y)
    assert graphed.graph is not None
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_the_trainer_replays_its_step_by_default_and_resumes_graphed(tmp_path, fmnist_dir, capsys):
    """--cuda-graphs auto on one GPU: the paper network's run says it replays its step, and
    trains as the eager run does; a run cut after one epoch and resumed captures again, over the
    optimizer state it loaded, and ends where the others do (fp32, no dropout, the same pools:
    cuDNN's own nondeterminism aside, the same arithmetic)."""
    from alexnet.training.config import TrainConfig
    from alexnet.training.train import fit
    from conftest import tiny_config

    def run(name, epochs, **kw):
        cfg = tiny_config(tmp_path / name, epochs=epochs, fashion_mnist_dir=fmnist_dir, precision="fp32",
                          dropout=0.0, pools="triton", **kw)
        return fit(cfg), capsys.readouterr().out

    (graphed, said), (eager, said_eager) = run("graphed", 3), run("eager", 3, cuda_graphs="off")
    assert "the step replayed from a CUDA graph" in said and "CUDA graph" not in said_eager
    assert "could not capture" not in said  # a failed capture trains on eagerly, with a warning
    run("cut", 1)
    resumed = fit(TrainConfig(out=str(tmp_path / "cut")), resume=True, overrides={"epochs": 3})
    said = capsys.readouterr().out
    assert "the step replayed from a CUDA graph" in said and "could not capture" not in said
    want = [h["train_loss"] for h in eager["history"]]
    assert len(set(want)) == 3
    for result in (graphed, resumed):
        assert [h["train_loss"] for h in result["history"]] == pytest.approx(want, rel=1e-3)


def test_fused_augmentation_on_the_gpu_is_the_tensor_path():
    """The Triton augmentation pass compiled for the device (the suite checks it interpreted)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 256, 256), dtype=torch.uint8, device="cuda")
    norm = Normalizer.mean_image(torch.rand(3, 256, 256, device="cuda")).to("cuda")
    plain = TrainAugment(norm, 227, fused=False)(x, torch.Generator(device="cuda").manual_seed(1))
    fused = TrainAugment(norm, 227, dtype=torch.bfloat16, channels_last=True)(
        x, torch.Generator(device="cuda").manual_seed(1))
    assert fused.dtype == torch.bfloat16 and fused.is_contiguous(memory_format=torch.channels_last)
    assert ((fused.float() - plain).abs().max() / plain.abs().max()).item() < 8e-3
    # in fp32 the same values to the last bit: each operation rounded as the tensor path rounds it
    assert torch.equal(TrainAugment(norm, 227, fused=True)(x, torch.Generator(device="cuda").manual_seed(1)), plain)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
@pytest.mark.parametrize("conv1", ["direct", "s2d"])
def test_a_channels_last_network_stays_channels_last_on_cuda(variant, conv1):
    """Every layer's output, whichever way conv1 runs: an NCHW map after conv1 by space-to-depth
    made the LRN kernels and the layers after them slower on an H200 (2026-11-26)."""
    from alexnet.models import fastconv

    model = fastconv.use(create_model(variant, num_classes=10).cuda().to(memory_format=torch.channels_last),
                         conv1=conv1)
    size = 227 if variant == "paper" else 224
    x = torch.randn(4, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for name, module in model.features.named_children():
            x = module(x)
            assert x.is_contiguous(memory_format=torch.channels_last), f"{name} gave NCHW"


def test_the_420_cache_converts_on_the_gpu_as_on_the_cpu(tmp_path):
    """--cache-format 420: held in GPU memory or pinned host memory, the planes become the same
    RGB on the GPU as the CPU makes of them, in the same order: the training batches stay planes
    there, which the fused augmentation converts as it crops."""
    tree = write_tree(tmp_path / "src", per_class=6, size=40)
    packed.prepare(tree, tmp_path / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    req = dict(splits=("train",), batch_size=4, workers=1, seed=3)
    cpu = build(str(tmp_path / "dst"), 32, torch.device("cpu"), Request(**req, cache="host", cache_format="420"))
    for where in ("gpu", "host"):
        gpu = build(str(tmp_path / "dst"), 32, CUDA, Request(**req, cache=where, cache_format="420"))
        assert gpu.train.pixels.device.type == ("cuda" if where == "gpu" else "cpu")
        for a, b in zip(cpu.train, gpu.train):
            assert isinstance(b.images, Planes420) and b.images.device.type == "cuda"
            assert torch.equal(a.labels, b.labels.cpu())
            assert (a.images.int() - b.images.rgb().cpu().int()).abs().max() <= 1  # float rounding order only
            norm = Normalizer.channel().to(CUDA)
            fused = TrainAugment(norm, 28, fused=True)(b.images, torch.Generator(CUDA).manual_seed(0))
            plain = TrainAugment(norm, 28, fused=False)(b.images, torch.Generator(CUDA).manual_seed(0))
            assert ((fused - plain).abs().max() / plain.abs().max()) < 1e-5  # the same pixels: rounding as the CPU's
        gpu.close()
    cpu.close()
