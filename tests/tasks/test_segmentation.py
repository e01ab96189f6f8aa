"""Segmentation: the DPM's ensemble consensus and uncertainty, Dice, and the intensity baselines."""

import pytest
import torch

from mridpm.data.phantom import brain_slices, tissue_labels
from mridpm.tasks.segmentation import dice, kmeans_segment, otsu_segment, segment

SIZE = (32, 32)  # the tiny models of conftest.py


def test_dice_counts():
    pred = torch.tensor([[0, 1, 1, 2]])
    truth = torch.tensor([[0, 1, 2, 2]])
    d = dice(pred, truth, [0, 1, 2, 3])
    assert d == {0: 1.0, 1: 2 / 3, 2: 2 / 3, 3: 1.0}
    with pytest.raises(ValueError, match="shape"):
        dice(pred, truth[:, :3], [1])


@pytest.mark.parametrize("method", [otsu_segment, kmeans_segment])
def test_intensity_baselines_recover_piecewise_constant_classes(method):
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (2, 17, 23), generator=g)
    levels = torch.tensor([0.02, 0.35, 0.6, 0.95])
    img = levels[truth] + 0.02 * torch.randn(truth.shape, generator=g)
    assert torch.equal(method(img[:, None].clamp(0, 1)), truth)


def test_dpm_segmentation_beats_thresholds_and_its_uncertainty_marks_errors(seg_prior):
    z = [55, 85, 115]  # training range of the tiny model
    x = brain_slices("T1", z, SIZE)[:, None]
    truth = tissue_labels(z, SIZE)
    res = segment(seg_prior, x, samples=4, steps=8, seed=0)
    assert res.labels.shape == (3, *SIZE) and res.labels.dtype == torch.int64
    assert res.samples.shape == (4, 3, *SIZE)
    assert torch.allclose(res.votes.sum(1), torch.ones(3, *SIZE))
    assert res.uncertainty.min() >= 0 and res.uncertainty.max() <= torch.log(torch.tensor(4.0)) + 1e-6
    ours = dice(res.labels, truth, [2, 3])
    base = dice(otsu_segment(x), truth, [2, 3])
    assert ours[2] > 0.8 and ours[3] > 0.7 and ours[2] > base[2]
    wrong = res.labels != truth
    assert res.uncertainty[wrong].mean() > 2 * res.uncertainty[~wrong].mean()
    again = segment(seg_prior, x, samples=4, steps=8, seed=0)
    assert torch.equal(again.labels, res.labels)  # seeded


def test_bad_inputs(seg_prior):
    x = brain_slices("T1", [85], SIZE)[:, None]
    with pytest.raises(ValueError, match="1-channel"):
        segment(seg_prior, x.repeat(1, 2, 1, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segment(seg_prior, x * 300)
    with pytest.raises(ValueError, match="NaN"):
        segment(seg_prior, x.masked_fill(x > 0.9, float("nan")))
    with pytest.raises(TypeError, match="floating"):
        segment(seg_prior, (x > 0.5).long())
    with pytest.raises(ValueError, match="samples"):
        segment(seg_prior, x, samples=0)
    with pytest.raises(ValueError, match="divisible"):
        segment(seg_prior, x[..., :31])
