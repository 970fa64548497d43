"""`alexnet reproduce --preset cifar` at toy size: tuning, caps, censoring, the power calculation,
verdicts and a report, on a tiny CIFAR-10 binary release whose classes are colours."""

import json
import math

import pytest

from alexnet import AlexNetError
from alexnet.reproduce import stats
from alexnet.training import train
from alexnet.reproduce import cifar as rc
from conftest import write_cifar_release
from alexnet.cli import main


@pytest.fixture
def toy(monkeypatch):
    small = dict(batch_size=16, mean_samples=64, log_every=1e9)
    monkeypatch.setattr(rc, "THRESHOLD", 0.5)
    monkeypatch.setattr(rc, "LR_GRID", (0.02, 0.002))
    monkeypatch.setattr(rc, "RELU_CAP_EPOCHS", 3)
    monkeypatch.setattr(rc, "FIG1", {**rc.FIG1, **small, "stop_at_train_error": 0.5})
    monkeypatch.setattr(rc, "SEC33", {**rc.SEC33, **small, "epochs": 1, "milestones": ""})
    monkeypatch.setattr(rc, "LRN_MAX_SEEDS", 3)
    monkeypatch.setattr(rc, "FIG1_SEEDS", 2)
    monkeypatch.setattr(rc, "MAX_EXTENSIONS", 1)


def test_the_cifar_study_tunes_caps_measures_and_reports(tmp_path, toy, monkeypatch):
    data = write_cifar_release(tmp_path / "cifar-10-batches-bin")
    out = tmp_path / "out"
    results = rc.run_study(["relu-tanh", "lrn"], str(data), out, device="cpu", command="test", log=lambda _: None)
    rt = results["relu-tanh"]
    for arm in ("relu", "tanh"):  # the chosen rate is the grid's fastest to the mark on the tuning seed
        grid = rt["tuning"][arm]["grid"]  # the grid, and a rate beyond it when an end of it won
        assert {"0.02", "0.002"} <= set(grid) and len(grid) <= 2 + rc.MAX_EXTENSIONS
        reached = {lr: s for lr, s in grid.items() if isinstance(s, int)}
        assert rt["tuning"][arm]["steps"] == min(reached.values())
        assert f"{rt['tuning'][arm]['lr']:g}" == min(reached, key=reached.get)
    relu_most = max([rt["tuning"]["relu"]["steps"]] + [r["steps"] for r in rt["runs"]["relu"]])
    assert rt["cap_steps"] >= rc.CAP_FACTOR * relu_most
    for row, a, b in zip(rt["per_seed"], rt["runs"]["relu"], rt["runs"]["tanh"]):
        assert row["ratio"] == pytest.approx((b["steps"] or rt["cap_steps"]) / a["steps"])
    lrn = results["lrn"]
    p = lrn["pilot"]  # the seeds the power calculation asks for, at least 3, at most LRN_MAX_SEEDS (3 here)
    assert len(lrn["runs"]["lrn"]) == len(lrn["runs"]["none"]) == p["seeds"] == min(max(3, p["seeds_needed"]), 3)
    assert p["capped"] == (p["seeds_needed"] > 3)
    assert all(0 <= r["test_error_10view"] <= 1 and r["test_images"] == 100 for r in lrn["runs"]["none"])
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["verdicts"]) == {"relu-tanh", "lrn"}
    assert saved["verdicts"]["lrn"]["level"] in (pytest.approx(0.975), pytest.approx(0.95))
    text = (out / "report.md").read_text()
    assert "| relu-tanh | tanh's steps / ReLU's to 50% training error | 6x |" in text and "| lrn |" in text
    assert (out / "fig1.png").stat().st_size > 0

    def no_training(*a, **kw):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(train, "fit", no_training)
    again = rc.run_study(["relu-tanh", "lrn"], str(data), out, device="cpu", command="test", log=lambda _: None)
    assert again["lrn"]["paired"] == lrn["paired"]  # every run came from its result.json


def test_a_capped_or_diverged_tanh_run_is_a_lower_bound_and_a_failed_relu_run_decides_nothing():
    relu = [{"seed": 0, "steps": 100}, {"seed": 1, "steps": 50}, {"seed": 2, "steps": 80}]
    tanh = [{"seed": 0, "steps": 300, "diverged": None},
            {"seed": 1, "steps": None, "diverged": None},        # not there by the cap of 800 steps
            {"seed": 2, "steps": None, "diverged": "training diverged"}]
    m = rc.ratio_measure(relu, tanh, cap_steps=800)
    assert [r["ratio"] for r in m["per_seed"]] == [3.0, 16.0, 10.0]
    assert [r["censored"] for r in m["per_seed"]] == [False, True, True] and m["censored"]
    assert m["geomean"] == pytest.approx((3.0 * 16.0 * 10.0) ** (1 / 3))
    v = rc.verdicts({"relu-tanh": m})["relu-tanh"]
    assert v["verdict"].startswith(stats.INCONCLUSIVE) and "censored" in v["verdict"] and v["n"] == 3
    failed = rc.ratio_measure([{"seed": 0, "steps": None}, *relu[1:]], tanh, cap_steps=800)
    assert failed["per_seed"][0]["ratio"] is None and failed["relu_failed"]
    assert "did not reach" in rc.verdicts({"relu-tanh": failed})["relu-tanh"]["verdict"]


def test_an_uncensored_ratio_is_judged_on_a_bonferroni_interval_of_log_ratios():
    """Ratios 4, 5 and 6.25: log ratios with mean log 5 and sd 0.2231; the 97.5% interval
    (t(0.9875, 2) = 0.975 / sqrt(2 * 0.9875 * 0.0125)) is exp(log 5 +- 6.2053 * 0.2231 / sqrt 3)."""
    relu = [{"seed": s, "steps": 100} for s in range(3)]
    tanh = [{"seed": s, "steps": n, "diverged": None} for s, n in enumerate((400, 500, 625))]
    v = rc.verdicts({"relu-tanh": rc.ratio_measure(relu, tanh, cap_steps=10_000)})["relu-tanh"]
    sd = math.log(1.25)
    half = 0.975 / math.sqrt(2 * 0.9875 * 0.0125) * sd / math.sqrt(3)
    assert v["estimate"] == pytest.approx(5.0)
    assert (v["low"], v["high"]) == (pytest.approx(5 * math.exp(-half)), pytest.approx(5 * math.exp(half)))
    assert v["verdict"] == stats.AGREES  # [2.2, 11.3] excludes 1 and holds 6


def test_the_cifar_preset_takes_no_other_settings(tmp_path, capsys):
    assert main(["reproduce", "--preset", "cifar"]) == 2
    assert "--preset cifar trains on CIFAR-10: name it with --data" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "cifar", "--data", str(tmp_path), "--epochs", "3"]) == 2
    assert "fixes its settings in advance; it takes no --epochs" in capsys.readouterr().err
    with pytest.raises(AlexNetError, match="measures relu-tanh, lrn, overlap-pool, dropout, augment, lighting, "
                                           "fig3; not bn"):
        rc.run_study(["bn"], str(tmp_path), tmp_path / "o")


def test_the_regularisers_family_trains_the_named_claims_arms_on_the_same_seeds_and_judges_them(tmp_path, toy,
                                                                                                 monkeypatch):
    from alexnet.reproduce import cifar_overfit as ro

    monkeypatch.setattr(ro, "OVERFIT", {**ro.OVERFIT, "limit_train": 200, "limit_val": 50, "epochs": 2,
                                        "milestones": "1"})
    monkeypatch.setattr(ro, "IMAGES", 200)
    monkeypatch.setattr(ro, "MIN_SEEDS", 2)
    monkeypatch.setattr(ro, "MAX_SEEDS", 2)
    data = write_cifar_release(tmp_path / "cifar-10-batches-bin")
    out = tmp_path / "out"
    named = ["dropout", "fig3"]
    results = rc.run_study(named, str(data), out, device="cpu", command="test", log=lambda _: None)
    family = results["overfit"]
    assert family["pilot"]["seeds"] == 2 and set(family["runs"]) == {"baseline", "no-dropout", "towers"}
    assert not (out / "overfit/no-augment").exists()  # an arm no named claim needs is not trained
    for runs in family["runs"].values():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:  # the gap: validation error minus the error on the run's own 200 training images
            assert r["gap"] == pytest.approx(r["val_error"] - r["train_error"]) and r["train_images"] == 200
            assert r["colour_gap"] == pytest.approx(abs(r["colour"][0] - r["colour"][1]))
            assert len(r["curve_val"]) == len(r["curve_train"]) == 2
    for name in named:  # each claim pairs its arm with the baseline, seed by seed
        claim, p = ro.CLAIMS[name], family[name]["paired"]
        by_seed = {arm: {r["seed"]: r[claim.metric] for r in family["runs"][arm]} for arm in ("baseline", claim.arm)}
        assert p["diffs"] == pytest.approx([by_seed[claim.arm][s] - by_seed["baseline"][s] for s in (0, 1)])
    # the arms differ in what they say: the towers arm's conv2 is grouped, the no-dropout arm has p = 0
    cfg = json.loads((out / "overfit/towers/seed0/config.json").read_text())
    assert cfg["model"]["towers"] == 2 and cfg["model"]["dropout"] == 0.5
    assert json.loads((out / "overfit/no-dropout/seed0/config.json").read_text())["model"]["dropout"] == 0.0
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["overfit_verdicts"]) == set(named)
    # the family is all five claims, named or not: Bonferroni's level over five, and Holm's
    # adjustment over five p-values, the three not measured counting as 1
    v = saved["overfit_verdicts"]
    assert all(x["level"] == pytest.approx(0.99) for x in v.values())
    assert [v[n]["p_holm"] for n in named] == pytest.approx(stats.holm([v[n]["p"] for n in named] + [1.0] * 3)[:2])
    text = (out / "report.md").read_text()
    assert "| dropout | val - train error, no-dropout |" in text and "| fig3 | colour gap, towers |" in text
    assert (out / "overfit.png").stat().st_size > 0 and (out / "fig3-cifar.png").stat().st_size > 0
    # a later call naming one claim keeps the other in the report, from the finished runs alone

    def no_training(*a, **kw):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(train, "fit", no_training)
    again = rc.run_study(["dropout"], str(data), out, device="cpu", command="test", log=lambda _: None)
    assert again["overfit"]["fig3"] == family["fig3"] and "| fig3 |" in (out / "report.md").read_text()


def test_the_colour_gap_tells_a_gray_tower_from_a_coloured_one_and_not_a_random_halving():
    """Fig. 3's measure: kernels 0-31 gray (three equal channels) and 32-63 coloured give a large
    gap, gray first or second; the same kernels shuffled across the halves give a small one."""
    from alexnet.reproduce.cifar_overfit import colour_halves

    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    gray = torch.randn(32, 1, 5, 5, generator=g).expand(32, 3, 5, 5)
    coloured = torch.randn(32, 3, 5, 5, generator=g)
    for weight in (torch.cat([gray, coloured]), torch.cat([coloured, gray])):
        first, second = colour_halves(weight)
        assert abs(first - second) > 0.5 and min(first, second) == pytest.approx(0, abs=1e-6)
    mixed = torch.cat([gray, coloured])[torch.randperm(64, generator=g)]
    first, second = colour_halves(mixed)
    assert abs(first - second) < 0.25


def test_the_family_reports_after_each_seed_and_runs_the_seeds_the_pilot_asks_for(monkeypatch):
    """A stand-in for training: each arm's measures are the seed's base value plus the arm's
    planted effect. A pilot with a large spread asks for more seeds than the cap; progress
    reports come after the pilot and after each later seed, the last with every seed."""
    from alexnet.reproduce import cifar_overfit as ro

    effect = {"baseline": 0.0, "pool-2x2": 0.01, "no-dropout": 0.2, "no-augment": 0.3, "no-lighting": 0.0,
              "towers": 0.2}
    trained = []

    class Fake:
        def run(self, key, flags, seed, measure):
            arm = key.split("/")[1]
            trained.append((arm, seed))
            v = 0.3 + 0.05 * ((seed * 7) % 5) + effect[arm]
            if arm == "pool-2x2":  # a difference that swings by a point from seed to seed
                v += 0.01 * (-1) ** seed
            return {"seed": seed, "diverged": None, "train_time_s": 1.0, ro.TEST_ERROR: v, ro.CENTER_ERROR: v,
                    "gap": v, "colour_gap": v, "val_error": v, "train_error": 0.0, "colour": [v, 0.0]}

    reports = []
    out = ro.run_claims(Fake(), {}, list(ro.CLAIMS), progress=reports.append)
    assert out["pilot"]["seeds"] == ro.MAX_SEEDS  # overlap-pool's 0.4 points cannot be told from this spread
    assert [r["pilot"]["seeds_done"] for r in reports] == list(range(ro.PILOT_SEEDS, ro.MAX_SEEDS))
    assert out["pilot"]["seeds_done"] == ro.MAX_SEEDS and len(trained) == 6 * ro.MAX_SEEDS
    assert out["dropout"]["paired"]["mean_diff"] == pytest.approx(0.2)  # the planted effect, seed by seed
    assert out["dropout"]["paired"]["sd_diff"] == pytest.approx(0.0, abs=1e-12)
    text = "\n".join(ro.render(reports[0], ro.verdicts(reports[0])))
    assert f"Unfinished: {ro.PILOT_SEEDS} of {ro.MAX_SEEDS} seeds" in text
