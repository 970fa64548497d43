"""The other ways to compute the same convolutions (fastconv.py): equal outputs and gradients
in fp64, the same parameters and state dict."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.models import fastconv


def _grads(model, x):
    x = x.clone().requires_grad_()
    out = model(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("variant,size", [("paper", 227), ("torchvision", 224), ("paper", 71), ("paper", 80),
                                          ("paper", 229)])  # 229: pixels conv1 never reads, cut
def test_space_to_depth_conv1_and_split_towers_give_the_same_outputs_and_gradients(variant, size):
    torch.manual_seed(0)
    model = create_model(variant, num_classes=10, dropout=0.0, init="kaiming").double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    before = dict(model.state_dict())
    want = _grads(model.features, x)  # what the classifier does with equal features is not in question
    fastconv.use(model, towers="split", conv1="s2d")
    assert isinstance(model.features[0], fastconv.SpaceToDepthConv2d)  # conv1, in either naming
    grouped = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert all(isinstance(m, fastconv.SplitConv2d) for m in grouped) and len(grouped) == (3 if variant == "paper"
                                                                                            else 0)
    got = _grads(model.features, x)
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-10, atol=1e-10)
    after = model.state_dict()  # the same keys, shapes and tensors: checkpoints and imports see nothing
    assert list(after) == list(before) and all(after[k] is before[k] or after[k].data_ptr() == before[k].data_ptr()
                                               for k in before)
    fastconv.use(model)  # and back
    assert type(model.features[0]) is torch.nn.Conv2d
    torch.testing.assert_close(_grads(model.features, x)[0], want[0], rtol=1e-10, atol=1e-10)


def test_the_folded_kernel_is_the_kernel_rearranged_not_a_learned_copy():
    """A single weight moved in the 11x11 kernel moves exactly one entry of the folded 3x3x48 one,
    at (channel c*16 + r*4 + r', block a, a') for kernel row 4a + r, column 4a' + r'."""
    conv = fastconv.SpaceToDepthConv2d(3, 2, 11, stride=4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 2, 9, 6] = 1.0  # row 9 = 4*2 + 1, column 6 = 4*1 + 2
    folded = conv.folded_weight()
    assert folded.shape == (2, 48, 3, 3) and folded.sum() == 1
    assert folded[1, 2 * 16 + 1 * 4 + 2, 2, 1] == 1


def test_an_optimizer_built_before_the_swap_still_trains_the_swapped_model():
    model = create_model("paper", num_classes=10, init="kaiming")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fastconv.use(model, towers="split", conv1="s2d")
    w = model.features.conv1.weight.detach().clone()
    model(torch.randn(2, 3, 227, 227)).sum().backward()
    opt.step()
    assert not torch.equal(model.features.conv1.weight, w)


def test_cuda_graphs_are_refused_where_a_step_checks_on_the_host_or_there_is_no_gpu(tmp_path, capsys):
    from alexnet.cli import main
    from alexnet.training.config import TrainConfig, apply_overrides, validate
    from alexnet.errors import AlexNetError

    for bad in ({"precision": "fp16"}, {"fused": False}, {"skip_nonfinite": 3}):
        with pytest.raises(AlexNetError, match="--cuda-graphs needs bf16 or fp32, --fused"):
            validate(apply_overrides(TrainConfig(), {"cuda_graphs": "on", **bad}))
    if not torch.cuda.is_available():
        assert main(["train", "--cuda-graphs", "--device", "cpu", "--out", str(tmp_path / "r"), "--epochs", "1",
                     "--limit-train", "64", "--limit-val", "32", "--resize", "76", "--crop", "67"]) == 2
        assert "--cuda-graphs needs a CUDA device and one process" in capsys.readouterr().err


def test_cuda_graphs_auto_replays_only_where_measured_faster():
    """auto: the paper and torchvision networks on one CUDA device, eager, with a step that can be
    captured; never on the CPU, under torchrun, compiled, or for a network not measured; on: an
    error where it cannot hold, not a silent eager run."""
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.training.graphs import wanted
    from alexnet.errors import AlexNetError

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")

    def graphed(device=cuda, world=1, **overrides):
        return wanted(apply_overrides(TrainConfig(), overrides), device, world)

    assert graphed() and graphed(variant="torchvision") and graphed(precision="fp32")
    assert not graphed(device=cpu) and not graphed(world=2) and not graphed(compile=True)
    for other in ("paper-half", "lenet5", "cifar-18pct"):
        assert not graphed(variant=other)
    for host_check in ({"precision": "fp16"}, {"fused": False}, {"skip_nonfinite": 2}, {"model_parallel": "auto"}):
        assert not graphed(**host_check)
    assert not graphed(cuda_graphs="off")
    assert graphed(cuda_graphs="on", variant="lenet5") and graphed(cuda_graphs="on", compile=True)
    for device, world in ((cpu, 1), (cuda, 2)):
        with pytest.raises(AlexNetError, match="needs a CUDA device and one process"):
            graphed(device, world, cuda_graphs="on")


def test_the_switch_reads_as_a_boolean_flag_and_old_runs_keep_their_choice():
    """--cuda-graphs is on, --no-cuda-graphs off, neither auto, and neither swallows the
    positional argument after it; --set takes a boolean too; a run recorded before auto (true or
    false) resumes as it ran."""
    from alexnet.cli import build_parser
    from alexnet.training.config import TrainConfig, from_dict, parse_setting, to_dict

    parser = build_parser()
    for argv, value in ((["--cuda-graphs"], "on"), (["--no-cuda-graphs"], "off"), ([], None)):
        assert getattr(parser.parse_args(["train", *argv]), "cuda_graphs", None) == value
        args = parser.parse_args(["finetune", *argv, "weights.safetensors"])
        assert (getattr(args, "cuda_graphs", None), args.source) == (value, "weights.safetensors")
    assert TrainConfig().cuda_graphs == "auto"
    for text, value in (("cuda-graphs=true", "on"), ("cuda-graphs=no", "off"), ("cuda-graphs=auto", "auto")):
        assert parse_setting(text) == ("cuda_graphs", value)
    for old, now in ((True, "on"), (False, "off")):
        assert from_dict({**to_dict(TrainConfig()), "cuda_graphs": old}).cuda_graphs == now


def test_a_rate_held_as_a_tensor_is_filled_in_place():
    """What a CUDA graph needs: set_lr writes into the tensor the captured step reads."""
    from alexnet.training.graphs import tensor_lr
    from alexnet.training.train import set_lr

    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p], "lr_mult": 2.0}], lr=0.1)
    tensor_lr(opt)
    held = opt.param_groups[0]["lr"]
    set_lr(opt, 0.05)
    assert opt.param_groups[0]["lr"] is held and held.item() == pytest.approx(0.1)


def test_opaque_pools_are_pytorchs_own_and_compile_keeps_them_whole():
    """The same outputs and gradients, bit for bit (the same kernels), and a compiled graph in
    which each pool is one alexnet::max_pool2d call, not max_pool2d_with_indices' own lowering."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming")
    x = torch.randn(2, 3, 99, 99)
    want = _grads(model, x)
    fastconv.use(model, pools="opaque")
    assert sum(isinstance(m, fastconv.OpaqueMaxPool2d) for m in model.modules()) == 3
    got = _grads(model, x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    seen = []

    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    torch._dynamo.reset()
    torch.compile(model.features, backend=backend, fullgraph=True)(x)
    assert sum("alexnet.max_pool2d" in t for t in seen) == 3 and not any("max_pool2d_with" in t for t in seen)
    fastconv.use(model)
    assert not any(isinstance(m, fastconv.OpaqueMaxPool2d) for m in model.modules())


def test_space_to_depth_folds_a_channels_last_image_into_channels_last_blocks():
    """The reordering is pixel_unshuffle's exactly, stored channels-last in one copy on any
    device (PyTorch's own keeps the format on the CPU only; tests/test_gpu.py checks every
    layer's output on CUDA)."""
    y = torch.randn(2, 3, 12, 16).to(memory_format=torch.channels_last)
    folded = fastconv._unshuffle(y, 4, torch.channels_last)
    assert torch.equal(folded, F.pixel_unshuffle(y.contiguous(), 4))
    assert folded.is_contiguous(memory_format=torch.channels_last) and not folded.is_contiguous()
    assert fastconv._memory_format(y) == torch.channels_last
    assert fastconv._memory_format(y.contiguous()) == torch.contiguous_format


def test_auto_takes_a_measured_choice_only_where_one_was_measured_and_a_named_one_always_wins():
    """On the CPU every network keeps the plain computation (nothing measured there beat it);
    on CUDA both networks take space-to-depth in every mode, and the Triton pools only when the
    step is replayed from a CUDA graph (eagerly their host time lost at batch 256; compiled,
    they were not measured faster); the half-width network, never measured, keeps the
    plain computation; no network takes the opaque pools (never clearly faster compiled); a
    choice the user names is kept as named; a mode not measured is refused."""
    from alexnet.models.registry import VARIANTS

    for variant in VARIANTS:
        for step_mode in fastconv.MODES:
            assert fastconv.resolve(variant, "cpu", step_mode) == fastconv.PLAIN
    for variant in ("paper", "torchvision"):
        for step_mode in ("eager", "compiled"):
            assert fastconv.resolve(variant, "cuda", step_mode) == {"towers": "grouped", "conv1": "s2d",
                                                                     "pools": "native"}
        assert fastconv.resolve(variant, "cuda", "graphed") == {"towers": "grouped", "conv1": "s2d", "pools": "triton"}
    for step_mode in fastconv.MODES:
        assert fastconv.resolve("paper-half", "cuda", step_mode) == fastconv.PLAIN  # not measured
    assert fastconv.resolve("torchvision", "cuda", "graphed", channels_last=False) == fastconv.PLAIN  # NHWC only
    assert fastconv.resolve("torchvision", "cuda", "graphed", conv1="direct", pools="native")["conv1"] == "direct"
    assert fastconv.resolve("paper", "cpu", "eager", "split", "s2d", "opaque") == {"towers": "split", "conv1": "s2d",
                                                                                   "pools": "opaque"}
    with pytest.raises(ValueError, match="mode must be one of"):
        fastconv.resolve("paper", "cuda", "fused")


def test_the_trainers_mode_is_compiled_over_graphed_over_eager():
    """`train`'s --compile and --cuda-graphs name the row of measured choices it takes: a
    compiled step has been measured only ungraphed, so compiling decides."""
    assert fastconv.mode(False) == fastconv.mode(False, False) == "eager"
    assert fastconv.mode(False, True) == "graphed"
    assert fastconv.mode(True) == fastconv.mode(True, True) == "compiled"
