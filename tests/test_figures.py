"""PNG figures: what write_png writes decodes to the same pixels."""

import pytest
import torch

from mridpm.figures import grid, write_png


def test_png_round_trip(tmp_path):
    image = pytest.importorskip("PIL.Image")
    img = torch.arange(35, dtype=torch.float32).reshape(5, 7)
    path = write_png(tmp_path / "a.png", img)
    with image.open(path) as im:
        assert im.size == (7, 5) and im.mode == "L"
        pixels = torch.tensor(list(im.getdata()), dtype=torch.float32).reshape(5, 7)
    torch.testing.assert_close(pixels, (img / 34 * 255).round())
    with pytest.raises(ValueError, match="real"):
        write_png(tmp_path / "b.png", torch.zeros(2, 3, 4))


def test_grid_layout():
    imgs = torch.stack([torch.full((3, 4), float(i)) for i in range(5)])
    g = grid(imgs, columns=3, pad=1, value=-1.0)
    assert g.shape == (2 * 4 - 1, 3 * 5 - 1)
    assert float(g[0, 0]) == 0 and float(g[4, 5]) == 4 and float(g[3, 0]) == -1.0
