"""Motion correction: simulated rigid in-plane motion between shots, shift estimation, correction."""

import pytest
import torch

from mridpm.data.phantom import brain_slices, motion_kspace
from mridpm.mri.fft import fft2c, ifft2c
from mridpm.mri.metrics import psnr
from mridpm.tasks.motion import correct_motion, estimate_shifts, shift_phase


def test_motion_kspace_corrupts_only_the_moved_shots():
    img = brain_slices("T1", [80], (64, 64))[0]
    k, rows = motion_kspace(img, 8, [1, 4], seed=0)
    clean = fft2c(img.to(torch.complex64))
    assert rows.tolist() == [(r % 8) in (1, 4) for r in range(64)]
    assert torch.equal(k[~rows], clean[~rows]) and (k[rows] - clean[rows]).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="moved"):
        motion_kspace(img, 8, [8])


def test_shift_phase_shifts_the_image_and_the_estimate_recovers_it():
    img = brain_slices("T1", [80], (64, 64))[0]
    k = fft2c(img.to(torch.complex64)) * shift_phase((64, 64), torch.tensor(2.0), torch.tensor(-3.0))
    assert torch.allclose(ifft2c(k).real, img.roll((2, -3), (0, 1)), atol=1e-5)
    rows = torch.arange(64) % 4
    y = fft2c(img.to(torch.complex64))
    y[rows == 2] = k[rows == 2]
    shifts = estimate_shifts(y, img, 4)
    assert torch.allclose(shifts[2], torch.tensor([2.0, -3.0])) and shifts[[0, 1, 3]].abs().max() == 0


@pytest.mark.parametrize("undo", [False, True])
def test_correction_of_translation_and_rotation_on_a_held_out_slice(undo):
    img = brain_slices("T1", [45], (64, 64))[0]  # outside brain64's training range
    k, _ = motion_kspace(img, 8, [2, 5], max_shift=3, max_angle=3, seed=3)
    res = correct_motion("brain64", k, 8, steps=15, undo=undo)
    assert res.image.shape == (64, 64) and res.shifts.shape == (8, 2) and res.excluded.dtype == torch.bool
    still = [0, 1, 3, 4, 6, 7]
    assert res.shifts[still].abs().max() <= 0.75 and res.shifts[[2, 5]].abs().amax(1).min() > 0.75
    assert res.excluded.nonzero().flatten().tolist() == ([] if undo else [2, 5])
    assert psnr(img, res.image, 1.0) > psnr(img, ifft2c(k).abs(), 1.0) + 8


def test_bad_inputs():
    k = fft2c(brain_slices("T1", [80], (64, 64))[0].to(torch.complex64))
    with pytest.raises(ValueError, match="complex"):
        correct_motion("brain64", k.real, 8)
    with pytest.raises(ValueError, match="shots"):
        correct_motion("brain64", k, 1)
    with pytest.raises(ValueError, match="not all zero"):
        correct_motion("brain64", torch.zeros_like(k), 8)
