import pytest

from alexnet import AlexNetError, create_model
from alexnet.training.checkpoint import load_checkpoint, load_model
from alexnet.training import train
from alexnet.training.train import fit

from conftest import tiny_config

def test_checkpoint_rebuilds_its_model_and_rejects_mismatches(tmp_path, fmnist_dir, monkeypatch):
    fit(tiny_config(tmp_path / "run", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir, lrn_k=1.0,
                    lrn_span="tower"))
    model, normalizer, meta = load_model(tmp_path / "run")
    assert meta["variant"] == "paper" and meta["num_classes"] == 10 and meta["input_size"] == 67
    norm = model.features.norm2  # the network's options come back with it
    assert (norm.k, norm.groups) == (1.0, 2)
    assert meta["classes"][0] == "T-shirt/top" and meta["accuracy"]["protocol"] == "center"
    assert normalizer.mean.shape == (3, 76, 76)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"]["variant"] == "paper"
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    with pytest.raises(AlexNetError, match="'paper' network, not 'torchvision'"):
        load_model(tmp_path / "run", variant="torchvision")
    with pytest.raises(AlexNetError, match="10 classes, not 1000"):
        load_model(tmp_path / "run", num_classes=1000)
    # the weights of another class count, forced into the run's checkpoint, fail with a one-line error
    from alexnet.training.checkpoint import load_state
    with pytest.raises(AlexNetError, match=r"classifier.fc8.weight has shape \(10, 4096\), expected \(1000, 4096\)"):
        load_state(create_model("paper", pool5_grid=1), ckpt["model"], "run")  # the run's fc6 (67 px), 1000 classes
    with pytest.raises(AlexNetError, match="wrong variant"):
        load_state(create_model("torchvision", num_classes=10), ckpt["model"], "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(AlexNetError, match="already holds a run; continue it with --resume"):
        fit(tiny_config(tmp_path / "run", epochs=1, fashion_mnist_dir=fmnist_dir))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # nothing written was lost
    # --overwrite starts afresh: none of the first run's files survive a second run stopped early
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(train, "evaluate", stop)  # stops the run after its first training epoch
    with pytest.raises(Stop):
        fit(tiny_config(tmp_path / "run", epochs=1, limit_train=64, fashion_mnist_dir=fmnist_dir), overwrite=True)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "model.safetensors").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(AlexNetError, match="not a readable alexnet checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(AlexNetError, match="not a readable safetensors"):
        load_model(tmp_path / "w.safetensors")
