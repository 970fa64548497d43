"""alexnet.progress: a line every few seconds in a log, counted from where a pass resumed."""

from alexnet.progress import Progress


def test_a_log_gets_lines_counted_from_the_start(capsys):
    bar = Progress(10, "epoch 1", log_every=0.0, start=4)  # stderr is not a terminal here: log lines
    bar.update(2, loss=0.5)
    bar.close()
    assert capsys.readouterr().err == "epoch 1 6/10 loss=0.5\n"


def test_a_disabled_display_counts_and_prints_nothing(capsys):
    bar = Progress(10, "eval", enabled=False, log_every=0.0)
    bar.update(3)
    assert bar.count == 3 and capsys.readouterr().err == ""
