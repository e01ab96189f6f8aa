"""2D masks of a file's reconstruction: made for an acceleration, read as stored ((W,), (H, W),
(slices, H, W)), or inferred from the k-space locations that hold data, reduced to lines only when
the pattern is exactly lines; and the fully sampled center square ESPIRiT calibrates from."""

from __future__ import annotations

import pytest
import torch

from mridpm.mri import masks
from mridpm.mri.masks2d import acs_square, as_lines, check_mask_kind, measured, plane_mask, stored_plane


def _plane(h: int = 12, w: int = 16, seed: int = 0) -> torch.Tensor:
    m = (torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    m[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 1
    return m


def test_an_inferred_2d_pattern_stays_2d_and_lines_stay_lines() -> None:
    plane = _plane()
    k = torch.randn(2, 3, 12, 16, dtype=torch.complex64) * plane
    k[:, 1:] *= 0  # one coil with data is enough to measure a location
    m = masks.file_mask(k, None, None, None, 0)
    assert m.shape == (1, 1, 12, 16) and torch.equal(m[0, 0], plane)
    lines = torch.randn(2, 3, 12, 16, dtype=torch.complex64) * (torch.arange(16) % 3 == 0)
    assert masks.file_mask(lines, None, None, None, 0).shape == (1, 1, 1, 16)
    k[1] = torch.randn(3, 12, 16, dtype=torch.complex64) * _plane(seed=1)  # per-slice patterns are kept
    m = masks.file_mask(k, None, None, None, 0)
    assert m.shape == (2, 1, 12, 16) and torch.equal(m[1, 0], _plane(seed=1)) and torch.equal(m[0, 0], plane)
    assert torch.equal(measured(k[:, 0]), measured(k))  # single-coil (slices, H, W) k-space


def test_stored_masks_of_every_shape() -> None:
    k = torch.ones(3, 2, 12, 16, dtype=torch.complex64)
    plane = _plane()
    assert torch.equal(masks.file_mask(k, plane, None, None, 0), plane.reshape(1, 1, 12, 16))
    per = torch.stack([_plane(seed=s) for s in range(3)])
    assert torch.equal(masks.file_mask(k, per, None, None, 0), per.unsqueeze(1))
    assert torch.equal(masks.file_mask(k, per[:1], None, None, 0), per[:1].unsqueeze(1))  # (1, H, W)
    rows = (torch.arange(16) % 2).float().expand(12, 16)  # a 2D mask that is exactly lines
    assert torch.equal(masks.file_mask(k, rows, None, None, 0), rows[:1].reshape(1, 1, 1, 16))
    with pytest.raises(ValueError, match=r"mask of shape \(5, 16\) fits neither lines \(16,\) nor the k-space "
                                         r"plane \(12, 16\) nor its slices \(3, 12, 16\)"):
        stored_plane(torch.ones(5, 16), tuple(k.shape))
    with pytest.raises(ValueError, match="has width 15 but its k-space 16"):
        masks.file_mask(k, torch.ones(15), None, None, 0)
    bad = plane.clone()
    bad[0, 0] = 0.5
    with pytest.raises(ValueError, match="only 0 and 1"):
        masks.file_mask(k, bad, None, None, 0)


@pytest.mark.parametrize("kind", ["poisson", "random"])
def test_2d_masks_made_for_an_acceleration(kind: str) -> None:
    k = torch.ones(1, 2, 40, 48, dtype=torch.complex64)
    m = masks.file_mask(k, None, 4.0, 0.25, 3, kind)
    assert m.shape == (1, 1, 40, 48) and abs(masks.acceleration(m) - 4.0) < 0.2
    assert acs_square(m, (40, 48)) >= 10  # the 10 x 10 center block of center 0.25 * 40
    assert torch.equal(m, plane_mask(kind, (40, 48), 4.0, 0.25, 3))
    assert torch.equal(masks.file_mask(k, None, 4.0, None, 3), masks.line_mask(48, 4.0, None, 3))


def test_mask_kinds_are_checked() -> None:
    check_mask_kind("lines", None)
    check_mask_kind("poisson", 4.0)
    with pytest.raises(ValueError, match=r"mask kind must be one of \('lines', 'poisson', 'random'\), got 'disc'"):
        check_mask_kind("disc", 4.0)
    with pytest.raises(ValueError, match=r"a mask kind \('random'\) applies only with an acceleration"):
        masks.file_mask(torch.ones(1, 4, 4, dtype=torch.complex64), None, None, None, 0, "random")


def test_acs_square_is_the_centered_fully_sampled_square() -> None:
    m = torch.zeros(20, 30)
    m[6:15, 9:20] = 1  # rows 6..14, columns 9..19 around the center (10, 15)
    assert acs_square(m, (20, 30)) == 9  # rows 6..14 centered as resize_center crops: 10 - 4 .. 10 + 4
    assert acs_square(torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1]), (16, 8)) == 3  # lines, as acs_lines
    assert acs_square(torch.ones(1, 1, 1, 8), (5, 8)) == 5  # limited by the rows
    two = torch.stack([m, torch.roll(m, 2, 0)]).unsqueeze(1)  # every slice must be sampled there
    assert acs_square(two, (20, 30)) == 5
    assert acs_square(torch.zeros(4, 4), (4, 4)) == 0


def test_as_lines_collapses_rows_and_slices() -> None:
    lines = (torch.arange(8) % 2).float().expand(3, 1, 6, 8)
    assert as_lines(lines).shape == (1, 1, 1, 8)
    plane = _plane(6, 8).expand(2, 1, 6, 8)
    assert as_lines(plane).shape == (1, 1, 6, 8)
