import json
import random
import time

import pytest
import torch

from alexnet import AlexNetError, create_model
from alexnet.training import budget, train
from alexnet.training.checkpoint import read_weights
from alexnet.training.runtime import Runtime
from alexnet.training.config import TrainConfig
from alexnet.training.train import _prepare_run, fit
from alexnet.training import distributed

from conftest import tiny_config


def test_the_plan_takes_the_most_whole_epochs_that_fit():
    rng = random.Random(0)
    for _ in range(500):
        budget_s, spent, epoch_s = rng.uniform(10, 900), rng.uniform(0, 60), rng.uniform(1, 120)
        final, cap = rng.uniform(0, 30), rng.randint(1, 40)
        n = budget.plan(budget_s, spent, epoch_s, final, cap)
        assert 0 <= n <= cap
        assert spent + n * epoch_s + final <= budget_s or n == 0  # what is planned fits
        assert n == cap or spent + (n + 1) * epoch_s + final > budget_s  # and one more would not


def test_one_more_epoch_of_fewer_steps_where_it_trains_more_in_the_same_time():
    rng = random.Random(1)
    shortened_seen = 0
    for _ in range(2000):
        steps, step_s, val_s = rng.randint(1, 500), rng.uniform(0.01, 2), rng.uniform(0, 60)
        epoch_s = budget.MARGIN * (steps * step_s + val_s)
        cap_epochs = rng.randint(1, 20)
        room = rng.uniform(0, 25) * epoch_s
        whole = budget.plan(room, 0, epoch_s, 0, cap_epochs)
        epochs, cap = budget.shortened(room, whole, cap_epochs, steps, step_s, val_s)
        if cap == 0:
            assert epochs == whole
            continue
        shortened_seen += 1
        assert 0 < whole < epochs == whole + 1 <= cap_epochs and 1 <= cap < steps
        assert budget.MARGIN * epochs * (cap * step_s + val_s) <= room  # it fits
        assert epochs * cap > whole * steps  # and trains more steps than the whole epochs would
    assert shortened_seen > 100
    # the main job on the 2-core Zen 3 (2026-11-27): 0.46 s a step, one whole epoch of 430 fits
    # 400 s; two of 384 steps fit too
    assert budget.shortened(400, 1, 15, 430, 0.46, 5) == (2, 384)
    assert budget.shortened(400, 1, 1, 430, 0.46, 5) == (1, 0)  # --epochs caps it


def _runtime():
    return Runtime(torch.device("cpu"), None, True, distributed.from_environment())


def test_a_commands_budget_counts_from_the_commands_start_and_each_command_from_its_own(tmp_path, monkeypatch):
    """`alexnet train` hands fit the moment the command began, before its own imports and
    set-up (here a set-up slowed by 0.3 s), so that they count against --time-budget; a second
    command run in the same process (a notebook, a sweep) counts from its own start."""
    from alexnet import cli
    from alexnet.training import config

    seen = []
    real = config.apply_overrides

    def slow_overrides(*args, **kw):
        time.sleep(0.3)
        return real(*args, **kw)

    monkeypatch.setattr(config, "apply_overrides", slow_overrides)
    monkeypatch.setattr(train, "fit", lambda *args, **kw: seen.append(kw["started"]))
    for run in ("a", "b"):
        began = time.perf_counter()
        assert cli.main(["train", "--data", "fashion-mnist", "--out", str(tmp_path / run)]) == 0
        assert began <= seen[-1] < began + 0.3  # read before the set-up, after the call began


def test_steps_taken_while_measuring_are_undone_weights_momentum_rate_gradients_and_random_stream():
    torch.manual_seed(3)
    model = create_model("paper", num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x, y = torch.randn(4, 3, 67, 67), torch.randint(0, 10, (4,))

    def step():
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # a run with momentum already, as a resumed one has
    optimizer.zero_grad(set_to_none=True)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    with budget.rewound(model, optimizer, scaler, torch.device("cpu")):
        for group in optimizer.param_groups:
            group["lr"] = 0.5  # as the schedule sets it
        for _ in range(3):
            step()
        assert not torch.equal(model.features.conv1.weight, weights["features.conv1.weight"])  # the steps did change them
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(m, optimizer.state[p]["momentum_buffer"]) for m, p in zip(momentum, model.parameters()))
    assert all(g["lr"] == 0.01 for g in optimizer.param_groups)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew, then the state came back
    step()  # and training goes on with the same tensors
    assert not torch.equal(model.features.conv1.weight, weights["features.conv1.weight"])


def test_timing_an_evaluation_batch_leaves_the_model_in_its_mode():
    model = create_model("paper", num_classes=10)
    assert budget.eval_seconds(model, _runtime(), 67, 2) > 0
    assert model.training
    model.eval()
    budget.eval_seconds(model, _runtime(), 67, 2)
    assert not model.training


def test_a_budgeted_run_trains_exactly_as_one_given_its_planned_epochs(tmp_path, fmnist_dir, monkeypatch):
    plans = []
    real_plan = budget.plan

    def plan(*args):
        plans.append(real_plan(*args))  # what the measurement allows, recorded
        return 2

    monkeypatch.setattr(budget, "plan", plan)
    # a cosine schedule: its rates depend on the epochs, so it must see the planned ones
    fit(tiny_config(tmp_path / "budget", epochs=5, time_budget=3600, schedule="cosine", fashion_mnist_dir=fmnist_dir))
    fit(tiny_config(tmp_path / "fixed", epochs=2, schedule="cosine", fashion_mnist_dir=fmnist_dir))
    assert plans[0] == 5  # an hour holds every epoch of the tiny run: the cap holds
    config = json.loads((tmp_path / "budget" / "config.json").read_text())
    assert config["optim"]["epochs"] == 2 and config["optim"]["time_budget"] == 3600
    lines = (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    a = read_weights(tmp_path / "budget" / "model.safetensors")[0]
    b = read_weights(tmp_path / "fixed" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the measurement changed nothing the run does


def test_a_budgeted_run_of_shorter_epochs_trains_exactly_as_one_given_them(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setattr(budget, "plan", lambda *args: 2)
    monkeypatch.setattr(budget, "shortened", lambda room, epochs, *args: (epochs + 1, 3))  # of the 4 steps
    fit(tiny_config(tmp_path / "budget", epochs=5, time_budget=3600, schedule="cosine", fashion_mnist_dir=fmnist_dir))
    fit(tiny_config(tmp_path / "fixed", epochs=3, epoch_steps=3, schedule="cosine", fashion_mnist_dir=fmnist_dir))
    config = json.loads((tmp_path / "budget" / "config.json").read_text())
    assert config["optim"]["epochs"] == 3 and config["optim"]["epoch_steps"] == 3
    records = [json.loads(line) for line in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["train_images"] == 3 * 32 for r in records)
    a = read_weights(tmp_path / "budget" / "model.safetensors")[0]
    b = read_weights(tmp_path / "fixed" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resumed with the same command, it keeps its shorter epochs
    cfg, _ = _prepare_run(TrainConfig(out=str(tmp_path / "budget")), True, {"epochs": 5, "time_budget": 3600,
                                                                            "epoch_steps": 0})
    assert (cfg.optim.epochs, cfg.optim.epoch_steps) == (3, 3)


def test_a_budget_shorter_than_one_epoch_is_one_line_and_writes_nothing(tmp_path, fmnist_dir):
    out = tmp_path / "short"
    with pytest.raises(AlexNetError, match="--time-budget 0.001 does not fit one epoch here") as e:
        fit(tiny_config(out, epochs=3, time_budget=0.001, fashion_mnist_dir=fmnist_dir))
    assert "\n" not in str(e.value)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("seconds", [-5, float("inf"), float("nan")])
def test_a_budget_that_is_not_a_finite_time_is_refused(seconds):
    with pytest.raises(AlexNetError, match="--time-budget must be a finite number of seconds"):
        fit(tiny_config("unused", time_budget=seconds))


def test_a_resumed_budgeted_run_keeps_its_planned_epochs(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setattr(budget, "plan", lambda *args: 2)
    out = tmp_path / "run"
    fit(tiny_config(out, epochs=30, time_budget=3600, fashion_mnist_dir=fmnist_dir))
    saved = TrainConfig(out=str(out))
    # the same command again (--resume auto): its --epochs 30 does not undo the plan
    cfg, _ = _prepare_run(saved, True, {"epochs": 30, "time_budget": 3600})
    assert cfg.optim.epochs == 2
    assert _prepare_run(saved, True, {"epochs": 1})[0].optim.epochs == 1  # lowering them is allowed
    assert _prepare_run(saved, True, {"epochs": 6, "time_budget": 0})[0].optim.epochs == 6  # planning off: anew
    with pytest.raises(AlexNetError, match="a resumed run keeps its plan"):
        _prepare_run(saved, True, {"time_budget": 60})


def test_time_kept_for_evaluations_after_the_run_costs_epochs(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setattr(budget, "timed", lambda fn, rt: 1.0)  # every step and evaluation batch: a second

    def planned(views):
        cfg = tiny_config(tmp_path / f"views{views}", epochs=1000, time_budget=600, budget_eval_views=views,
                          fashion_mnist_dir=fmnist_dir)
        run = train.Run(train.resolve(cfg, False, None, False))
        try:
            return run.plan_epochs(time.perf_counter()), run.splits.val.local_batch
        finally:
            run.splits.close()

    free, batch = planned(0)
    kept, _ = planned(200 * batch)  # 200 evaluation batches' views, at 1.5 s each
    assert free.after_s == 0 and kept.after_s == pytest.approx(300)
    assert kept.epochs < free.epochs
    for p in (free, kept):
        assert p.spent + p.epochs * p.epoch_s + p.after_s <= 600 < p.spent + (p.epochs + 1) * p.epoch_s + p.after_s
