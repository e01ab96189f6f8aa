"""Masks: fastMRI's classes draw what fastMRI's own draw; the others hit their acceleration exactly."""

import numpy as np
import pytest
import torch

from mridpm.mri import masks

CASES = [
    ("RandomMaskFunc", [0.08], [4], (1, 640, 368, 2), 0),
    ("RandomMaskFunc", [0.08, 0.04], [4, 8], (15, 640, 372, 2), 1234),
    ("RandomMaskFunc", [0.04], [8], (1, 320, 321, 2), (7, 11)),
    ("EquiSpacedMaskFunc", [0.08], [4], (1, 640, 368, 2), 5),
    ("EquiSpacedMaskFunc", [0.08, 0.04], [4, 8], (1, 218, 170, 2), 9),
    ("EquispacedMaskFractionFunc", [0.08], [4], (1, 640, 368, 2), 3),
    ("EquispacedMaskFractionFunc", [0.04], [8], (1, 640, 333, 2), 17),
]


@pytest.mark.parametrize(("cls", "fractions", "accels", "shape", "seed"), CASES)
def test_fastmri_masks_equal_fastmri_own(fastmri_module, cls, fractions, accels, shape, seed):
    theirs_mod = fastmri_module("data/subsample.py")
    ours, theirs = getattr(masks, cls)(fractions, accels), getattr(theirs_mod, cls)(fractions, accels)
    for offset in (None, 1):
        m_ours, low_ours = ours(shape, offset=offset, seed=seed)
        m_theirs, low_theirs = theirs(shape, offset=offset, seed=seed)
        assert low_ours == low_theirs
        assert m_ours.shape == m_theirs.shape == (1,) * (len(shape) - 2) + (shape[-2], 1)
        assert torch.equal(m_ours, m_theirs)
    # a seeded call leaves the generator where it was, as fastMRI's does
    ours_free = getattr(masks, cls)(fractions, accels, seed=3)
    first = ours_free(shape)[0]
    ours_free(shape, seed=99)
    again = getattr(masks, cls)(fractions, accels, seed=3)
    again(shape)
    assert torch.equal(ours_free(shape)[0], again(shape)[0])
    assert not torch.equal(first, ours_free(shape, seed=99)[0]) or cls != "RandomMaskFunc"


def test_fastmri_center_lines():
    mask, low = masks.RandomMaskFunc([0.08], [4])((1, 320, 368, 2), seed=0)
    cols = mask.reshape(-1)
    assert low == round(368 * 0.08)
    pad = (368 - low + 1) // 2
    assert bool(cols[pad : pad + low].all())


@pytest.mark.parametrize(("width", "accel"), [(368, 4), (372, 8), (101, 3.3)])
def test_gaussian_lines_hit_the_acceleration_exactly(width, accel):
    m = masks.gaussian_lines(width, accel, center_fraction=0.08, seed=0)
    assert int(m.sum()) == round(width / accel)
    low = round(width * 0.08)
    pad = (width - low + 1) // 2
    assert bool(m[pad : pad + low].all())
    assert torch.equal(m, masks.gaussian_lines(width, accel, center_fraction=0.08, seed=0))
    assert not torch.equal(m, masks.gaussian_lines(width, accel, center_fraction=0.08, seed=1))
    # denser in the middle: over many draws, the central half holds most of the random lines
    middle = total = 0.0
    for seed in range(30):
        rest = masks.gaussian_lines(width, accel, center_fraction=0.08, seed=seed)
        rest[pad : pad + low] = 0
        middle, total = middle + float(rest[width // 4 : 3 * width // 4].sum()), total + float(rest.sum())
    assert middle > 0.6 * total


def test_uniform_random_2d_and_acceleration():
    m = masks.uniform_random_2d((40, 30), 6.0, calib=8, seed=2)
    assert int(m.sum()) == round(1200 / 6)
    assert bool(m[16:24, 11:19].all())
    assert masks.acceleration(m) == pytest.approx(6.0, rel=1e-2)
    line = torch.zeros(1, 10)
    line[0, ::2] = 1
    assert masks.acceleration(line, (4, 8, 10)) == 2.0


def test_fastmri_random_mask_acceleration_is_only_on_average():
    func = masks.RandomMaskFunc([0.08], [4])
    achieved = [masks.acceleration(func((1, 320, 368, 2), seed=s)[0].reshape(-1)) for s in range(50)]
    assert min(achieved) < 4 < max(achieved)
    assert np.mean([1 / a for a in achieved]) == pytest.approx(0.25, rel=0.03)


BAD = [
    (ValueError, "same length", lambda: masks.RandomMaskFunc([0.08, 0.04], [4])),
    (ValueError, "3 or more", lambda: masks.RandomMaskFunc([0.08], [4])((320, 368))),
    (ValueError, "fewer than", lambda: masks.gaussian_lines(100, 50, center_fraction=0.1)),
    (ValueError, "acceleration", lambda: masks.uniform_random_2d((8, 8), 0.5)),
    (ValueError, "nothing", lambda: masks.acceleration(torch.zeros(5))),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_poisson_disc_hits_the_acceleration_with_a_calibration_block():
    m = masks.poisson_disc_2d((96, 80), 5.0, calib=12, seed=3)
    assert masks.acceleration(m) == pytest.approx(5.0, rel=0.02)
    assert bool(m[42:54, 34:46].all())
    assert torch.equal(m, masks.poisson_disc_2d((96, 80), 5.0, calib=12, seed=3))
    # denser at the center than at the edges
    assert float(m[32:64, 27:53].mean()) > 1.5 * float(m[:16].mean())


def test_dart_throwing_compiled_equals_reference_and_keeps_its_distances():
    rng = np.random.default_rng(0)
    h, w = 23, 19
    radius = (0.5 + 2.5 * rng.random(h * w)).astype(np.float32)
    order = rng.permutation(h * w)
    got = masks.dart_throw(h, w, radius, order)
    assert np.array_equal(got, masks.dart_throw_reference(h, w, radius, order))
    rank = np.empty(h * w, dtype=np.int64)
    rank[order] = np.arange(h * w)
    kept = np.flatnonzero(got)
    ys, xs = np.divmod(kept, w)
    for a in range(len(kept)):
        for b in range(len(kept)):
            if rank[kept[a]] < rank[kept[b]]:  # b came later, so nothing kept lies inside b's radius
                assert (ys[a] - ys[b]) ** 2 + (xs[a] - xs[b]) ** 2 >= radius[kept[b]] ** 2


def test_dart_throwing_kernel_guards():
    from mridpm import _ext

    ext = _ext.extension()
    if ext is None:
        pytest.skip("extension not built")
    r, o, out = np.ones(4, np.float32), np.array([0, 1, 2, 9]), np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="smaller than the extent"):
        ext.poisson_disc(2, 2, (r.ctypes.data, 4), (o.ctypes.data, 4), (out.ctypes.data, 4))
    with pytest.raises(ValueError, match="smaller than the extent"):
        ext.poisson_disc(3, 2, (r.ctypes.data, 4), (o.ctypes.data, 4), (out.ctypes.data, 4))


@pytest.mark.parametrize("r", [0.0, 0.5, 1.0, 3.0, 1e8, 1e30])
@pytest.mark.parametrize(("h", "w"), [(8, 8), (5, 7), (1, 9), (6, 1)])
def test_dart_throwing_agrees_with_the_reference_for_any_radius(h, w, r):
    """Huge radii keep one point (the search window stops at the grid) and return at once, as the reference."""
    import time

    order = np.random.default_rng(h * 31 + w).permutation(h * w).astype(np.int64)
    radius = np.full(h * w, r, np.float32)
    start = time.perf_counter()
    got = masks.dart_throw(h, w, radius, order)
    assert time.perf_counter() - start < 0.5
    with np.errstate(over="ignore"):  # the reference squares 1e30 in float32: inf, as the kernel does
        want = masks.dart_throw_reference(h, w, radius, order)
    assert np.array_equal(got, want)
    if r >= 1e8:
        assert got.sum() == 1 and got[order[0]] == 1


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), -float("inf")])
def test_dart_throwing_refuses_bad_radii(bad):
    radius = np.ones(16, np.float32)
    radius[5] = bad
    with pytest.raises(ValueError, match=r"finite and non-negative; radius\[5\]"):
        masks.dart_throw(4, 4, radius, np.arange(16))


def test_line_masks_for_reconstruction():
    """line_mask: fastMRI's random lines at its center fractions; acs_lines counts the center block;
    file_mask prefers a requested acceleration, then the file's mask, then its sampled columns."""
    for accel, center in ((4, 0.08), (8, 0.04)):
        assert masks.default_center(accel) == center
        m = masks.line_mask(320, accel, seed=3)
        assert m.shape == (1, 1, 1, 320)
        ref, low = masks.RandomMaskFunc([center], [accel], seed=3)((1, 320, 1))
        assert torch.equal(m.reshape(-1), ref.reshape(-1)) and masks.acs_lines(m) >= low
    assert masks.acs_lines(torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1])) == 3  # lines 3..5 around the center 4
    k = torch.zeros(2, 8, 16, dtype=torch.complex64)
    k[..., ::2] = 1
    stored = torch.zeros(16)
    stored[4:12] = 1
    assert torch.equal(masks.file_mask(k, None, 4, None, 0), masks.line_mask(16, 4))
    assert torch.equal(masks.file_mask(k, stored, None, None, 0).reshape(-1), stored)
    assert torch.equal(masks.file_mask(k, None, None, None, 0).reshape(-1), (k[0, 0] != 0).float())
    with pytest.raises(ValueError, match="fully sampled"):
        masks.file_mask(torch.ones(1, 4, 16, dtype=torch.complex64), None, None, None, 0)
