"""Contrast translation: many-to-one (T1 + PD -> T2) with a paired conditional DPM."""

import pytest
import torch

from mridpm.data.phantom import brain_slices
from mridpm.mri.metrics import psnr
from mridpm.tasks.translation import translate

SIZE = (32, 32)  # the tiny models of conftest.py


def test_translation_produces_the_target_contrast(translate_prior):
    z = [60, 100]
    src = torch.cat([brain_slices("T1", z, SIZE)[:, None], brain_slices("PD", z, SIZE)[:, None]], 1)
    target = brain_slices("T2", z, SIZE)[:, None]
    res = translate(translate_prior, src, samples=2, steps=10, seed=0)
    assert res.mean.shape == (2, 1, *SIZE) and res.samples.shape == (2, 2, 1, *SIZE)
    assert res.mean.min() >= 0 and res.mean.max() <= 1 and res.std.min() >= 0
    ours = psnr(target, res.mean, 1.0)
    assert ours > psnr(target, src[:, :1], 1.0) + 5 and ours > psnr(target, src[:, 1:], 1.0) + 5
    assert ours > 18
    # the sources steer the output: swapping the two slices' sources swaps the translations
    swapped = translate(translate_prior, src.flip(0), samples=2, steps=10, seed=0)
    assert psnr(target.flip(0), swapped.mean, 1.0) > 18


def test_bad_inputs(translate_prior):
    t1 = brain_slices("T1", [80], SIZE)[:, None]
    with pytest.raises(ValueError, match="2 source contrasts"):
        translate(translate_prior, t1)
    with pytest.raises(ValueError, match=r"\(N, C"):
        translate(translate_prior, t1[0])
