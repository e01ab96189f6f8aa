"""Anomaly detection: AUROC and Dice helpers, simplex noise, lesions, and AnoDDPM on held-out slices."""

import pytest
import torch

from mridpm.data.phantom import brain_slices, insert_lesions, simplex_noise, tissue_labels
from mridpm.tasks.anomaly import auroc, best_dice, detect


def test_auroc_matches_scikit_learn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 6, (300,), generator=g).float()
    truth = torch.rand(300, generator=g) < 0.3 + 0.1 * score / 6
    assert auroc(score, truth) == pytest.approx(sklearn.roc_auc_score(truth.numpy(), score.numpy()), abs=1e-12)
    assert auroc(truth.float(), truth) == 1.0 and auroc(-truth.float(), truth) == 0.0
    with pytest.raises(ValueError, match="both"):
        auroc(score, torch.zeros(300, dtype=torch.bool))


def test_best_dice_finds_a_separating_threshold():
    truth = torch.zeros(10, 10, dtype=torch.bool)
    truth[2:5, 2:5] = True
    d, th = best_dice(truth.float() + 0.01 * torch.rand(10, 10), truth)
    assert d == 1.0 and 0.01 <= th < 1.0


def test_simplex_noise_is_standardised_and_spatially_correlated():
    n = simplex_noise((3, 2, 48, 40), generator=torch.Generator().manual_seed(1))
    assert n.shape == (3, 2, 48, 40)
    assert torch.allclose(n.mean((-2, -1)), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(n.std((-2, -1)), torch.ones(3, 2), atol=1e-4)
    lag1 = (n[..., 1:] * n[..., :-1]).mean() / n.var()
    assert lag1 > 0.5  # white noise: about 0
    assert not torch.equal(n[0], n[1])
    again = simplex_noise((3, 2, 48, 40), generator=torch.Generator().manual_seed(1))
    assert torch.equal(n, again)


def test_lesions_lie_in_the_brain_and_change_only_their_surroundings():
    img = brain_slices("T1", [45, 125], (64, 64))
    brain = tissue_labels([45, 125], (64, 64)) > 0
    out, mask = insert_lesions(img, brain, count=2, seed=0)
    assert mask.any(dim=(1, 2)).all() and not (mask & ~brain).any()
    near = torch.nn.functional.max_pool2d(mask[:, None].float(), 7, 1, 3)[:, 0] > 0
    assert (out - img)[~near].abs().max() == 0 and (out - img)[mask].abs().mean() > 0.05
    with pytest.raises(ValueError, match="no brain"):
        insert_lesions(img, torch.zeros_like(brain))


def test_anoddpm_finds_lesions_in_held_out_slices():
    z = [45, 125]  # outside brain64's training range
    brain = tissue_labels(z, (64, 64)) > 0
    x, truth = insert_lesions(brain_slices("T1", z, (64, 64)), brain, seed=1)
    res = detect("brain64", x[:, None], t=400, steps=10, noise="gaussian", threshold=0.25, seed=0)
    assert res.healthy.shape == (2, 1, 64, 64) and res.score.shape == (2, 64, 64) and res.mask.dtype == torch.bool
    assert torch.equal(res.mask, res.score > 0.25)
    assert auroc(res.score, truth, brain) > 0.85
    # the healthy reconstruction removes the lesion: it is closer to the lesion-free slice there
    clean = brain_slices("T1", z, (64, 64))
    assert (res.healthy[:, 0] - clean)[truth].abs().mean() < 0.5 * (x - clean)[truth].abs().mean()
    simplex = detect("brain64", x[:, None], t=250, steps=5, noise="simplex", seed=0)
    assert bool(torch.isfinite(simplex.score).all()) and not torch.equal(simplex.score, res.score)


def test_bad_inputs():
    x = brain_slices("T1", [45], (64, 64))[:, None]
    with pytest.raises(ValueError, match="noise must be"):
        detect("brain64", x, noise="perlin")
    with pytest.raises(ValueError, match="t_start"):
        detect("brain64", x, t=1000)
    with pytest.raises(ValueError, match=r"channels|\(batch, 1"):
        detect("brain64", x.repeat(1, 2, 1, 1))
    with pytest.raises(ValueError, match="no bundled prior"):
        detect("nonexistent", x)
