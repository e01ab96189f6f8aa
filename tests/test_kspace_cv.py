"""k-space cross-validation: disjoint held-back samples outside the center, a truth image scores the
noise level, the score ranks the baselines as the ground truth does, and nothing held back leaks."""

import math

import pytest
import torch

from mridpm.mri.fft import fft2c
from mridpm.mri.masks import line_mask, uniform_random_2d
from mridpm.tasks import kspace_cv as cv
from mridpm.tasks.recon_baselines import image_metrics


def test_line_holdout_is_whole_lines_outside_the_center():
    mask = line_mask(128, 4, seed=3)
    lo, hi = cv._center_run(mask.reshape(-1))
    outside = int(mask.sum()) - (hi - lo)
    train, held = cv.holdout_mask(mask, 0.1, seed=0)
    assert train.shape == held.shape == mask.shape and train.dtype == held.dtype == torch.float32
    assert not bool((train * held).any()) and torch.equal(train + held, mask)  # disjoint, together the mask
    assert int(held.sum()) == round(0.1 * outside)
    assert not bool(held.reshape(-1)[lo:hi].any())  # the calibration lines stay for training
    assert torch.equal(cv.holdout_mask(mask, 0.1, seed=0)[1], held)  # seeded
    assert not torch.equal(cv.holdout_mask(mask, 0.3, seed=1)[1], cv.holdout_mask(mask, 0.3, seed=2)[1])
    full = mask.reshape(1, 128).expand(64, 128)  # the same lines given as an (H, W) plane: whole lines held
    _, held2 = cv.holdout_mask(full, 0.1, seed=0)
    assert torch.equal(held2, held.reshape(1, 128).expand(64, 128))
    _, held3 = cv.holdout_mask(mask, 0.5, seed=0, calib=40)  # an explicit calibration width
    assert not bool(held3.reshape(-1)[(128 - 40 + 1) // 2 : (128 - 40 + 1) // 2 + 40].any())


def test_point_holdout_stays_outside_the_center_square():
    mask = uniform_random_2d((64, 48), 4, calib=12, seed=0)
    train, held = cv.holdout_mask(mask, 0.1, seed=0)
    assert cv._center_square(mask) >= 12
    assert not bool((train * held).any()) and torch.equal(train + held, mask)
    side = cv._center_square(mask)
    r0, c0 = (64 - side + 1) // 2, (48 - side + 1) // 2
    assert not bool(held[r0 : r0 + side, c0 : c0 + side].any())
    assert int(held.sum()) == round(0.1 * (int(mask.sum()) - side * side))


def test_holdout_refuses_bad_input():
    mask = line_mask(64, 4, seed=0)
    for fraction in (0.0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match="fraction"):
            cv.holdout_mask(mask, fraction)
    with pytest.raises(ValueError, match="0/1"):
        cv.holdout_mask(mask * 0.5)
    center_only = torch.zeros(1, 1, 1, 64)
    center_only[..., 28:36] = 1
    with pytest.raises(ValueError, match="nothing to hold back"):
        cv.holdout_mask(center_only)
    with pytest.raises(ValueError, match="same for every slice"):
        cv.holdout_mask(torch.stack([uniform_random_2d((32, 32), 4, 8, seed=s) for s in (0, 1)]))


@pytest.fixture(scope="module")
def phantom():
    """A 128x128 simulated 8-coil brain slice (true maps, noise 1e-4 of the k-space peak) and a 4x point mask."""
    pytest.importorskip("nilearn")
    from mridpm.data.phantom import brain_slices, simulate_multicoil

    k, maps, x = simulate_multicoil(brain_slices("T1", [90], shape=(128, 128)), coils=8, noise=1e-4, seed=0)
    sigma = 1e-4 * float(fft2c(maps * x[:, None]).abs().max())
    return k, maps[None], x, sigma, uniform_random_2d((128, 128), 4, calib=16, seed=0)


def test_the_truth_scores_the_noise_level(phantom):
    k, maps, x, sigma, mask = phantom
    _, held = cv.holdout_mask(mask, 0.1, seed=0)
    y = k * mask
    score = cv.cv_nmse(x, maps, y, held)
    noise = k - fft2c(maps * x[:, None])
    floor = float((noise * held).abs().square().sum() / (y * held).abs().square().sum())
    assert score == pytest.approx(floor, rel=1e-4)  # exactly the noise's share of the held-back energy
    expected = 2 * sigma**2 * int(held.sum()) * k.shape[1] / float((y * held).abs().square().sum())
    assert score == pytest.approx(expected, rel=0.2) and score < 0.05


def test_scores_rank_the_baselines_as_the_ground_truth(phantom):
    k, maps, x, _, mask = phantom
    y = k * mask
    images = {}

    def keep(name, fn):
        return lambda y_train, train: images.setdefault(name, fn(y_train, train))

    recs = {n: keep(n, f) for n, f in cv.baseline_reconstructors(maps).items()}
    scores = cv.cross_validate(y, mask, recs, maps=maps, fraction=0.1, seed=0)
    assert scores["zero_filled"] > 2 * scores["cg_sense"]  # zero-filled predicts the held-back samples badly
    psnr = {n: image_metrics(x[0].abs(), image[0].abs())["psnr"] for n, image in images.items()}
    assert sorted(scores, key=scores.get) == sorted(psnr, key=psnr.get, reverse=True)


def test_reconstructors_see_only_the_training_samples(phantom):
    k, maps, x, _, mask = phantom
    y = k * mask
    seen = []

    def spy(y_train, train):
        seen.append((y_train, train))
        return x

    scores = cv.cross_validate(y, mask, {"spy": spy}, maps=maps, fraction=0.2, seed=5, folds=2)
    assert len(seen) == 2 and set(scores) == {"spy"}
    for fold, (y_train, train) in enumerate(seen):
        expect_train, held = cv.holdout_mask(mask, 0.2, seed=5 + fold)
        assert torch.equal(train, expect_train)
        assert not bool((y_train * held).abs().gt(0).any()) and torch.equal(y_train, y * train)


def test_single_coil_and_refusals(phantom):
    k, maps, x, _, mask = phantom
    y1 = fft2c(x) * mask  # one coil: (batch, H, W), no maps
    scores = cv.cross_validate(y1, mask, {"truth": lambda yt, mt: x, "zero": lambda yt, mt: torch.zeros_like(x)})
    assert scores["truth"] < 1e-10 and scores["zero"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs coil maps"):
        cv.cross_validate(k * mask, mask, {"truth": lambda yt, mt: x})
    with pytest.raises(TypeError, match="complex"):
        cv.cv_nmse(x.abs(), maps, k * mask, mask)
    with pytest.raises(ValueError, match="folds"):
        cv.cross_validate(y1, mask, {}, folds=0)


def test_file_maps_noise_and_priors_use_training_samples_only(tmp_path, monkeypatch):
    pytest.importorskip("nilearn")
    pytest.importorskip("h5py")
    from mridpm.data.simulated import simulate_dataset

    (path,) = simulate_dataset(tmp_path, volumes=1, slices=1, shape=(64, 64), noise=0.002)
    seen: dict[str, list[torch.Tensor]] = {"maps": [], "noise": [], "prior": []}
    real_maps, real_noise, real_prior = cv.center_maps, cv.estimate_noise_std, cv.reconstruct_prior

    def maps_spy(y, acs):
        seen["maps"].append(y)
        return real_maps(y, acs)

    def noise_spy(y, mask, *a):
        seen["noise"].append(y)
        return real_noise(y, mask, *a)

    def prior_spy(y, op, prior, **kw):
        seen["prior"].append(y)
        return real_prior(y, op, prior, **kw)

    monkeypatch.setattr(cv, "center_maps", maps_spy)
    monkeypatch.setattr(cv, "estimate_noise_std", noise_spy)
    monkeypatch.setattr(cv, "reconstruct_prior", prior_spy)
    rows = cv.cross_validate_file(path, accel=4, center=0.16, steps=2, seed=1)
    assert [r["method"] for r in rows] == ["zero_filled", "cg_sense", "l1_wavelet", "dds"]
    assert all(math.isfinite(r["cv_nmse"]) and r["cv_nmse"] > 0 and r["slices"] == 1 for r in rows)
    mask = line_mask(64, 4, center=0.16, seed=1)
    _, held = cv.holdout_mask(mask, 0.1, seed=1)
    assert rows[0]["heldout_lines"] == int(held.sum()) >= 1
    for name, inputs in seen.items():
        assert inputs, f"{name} was not computed"
        for y in inputs:
            assert not bool((y * held).abs().gt(0).any()), f"held-back samples leaked into the {name}"
    with pytest.raises(ValueError, match="methods"):
        cv.cross_validate_file(path, methods=("pc-rss",), accel=4, center=0.16)


def test_cli_scores_a_file_by_cross_validation(tmp_path, capsys):
    from mridpm import cli

    assert cli.main(["simulate", "--out", str(tmp_path), "--volumes", "1", "--slices", "1", "--coils", "8",
                     "--size", "64", "64"]) == 0
    f = next(tmp_path.glob("*.h5"))
    capsys.readouterr()
    assert cli.main(["evaluate", "--kspace-cv", str(f), "--accel", "4", "--center", "0.2", "--mask-kind", "poisson",
                     "--methods", "zero_filled,cg_sense"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "|" in line][2:]
    scores = {r[2].strip(): float(r[3]) for r in rows}
    assert set(scores) == {"zero_filled", "cg_sense"} and scores["cg_sense"] < scores["zero_filled"]
