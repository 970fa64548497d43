"""alexnet visualize: conv1's kernels as one picture (the paper's Fig. 3), and the training curves."""

import torch

from alexnet.cli import main


def test_visualize_kernels_and_curves(trained_run, tmp_path, capsys):
    from PIL import Image

    from alexnet.models.summary import kernel_grid

    assert main(["visualize", str(trained_run), "--kernels", str(tmp_path / "k.png"),
                 "--curves", str(tmp_path / "c.png")]) == 0
    k = Image.open(tmp_path / "k.png")
    assert k.size == (16 * 46 + 2, 6 * 46 + 2)  # 96 kernels of 11x11 at 4x, 6 rows of 16
    assert Image.open(tmp_path / "c.png").size[0] > 800
    w = torch.zeros(2, 3, 2, 2)
    w[0, 0, 0, 0] = 1.0  # one bright red pixel in kernel 0
    grid = kernel_grid(w, columns=2, scale=1, pad=0)
    assert grid[0, 0].tolist() == [255, 0, 0] and grid[1, 1].tolist() == [0, 0, 0]
    assert main(["visualize", str(tmp_path), "--curves", str(tmp_path / "x.png")]) == 2
