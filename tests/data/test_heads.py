"""Synthetic heads (mridpm.data.heads): seeded, held-out positions apart, skull and scalp, varied contrasts."""

import time

import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")
pytest.importorskip("nibabel")
pytest.importorskip("scipy")

from mridpm.data import heads
from mridpm.train.run import training_images


@pytest.fixture(scope="module", autouse=True)
def _labels():
    heads.head_labels()  # built once (about 10 s), shared by every test here


def test_shapes_dtype_and_determinism():
    a = heads.head_slices(3, (40, 48), seed=5)
    assert a.shape == (3, 40, 48) and a.dtype == torch.complex64 and torch.isfinite(torch.view_as_real(a)).all()
    torch.testing.assert_close(heads.head_slices(3, (40, 48), seed=5), a, rtol=0, atol=0)
    # slice i depends on (seed, i) only, not on n or how the draws are batched
    torch.testing.assert_close(heads.head_slices(2, (40, 48), seed=5, chunk=1)[1], a[1], rtol=0, atol=0)
    assert not torch.equal(heads.head_slices(3, (40, 48), seed=6), a)
    with pytest.raises(ValueError, match="n must be"):
        heads.head_slices(0)


def test_magnitude_is_robustly_normalised():
    mag = heads.head_slices(6, (64, 64), seed=1).abs().flatten(1)
    p99 = torch.quantile(mag, 0.99, dim=1)
    torch.testing.assert_close(p99, torch.ones(6), rtol=0, atol=0.03)
    assert float(mag.max()) <= heads.CLIP + 1e-5
    assert float(mag.median()) < 0.5  # air and dark tissue fill much of the field of view


def test_heldout_positions_are_apart_from_training_ones():
    for o in heads.ORIENTATIONS:
        train, held = set(heads.slice_positions(o)), set(heads.slice_positions(o, heldout=True))
        assert held and train and not train & held
        assert len(held) == pytest.approx((len(train) + len(held)) / heads.HOLDOUT_EVERY, abs=1)
    held = heads.head_slices(2, (32, 32), seed=0, heldout=True)
    assert held.shape == (2, 32, 32) and not torch.equal(held, heads.head_slices(2, (32, 32), seed=0))
    for i in range(40):
        for heldout in (False, True):
            q = heads._draw(np.random.default_rng([0, i]), heldout)
            o = heads.ORIENTATIONS[[heads._AXIS[o] for o in heads.ORIENTATIONS].index(q["axis"])]
            assert int(q["p"]) in heads.slice_positions(o, heldout)


def test_all_orientations_and_varied_contrasts_occur():
    draws = [heads._draw(np.random.default_rng([0, i]), False) for i in range(60)]
    assert {q["axis"] for q in draws} == {0, 1, 2}
    gm, wm, csf = (heads.LABELS.index(k) for k in ("gm", "wm", "csf"))
    means = np.array([q["means"] for q in draws])
    assert (means[:, wm] > means[:, gm]).any() and (means[:, wm] < means[:, gm]).any()  # T1- and T2-like
    assert (means[:, csf] > means[:, [gm, wm]].max(1)).any() and (means[:, csf] < means[:, [gm, wm]].min(1)).any()
    a, b = heads.head_slices(2, (64, 64), seed=0).abs(), heads.head_slices(2, (64, 64), seed=1).abs()
    assert float((a - b).abs().mean()) > 0.02


def test_named_contrasts_order_tissues_as_their_spin_echo():
    gm, wm, csf = (heads.LABELS.index(k) for k in ("gm", "wm", "csf"))
    for i in range(10):
        t1 = heads._draw(np.random.default_rng([0, i]), True, "T1")["means"]
        t2 = heads._draw(np.random.default_rng([0, i]), True, "T2")["means"]
        assert t1[wm] > t1[gm] > t1[csf] and t2[csf] > t2[gm] > t2[wm]
    # the random draw (training data) is unchanged by the option: same geometry and means as before
    q, r = heads._draw(np.random.default_rng([0, 3]), False), heads._draw(np.random.default_rng([0, 3]), False, None)
    assert q["p"] == r["p"] and np.array_equal(q["means"], r["means"])
    x = heads.head_slices(2, (40, 36), seed=2, heldout=True, contrast="PD")
    assert x.shape == (2, 40, 36) and not torch.equal(x, heads.head_slices(2, (40, 36), seed=2, heldout=True))
    with pytest.raises(ValueError, match="unknown contrast"):
        heads.head_slices(1, contrast="FLAIR")


def test_skull_is_a_dark_ring_between_bright_scalp_and_brain():
    centre, _ = heads._geometry()
    t1, t2, pd = heads.PARAMS.T
    q = heads._draw(np.random.default_rng(0), False)
    q.update(p=float(round(centre[2]) + 20), axis=2, rows=np.array([0.0, -1, 0]), cols=np.array([1.0, 0, 0]),
             shift=np.zeros(3), warp=0.0, means=pd * (1 - np.exp(-500 / t1)) * np.exp(-14 / t2),
             texture=np.zeros(len(heads.LABELS)), blur=np.array([0.3, 0.3]), keep=(1, 1), bias=0.0,
             phase_c=np.zeros(6), noise=1e-3, fov=256.0)
    profile = heads._render([q], (256, 256))[0].abs()[128]  # left to right through the head, 1 mm pixels
    start = int((profile > 0.1).nonzero()[0])
    outer = profile[start : start + 30]  # scalp, skull and the first millimetres of the brain
    scalp = int(outer[:8].argmax())
    skull = float(outer[scalp : scalp + 12].min())
    assert float(outer[scalp]) > 0.6 and skull < 0.3 * float(outer[scalp])  # T1: fat bright, cortical bone dark
    assert skull < 0.5 * float(profile[start + 40 : 256 - start - 40].median())  # darker than the brain inside
    assert float(profile[:start - 2].max()) < 0.05  # air outside


def test_training_images_heads_source():
    t = time.perf_counter()
    x = training_images({"source": "heads", "n": 64, "size": [64, 64], "patch": 32, "seed": 2})
    assert time.perf_counter() - t < 10
    assert x.shape == (64, 2, 32, 32) and x.dtype == torch.float32
    assert float(x.abs().max()) <= heads.CLIP + 1e-5 and float(x.abs().max()) > 0.5
    torch.testing.assert_close(training_images({"source": "heads", "n": 64, "size": [64, 64], "patch": 32,
                                                "seed": 2}), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"patch 96 is larger than the slices \[16, 16\]"):
        training_images({"source": "heads", "n": 2, "size": [16, 16], "patch": 96})


def test_skull_stripping_zeroes_all_but_the_brain_and_changes_no_other_draw():
    plain = heads.head_slices(8, (48, 48), seed=2)
    some = heads.head_slices(8, (48, 48), seed=2, strip=0.5)
    every = heads.head_slices(8, (48, 48), seed=2, strip=1.0)
    stripped = [not torch.equal(a, b) for a, b in zip(plain, some, strict=True)]
    assert 0 < sum(stripped) < 8  # a fraction of the slices; the others are drawn exactly as without strip
    for a, b in zip(plain, every, strict=True):
        zero = b.abs() == 0
        assert zero.float().mean() > (a.abs() == 0).float().mean()  # zero outside the brain, noise included
        inside = ~zero
        # what is kept is the same image, scaled by the new 99th-percentile normalisation
        ratio = (b[inside].abs() / a[inside].abs().clamp_min(1e-6)).median()
        assert float(ratio) >= 1
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="strip"):
            heads.head_slices(1, (16, 16), strip=bad)
