"""alexnet.files: atomic writes, and output paths checked before any work is done."""

import pytest

from alexnet.errors import AlexNetError
from alexnet.files import atomic_write, output_file, output_folder


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_an_output_folder_is_checked_and_made_only_when_asked(tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(AlexNetError, match="is a file; give a folder"):
        output_folder(tmp_path / "taken")
    with pytest.raises(AlexNetError, match="taken is a file, not a folder"):
        output_folder(tmp_path / "taken" / "below")  # a file where a parent folder would go
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(AlexNetError, match="is a link to nothing"):
        output_folder(tmp_path / "gone")
    assert output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not (tmp_path / "a").exists()
    assert output_folder(tmp_path / "a" / "b", create=True).is_dir()
    assert (tmp_path / "taken").read_text() == "mine"


def test_an_output_file_is_not_a_folder(tmp_path):
    with pytest.raises(AlexNetError, match="is a folder; give a file name"):
        output_file(tmp_path)
    with pytest.raises(AlexNetError, match="--grid's folder"):
        (tmp_path / "taken").write_text("mine")
        output_file(tmp_path / "taken" / "x.png", flag="--grid")
    assert output_file(tmp_path / "new" / "x.png") == tmp_path / "new" / "x.png"


@pytest.mark.parametrize("command", ["features", "neighbors", "export"])
def test_commands_refuse_an_output_folder_before_the_work(command, photo, tmp_path, capsys):
    """A folder given as --out: one line before the network is even loaded (a missing weights
    path would otherwise be the error), and the folder is left as it was."""
    from alexnet.cli import main

    missing = str(tmp_path / "no-such-run")
    args = {"features": [missing, str(photo), "--out", str(tmp_path)],
            "neighbors": [missing, "--query", str(photo), "--gallery", str(photo), "--out", str(tmp_path)],
            "export": [missing, "--out", str(tmp_path)]}[command]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet: error: --out") and "is a folder" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
