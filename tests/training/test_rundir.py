"""alexnet.training.rundir: the run directory's files, named and parsed in one place."""

import pytest

from alexnet import AlexNetError
from alexnet.training.rundir import RunDir


def test_config_and_metrics_come_back_as_written(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_config() is None and run.read_metrics() == []
    run.write_config({"variant": "paper", "optim": {"lr": 0.01}})
    run.write_metrics([{"epoch": 1, "val_top1": 50.0}])
    run.append_metrics({"epoch": 2, "val_top1": 60.0})
    assert run.read_config() == {"variant": "paper", "optim": {"lr": 0.01}}
    assert [r["epoch"] for r in run.read_metrics(required=True)] == [1, 2]
    run.write_metrics([{"epoch": 1, "val_top1": 50.0}])  # a resumed run rewrites exactly its epochs
    assert [r["epoch"] for r in run.read_metrics()] == [1]


def test_a_directory_that_is_not_a_run_is_a_clear_error(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(AlexNetError, match="metrics.jsonl not found: not a run directory"):
        run.read_metrics(required=True)
    run.metrics_file.write_text("\n")
    with pytest.raises(AlexNetError, match="has no epochs yet"):
        run.read_metrics(required=True)
    run.config_file.write_text("{not json")
    with pytest.raises(AlexNetError, match="config.json is not readable JSON"):
        run.read_config()
    with pytest.raises(AlexNetError, match="holds neither model.safetensors nor checkpoint.pt"):
        run.find_weights()


def test_the_final_weights_come_before_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint.write_bytes(b"c")
    assert run.find_weights() == run.checkpoint and run.has_checkpoint()
    run.weights.write_bytes(b"w")
    assert run.find_weights() == run.weights


def test_clearing_removes_the_earlier_runs_state_and_nothing_else(tmp_path):
    run = RunDir(tmp_path)
    for path in (run.checkpoint, run.weights, tmp_path / "notes.txt"):
        path.write_bytes(b"x")
    run.board.mkdir()
    (run.board / "events").write_bytes(b"x")
    run.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_studys_result_marks_the_run_done(tmp_path):
    run = RunDir(tmp_path)
    assert not run.has_result()
    run.write_result({"test_top1": 71.5})
    assert run.has_result() and run.read_result() == {"test_top1": 71.5}
