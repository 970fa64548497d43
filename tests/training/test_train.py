import json
import math

import pytest
import torch
import torch.nn.functional as F

from alexnet import AlexNetError, create_model
from alexnet.training.checkpoint import load_model, read_weights
from alexnet.training.config import OptimConfig, TrainConfig, apply_overrides
from alexnet.data import fashion_mnist
from alexnet.data.loader import resize_batch
from alexnet.training import train
from alexnet.training.train import LRSchedule, fit

from conftest import tiny_config

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
    multi = LRSchedule(OptimConfig(lr=0.001, schedule="multistep", milestones="16,18", epochs=20), 100)
    assert [round(multi.lr(e, s), 9) for e, s in ((0, 0), (15, 99), (16, 0), (17, 99), (18, 0), (19, 99))] == \
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    constant = LRSchedule(OptimConfig(lr=0.004, schedule="multistep", epochs=40), 100)
    assert constant.lr(0, 0) == constant.lr(39, 99) == 0.004
    for bad in ("16,x", "18,16", "0,3", "4,4"):
        with pytest.raises(AlexNetError, match="--milestones"):
            train.validate(apply_overrides(TrainConfig(), {"schedule": "multistep", "milestones": bad}))


def test_training_stops_once_the_training_error_reaches_the_mark(tmp_path, fmnist_dir):
    """--stop-at-train-error: the run ends after the epoch in which the smoothed training error
    first reaches the mark; a resumed run that already got there trains no further."""
    with pytest.raises(AlexNetError, match="add --trace-steps"):
        train.validate(apply_overrides(TrainConfig(), {"stop_at_train_error": 0.5}))
    cfg = tiny_config(tmp_path / "run", variant="lenet5", resize=36, crop=32, epochs=4, limit_train=256,
                      trace_steps=True, stop_at_train_error=0.95, fashion_mnist_dir=fmnist_dir)
    result = fit(cfg)
    assert len(result["history"]) == 1  # 95% error: reached in the first epoch's first tenth
    again = fit(TrainConfig(out=str(tmp_path / "run")), resume=True)
    assert len(again["history"]) == 1


def _two_sgd_steps(model, cfg, grads):
    """Two optimizer steps with the given gradients, the schedule's rate set as the loop sets it."""
    opt = train.build_optimizer(model, cfg)
    for _ in range(2):
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.grad = grads[name].clone()
        train.set_lr(opt, cfg.lr)
        opt.step()


def _expected_after_two_steps(p0, g, lr, momentum, decay):
    """SGD with momentum as PyTorch writes it: v = mu v + (g + decay p); p -= lr v."""
    v1 = g + decay * p0
    p1 = p0 - lr * v1
    v2 = momentum * v1 + g + decay * p1
    return p1 - lr * v2


@pytest.mark.parametrize("bias_mults, head_mult", [((2.0, 0.0), 10.0), ((1.0, 1.0), 1.0)])
def test_optimizer_gives_each_parameter_its_rate_decay_and_momentum(bias_mults, head_mult):
    """Biases at twice the rate and without decay (cuda-convnet, Caffe), fc8 at head_lr_mult; or,
    with the multipliers at 1, every parameter alike."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10)
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.01, head_lr_mult=head_mult,
                      bias_lr_mult=bias_mults[0], bias_decay_mult=bias_mults[1], fused=False)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    _two_sgd_steps(model, cfg, grads)
    params = dict(model.named_parameters())
    for name in ("features.conv1.weight", "features.conv1.bias", "classifier.fc7.bias",
                 "classifier.fc8.weight", "classifier.fc8.bias"):
        bias = name.endswith("bias")
        lr = 0.1 * (head_mult if "fc8" in name else 1.0) * (bias_mults[0] if bias else 1.0)
        decay = 0.01 * (bias_mults[1] if bias else 1.0)
        expected = _expected_after_two_steps(start[name], grads[name], lr, 0.9, decay)
        torch.testing.assert_close(params[name].detach(), expected, rtol=1e-5, atol=1e-6, msg=name)


def test_freeze_all_but_fc8_trains_only_the_new_layer():
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10)
    train.freeze(model, "all-but-fc8")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    _two_sgd_steps(model, OptimConfig(lr=0.1), grads)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])}
    assert changed == {"classifier.fc8.weight", "classifier.fc8.bias"}


def test_scale_lr_follows_the_linear_scaling_rule():
    """Goyal et al. 2017: the rate grows with the batch, relative to the paper's 128."""
    for batch, lr in [(128, 0.01), (512, 0.04), (64, 0.005)]:
        assert train.base_lr(OptimConfig(lr=0.01, batch_size=batch, scale_lr=True)) == pytest.approx(lr)
    assert train.base_lr(OptimConfig(lr=0.01, batch_size=512)) == 0.01  # off by default
    s = LRSchedule(OptimConfig(lr=0.01, batch_size=1024, scale_lr=True, warmup_epochs=2, schedule="step"), 10)
    assert s.lr(5, 0) == pytest.approx(0.08) and s.lr(0, 0) == pytest.approx(0.08 * 0.1 / 2)


def test_caffe_init_draws_the_hidden_fc_layers_narrower():
    """Caffe's bvlc_alexnet: fc6/fc7 weights N(0, 0.005^2), biases 0.1 where the paper puts 1."""
    torch.manual_seed(0)
    m = create_model("paper", init="caffe")
    stds = {n: float(p.detach().std()) for n, p in m.named_parameters() if n.endswith("weight")}
    assert stds["classifier.fc6.weight"] == pytest.approx(0.005, rel=0.02)
    assert stds["classifier.fc7.weight"] == pytest.approx(0.005, rel=0.02)
    assert stds["classifier.fc8.weight"] == pytest.approx(0.01, rel=0.02)
    assert stds["features.conv3.weight"] == pytest.approx(0.01, rel=0.02)
    assert float(m.classifier.fc6.bias.detach().mean()) == pytest.approx(0.1)
    assert float(m.features.conv3.bias.detach().abs().max()) == 0


def test_each_epoch_and_each_rank_draws_its_own_randomness():
    """seed_epoch: the same (seed, epoch, rank) repeats its crops and dropout masks (exact
    resume); another epoch or rank draws others (no two ranks share augmentations)."""
    cpu = torch.device("cpu")

    def draws(seed, epoch, rank):
        g = train.seed_epoch(seed, epoch, rank, cpu)
        return torch.rand(8, generator=g), torch.rand(8)  # augmentation generator, global RNG (dropout)

    a = draws(0, 3, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, draws(0, 3, 0)))
    for other in (draws(0, 4, 0), draws(0, 3, 1), draws(1, 3, 0)):
        assert not torch.equal(a[0], other[0]) and not torch.equal(a[1], other[1])


def test_fit_in_bf16_with_channels_last(tmp_path, fmnist_dir, monkeypatch):
    """The CPU main job's settings reach the network: its layers compute in bf16 under autocast
    and the images arrive channels-last."""
    from alexnet import models

    seen = []
    real_forward = models.PaperAlexNet.forward

    def spy(self, x):
        out = real_forward(self, x)
        if self.training:
            seen.append((x.is_contiguous(memory_format=torch.channels_last), out.dtype))
        return out

    monkeypatch.setattr(models.PaperAlexNet, "forward", spy)
    result = fit(tiny_config(tmp_path / "run", epochs=1, limit_train=32, limit_val=32, fashion_mnist_dir=fmnist_dir,
                             precision="bf16", channels_last="on"))  # bf16 is emulated, slowly, on CPUs without it
    assert seen and all(cl and dtype == torch.bfloat16 for cl, dtype in seen)
    assert math.isfinite(result["history"][0]["train_loss"])


def test_fit_compiled_equals_fit_eager(tmp_path, fmnist_dir, monkeypatch):
    """--compile wraps the network (here with the aot_eager backend: dynamo's graph and
    AOTAutograd's backward, no C++ build) and trains the same weights, saved without prefixes."""
    calls = []
    real_compile = torch.compile

    def compile_(model, **kw):
        calls.append(type(model).__name__)
        return real_compile(model, backend="aot_eager")

    eager = fit(tiny_config(tmp_path / "eager", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir,
                            dropout=0.0))
    monkeypatch.setattr(torch, "compile", compile_)
    compiled = fit(tiny_config(tmp_path / "compiled", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir,
                               dropout=0.0, compile=True))
    assert calls == ["PaperAlexNet"]
    a = read_weights(tmp_path / "eager" / "model.safetensors")[0]
    b = read_weights(tmp_path / "compiled" / "model.safetensors")[0]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    assert compiled["final"]["top1"] == eager["final"]["top1"]


@pytest.mark.parametrize("flags,kind", [(dict(variant="lenet5", resize=36, crop=32, init="paper"), "ScaledTanh"),
                                        (dict(norm="batch"), "BatchNorm2d")])
def test_new_networks_train_save_and_come_back(tmp_path, fmnist_dir, flags, kind):
    """LeNet-5 and AlexNet-BN through fit: the weights file rebuilds the same network (batch
    norm's running statistics included), and --trace-steps records every step's error."""
    result = fit(tiny_config(tmp_path / "run", epochs=1, trace_steps=True, fashion_mnist_dir=fmnist_dir, **flags))
    record = result["history"][0]
    assert len(record["trace_error"]) == len(record["trace_loss"]) == 128 // 32
    assert sum(record["trace_error"]) / 4 == pytest.approx(1 - record["train_top1"])  # equal batches
    model, _, meta = load_model(tmp_path / "run")
    assert kind in {type(m).__name__ for m in model.modules()}
    state = read_weights(tmp_path / "run" / "model.safetensors")[0]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    if kind == "BatchNorm2d":
        assert meta["model_kwargs"]["norm"] == "batch" and not torch.all(model.features.bn1.running_mean == 0)


def test_the_configuration_is_resolved_once_and_the_callers_is_left_alone(trained_run, tmp_path, fmnist_dir):
    """Fine-tuning from weights: the run takes the weights' network and sizes, the networks'
    defaults and the data's class count, and records exactly that; the config the caller
    passed in is not touched (it once was, field by field, while the run started)."""
    from alexnet.training.config import to_dict
    from alexnet.training.rundir import RunDir

    cfg = tiny_config(tmp_path / "tuned", variant="torchvision", resize=0, crop=0, epochs=1, limit_train=64,
                      weights=str(trained_run), fashion_mnist_dir=fmnist_dir)
    before = to_dict(cfg)
    fit(cfg)
    assert to_dict(cfg) == before
    saved = RunDir(tmp_path / "tuned").read_config()
    assert (saved["model"]["variant"], saved["data"]["resize"], saved["data"]["crop"]) == ("paper", 76, 67)
    assert saved["model"]["num_classes"] == 10 and saved["model"]["dropout"] == 0.5  # the data's; the network's own
