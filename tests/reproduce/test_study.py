"""`alexnet reproduce`: the statistics on numbers worked by hand, the step counts, and the runner
on a tiny real Fashion-MNIST subset (two arms, two seeds, report, resume)."""

import json
import math

import pytest

from alexnet import AlexNetError
from alexnet.reproduce import study as rep
from alexnet.reproduce import stats
from alexnet.cli import main


def test_paired_statistics_match_a_hand_computation():
    # diffs 1, 2, 2: mean 5/3; sd sqrt(((1-5/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3);
    # t(0.975, 2) = 4.302653 (printed tables); half-width 4.302653 * sqrt(1/3) / sqrt(3) = 1.434218.
    p = stats.paired([1.0, 2.0, 3.0], [2.0, 4.0, 5.0])
    assert p.diffs == [1.0, 2.0, 2.0]
    assert p.mean_diff == pytest.approx(5 / 3)
    assert p.sd_diff == pytest.approx(math.sqrt(1 / 3))
    assert (p.mean_a, p.mean_b) == (pytest.approx(2.0), pytest.approx(11 / 3))
    assert p.sd_a == pytest.approx(1.0) and p.sd_b == pytest.approx(math.sqrt(7 / 3))
    assert p.ci_low == pytest.approx(5 / 3 - 1.434218, abs=1e-5)
    assert p.ci_high == pytest.approx(5 / 3 + 1.434218, abs=1e-5)
    assert p.verdict(+1) == stats.AGREES and p.verdict(-1) == stats.DISAGREES


def test_an_interval_spanning_zero_is_inconclusive_whichever_side_is_expected():
    p = stats.paired([0.20, 0.21, 0.22], [0.21, 0.20, 0.24])  # diffs +0.01, -0.01, +0.02
    assert p.ci_low < 0 < p.ci_high
    assert p.verdict(+1) == p.verdict(-1) == stats.INCONCLUSIVE
    assert stats.paired([1.0], [2.0]).verdict(+1) == stats.INCONCLUSIVE  # one seed: no interval


def test_t_quantile_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 29):
        assert stats.t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-6)
    assert stats.t_quantile(0.95, 4) == pytest.approx(scipy_stats.t.ppf(0.95, 4), rel=1e-6)


def _reaching(step, total=100):
    """A per-step training error whose 5-step mean first reaches 35% at ``step``."""
    return [0.9] * (step - 5) + [0.3] * (total - step + 5)


def test_verdicts_on_size_with_holm_over_the_primary_measures_and_censored_steps():
    plan = rep.make_plan(["lrn", "relu-tanh"], "cpu", seeds=3, out="unused")
    assert plan.preset.thresholds["relu-tanh"] == 0.35  # fixed in the preset, not read off the runs
    run = lambda seed, err, step: {"seed": seed, "top1_error": err, "steps_per_epoch": 10,  # noqa: E731
                                   "trace_error": _reaching(step)}
    results = {"baseline": [run(0, 0.20, 10), run(1, 0.21, 10), run(2, 0.22, 10)],
               "no-lrn": [run(0, 0.22, 10), run(1, 0.23, 10), run(2, 0.25, 10)],
               "baseline@speed": [run(0, 0.20, 10), run(1, 0.21, 10), run(2, 0.22, 10)],
               "tanh@speed": [run(0, 0.30, 20), run(1, 0.30, 40), run(2, 0.30, 80)]}
    claims = rep.analyse(plan, results)
    lrn, ratio = claims["lrn"]["measures"][0], claims["relu-tanh"]["measures"][0]
    # lrn: diffs .02 .02 .03, mean .023333, se .0057735/sqrt(3) = .0033333, t = 7 on 2 df: two-sided
    # p = 1 - t/sqrt(t^2 + 2) = .019804. relu-tanh: log ratios ln 2, ln 4, ln 8, mean ln 4, sd ln 2,
    # t = ln 4 / (ln 2 / sqrt 3) = 3.4641, p = 1 - 3.4641/sqrt(14) = .074180. Holm over the two: .039608
    # and .074180; Holm's levels .975 (the smaller p) and .95. t(.9875, 2) = sqrt(2 * .975^2 / (1 - .975^2))
    # = 6.2053, so lrn's interval is .023333 +- 6.2053 * .0033333.
    assert lrn["p"] == pytest.approx(0.019804, abs=1e-5) and ratio["p"] == pytest.approx(0.074180, abs=1e-5)
    assert lrn["p_holm"] == pytest.approx(0.039608, abs=2e-5) and ratio["p_holm"] == pytest.approx(0.074180, abs=1e-5)
    assert lrn["level"] == pytest.approx(0.975) and ratio["level"] == pytest.approx(0.95)
    assert (lrn["ci_low"], lrn["ci_high"]) == (pytest.approx(0.023333 - 0.020684, abs=1e-5),
                                               pytest.approx(0.023333 + 0.020684, abs=1e-5))
    assert lrn["verdict"] == "agrees"  # the interval [.0026, .0440] excludes 0 and holds the paper's .014
    # Seeds for power .8 to detect .014 at level .05/2 with sd .0057735: n = 5 is the first with
    # n >= ((t(.9875, n-1) + t(.8, n-1)) * sd / .014)^2 (n = 3: (6.2053 + 1.0607)^2 * .17007 = 8.98 > 3;
    # n = 4: (4.1765 + 0.9785)^2 * .17007 = 4.52 > 4; n = 5: (3.4954 + 0.9410)^2 * .17007 = 3.35 <= 5).
    assert "- `lrn`: to detect the paper's +1.40 points with power 0.8 at level 0.05/2, this spread asks for 5 seeds " \
        "(ran 3)" in rep._power_lines(claims)
    assert math.exp(ratio["mean_diff"]) == pytest.approx(4.0)
    assert ratio["verdict"] == "inconclusive"  # log ratio ln 4 +- t(.975, 2) 4.3027 * 0.4: spans zero
    assert len(claims["relu-tanh"]["measures"]) == 1  # the ratio alone: the arms stop at the threshold

    # A tanh run that never reaches the threshold leaves the step ratio censored, whatever the others say.
    results["tanh@speed"][2]["trace_error"] = [0.9] * 100
    ratio = rep.analyse(plan, results)["relu-tanh"]["measures"][0]
    assert ratio["seeds"] == 2 and ratio["verdict"] == ("inconclusive (censored: tanh@speed seed 2 did not reach "
                                                       "it in 100 steps, ratio at least 10.00)")

    # Holm's step-down: an interval that alone excludes zero finds no effect once the family stops.
    # Log ratios ln 2, ln 3, ln 4: t = 5.268, p = .0342 > .05/2, so the family stops at its first step;
    # lrn's diffs .01 .02 .02: t = 5, p = .0378, whose own 95% interval [.0023, .0310] excludes zero.
    results["tanh@speed"] = [run(0, 0.30, 20), run(1, 0.30, 30), run(2, 0.30, 40)]
    results["no-lrn"] = [run(0, 0.21, 10), run(1, 0.23, 10), run(2, 0.24, 10)]
    claims = rep.analyse(plan, results)
    lrn, ratio = claims["lrn"]["measures"][0], claims["relu-tanh"]["measures"][0]
    assert ratio["p"] == pytest.approx(0.0342, abs=2e-4) and lrn["p"] == pytest.approx(0.0378, abs=2e-4)
    assert lrn["level"] == pytest.approx(0.95) and lrn["ci_low"] > 0
    assert lrn["p_holm"] == pytest.approx(2 * ratio["p"]) and lrn["verdict"] == "inconclusive"

    # An effect far below the paper's: smaller than the paper; one inside the margin: no effect.
    results["no-lrn"] = [run(0, 0.2040, 10), run(1, 0.2141, 10), run(2, 0.2240, 10)]
    assert rep.analyse(plan, results)["lrn"]["measures"][0]["verdict"] == "smaller than the paper"
    results["no-lrn"] = [run(0, 0.2001, 10), run(1, 0.2100, 10), run(2, 0.2200, 10)]
    assert rep.analyse(plan, results)["lrn"]["measures"][0]["verdict"] == "no effect"


def test_every_claim_has_its_arms_and_a_preset_fits_the_claims():
    for claim in rep.CLAIMS.values():
        assert claim.base in rep.ARMS and claim.change in rep.ARMS
    plan = rep.make_plan([], "cpu", out="unused")
    assert set(plan.arms()) == {k for c in rep.CLAIMS.values() for k in c.runs}
    base, tanh = plan.config("baseline", 1), plan.config("tanh", 1)
    assert tanh.model.activation == "tanh" and base.model.activation == "relu"
    base.model.activation, base.out = "tanh", tanh.out
    assert base == tanh  # one change, everything else equal
    assert plan.config("lenet5", 0).data.crop == 32 and plan.config("bias-one", 0).optim.epochs == 1
    # the overfitting claims run both arms on fewer images for more epochs
    assert rep.CLAIMS["dropout"].runs == ("baseline@small", "no-dropout@small")
    small = plan.config("no-dropout@small", 0)
    assert small.data.limit_train < base.data.limit_train and small.optim.epochs > base.optim.epochs
    assert small.model.dropout == 0  # and the baseline keeps the network's own, the paper's 0.5
    from alexnet.training.config import resolve_defaults
    assert resolve_defaults(plan.config("baseline@small", 0)).model.dropout == 0.5


def test_bad_requests_are_one_line_errors(tmp_path, capsys):
    assert main(["reproduce", "no-such-claim", "--out", str(tmp_path)]) == 2
    assert "unknown claim(s) no-such-claim" in capsys.readouterr().err
    assert main(["reproduce", "lrn", "--seeds", "1", "--out", str(tmp_path)]) == 2
    assert "--seeds must be at least 2" in capsys.readouterr().err
    assert main(["reproduce", "--report", str(tmp_path)]) == 2
    assert "plan.json not found" in capsys.readouterr().err
    assert main(["reproduce", "lrn", "--set", "lr=fast", "--out", str(tmp_path)]) == 2
    assert "--set lr: 'fast' is not a float" in capsys.readouterr().err
    assert main(["reproduce", "lrn", "--set", "no_such=1", "--out", str(tmp_path)]) == 2
    assert "--set wants FLAG=VALUE" in capsys.readouterr().err
    from alexnet.training.config import parse_setting

    assert parse_setting("gpu-decode=true") == ("gpu_decode", True)
    assert parse_setting("--lighting=0") == ("lighting", 0.0)
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in rep.CLAIMS) and "+1.4 points" in listed


TINY = dict(limit_train=128, limit_val=96, epochs=1, batch_size=32, mean_samples=64)


def test_two_arms_two_seeds_report_and_resume(tmp_path, fmnist_dir, monkeypatch):
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", fmnist_dir)
    out = tmp_path / "repro"
    plan = rep.make_plan(["lrn", "fig3"], "cpu", seeds=2, out=str(out), device="cpu", overrides=TINY)
    lines = []
    rep.reproduce(plan, log=lines.append)
    assert "4 runs, 0 already finished" in lines[0]

    runs = {(a, s): json.loads((out / "runs" / a / f"seed{s}" / "result.json").read_text())
            for a in ("baseline", "no-lrn") for s in (0, 1)}
    configs = {k: json.loads((out / "runs" / k[0] / f"seed{k[1]}" / "config.json").read_text()) for k in runs}
    assert configs["baseline", 0]["model"]["norm"] == "lrn" and configs["no-lrn", 0]["model"]["norm"] == "none"
    assert configs["baseline", 0]["seed"] == configs["no-lrn", 0]["seed"] == 0

    results = json.loads((out / "results.json").read_text())
    top1 = results["claims"]["lrn"]["measures"][0]
    assert top1["metric"] == "top1_error" and top1["seeds"] == 2
    assert top1["base_values"] == [runs["baseline", 0]["top1_error"], runs["baseline", 1]["top1_error"]]
    assert top1["mean_diff"] == pytest.approx(sum(runs["no-lrn", s]["top1_error"] - runs["baseline", s]["top1_error"]
                                                  for s in (0, 1)) / 2)
    assert results["claims"]["fig3"]["skipped"].startswith("the data are grayscale")
    report = (out / "report.md").read_text()
    assert "| lrn | top-1 error | +1.4 points (top-1) |" in report and "cannot show" in report
    assert (out / "fig3.png").stat().st_size > 0 and (out / "claims.png").stat().st_size > 0

    # Run again: nothing is redone. Lose one run's result: that run alone is redone.
    stamp = {k: (out / "runs" / k[0] / f"seed{k[1]}" / "result.json").stat().st_mtime_ns for k in runs}
    (out / "runs" / "no-lrn" / "seed1" / "result.json").unlink()
    lines.clear()
    rep.reproduce(rep.make_plan(["lrn"], "cpu", seeds=2, out=str(out), device="cpu", overrides=TINY), log=lines.append)
    assert "4 runs, 3 already finished" in lines[0]
    assert sum("arm no-lrn" in line for line in lines) == 1
    for k, t in stamp.items():
        if k != ("no-lrn", 1):
            assert (out / "runs" / k[0] / f"seed{k[1]}" / "result.json").stat().st_mtime_ns == t

    # Another setting in the same directory is refused; the report can be rebuilt from the runs.
    with pytest.raises(AlexNetError, match="holds runs of another setting"):
        rep.reproduce(rep.make_plan(["lrn"], "cpu", seeds=2, out=str(out), overrides={**TINY, "epochs": 2}))
    (out / "report.md").unlink()
    assert main(["reproduce", "--report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| lrn | top-1 error |" in report and "fc6 reads pool5 on a 2x2 grid; Caffe rounding" in report

    # A run made with other settings (an earlier preset's 67 px) is refused, not mixed in.
    saved = out / "runs" / "baseline" / "seed0" / "config.json"
    config = json.loads(saved.read_text())
    config["data"]["crop"] = 67
    saved.write_text(json.dumps(config))
    with pytest.raises(AlexNetError, match=r"trained with other settings \(data.crop: 67 here, 71 now"):
        rep.reproduce(rep.make_plan(["lrn"], "cpu", seeds=2, out=str(out), device="cpu", overrides=TINY))
