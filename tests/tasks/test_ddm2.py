"""DDM2 self-supervised denoising on tiny series: Stage I learns from noisy volumes alone, the noise
level and its timestep match, the full pipeline beats its input, training resumes from a work_dir,
odd sizes are padded, bad input is refused in one line, and `mridpm denoise` writes its files."""

import dataclasses

import numpy as np
import pytest
import torch

from mridpm import cli
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.tasks import ddm2
from mridpm.tasks.ddm2 import DDM2Config, ddm2_denoise, neighbours, noise_sigma, normalise_series

FAST = DDM2Config(stage1_steps=150, stage3_steps=100, lr=2e-3, ema_decay=0.9)
TINY = DDM2Config(stage1_steps=20, stage3_steps=10, batch_size=4, sample_steps=3)


def smooth_series(volumes: int = 6, slices: int = 2, size: tuple[int, int] = (16, 16), sigma: float = 0.08,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, Rician-noisy) series (V, S, H, W): a blob over a step, the same in every volume, independent
    noise (the magnitude of complex Gaussian noise of std sigma per part)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
    img = 0.3 + 0.5 * torch.exp(-2 * (yy**2 + xx**2)) + 0.15 * (yy > 0)
    clean = torch.stack([img * (1 - 0.1 * s) for s in range(slices)]).expand(volumes, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(seed)
    real, imag = (sigma * torch.randn(clean.shape, generator=g) for _ in range(2))
    return clean, torch.hypot(clean + real, imag).clamp(0, 1)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().mean())


@pytest.fixture(scope="module")
def run():
    clean, noisy = smooth_series()
    return clean, noisy, ddm2_denoise(noisy, FAST, progress=False)  # the noisy series is all it gets


def test_stage1_learns_from_noisy_volumes_alone(run):
    clean, noisy, res = run
    assert mse(res.stage1, clean) < 0.3 * mse(noisy, clean)


def test_full_pipeline_shapes_range_and_gain(run):
    clean, noisy, res = run
    assert res.denoised.shape == res.stage1.shape == noisy.shape
    assert res.sigma.shape == res.t_star.shape == (noisy.shape[0],)
    assert bool(torch.isfinite(res.denoised).all()) and 0 <= float(res.denoised.min()) <= float(res.denoised.max()) <= 1
    assert mse(res.denoised, clean) < 0.5 * mse(noisy, clean)


def test_noise_matching():
    g = torch.Generator().manual_seed(1)
    d = torch.full((2, 3, 32, 32), 0.5)
    for sigma in (0.02, 0.05, 0.1):
        est = noise_sigma(d + sigma * torch.randn(d.shape, generator=g), d)
        assert torch.allclose(est, torch.full((2,), sigma), rtol=0.1)
    est = noise_sigma(d[:1] + 0.05 * torch.randn(d[:1].shape, generator=g), torch.zeros_like(d[:1]))  # no foreground
    assert abs(float(est[0]) - 0.05) < 0.005


def test_gaussian_noise_regresses_the_magnitude():
    clean, _ = smooth_series()
    noisy = (clean + 0.08 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    res = ddm2_denoise(noisy, dataclasses.replace(FAST, noise="gaussian", stage3_steps=0), progress=False)
    assert mse(res.stage1, clean) < 0.3 * mse(noisy, clean)
    assert torch.allclose(res.sigma, torch.full_like(res.sigma, 0.08), rtol=0.25)


def test_rician_bias_and_sigma_from_the_second_moment():
    # Stage I learns E[M^2] = A^2 + 2 sigma^2 of Rician M: the level comes back from it and M alone
    g = torch.Generator().manual_seed(2)
    amp = torch.linspace(0, 1, 64).expand(2, 4, 64, 64)  # half the voxels at low SNR, a dark background
    for sigma in (0.03, 0.08):
        m = torch.hypot(amp + sigma * torch.randn(amp.shape, generator=g), sigma * torch.randn(amp.shape, generator=g))
        est = ddm2.rician_sigma(m, amp**2 + 2 * sigma**2)
        assert torch.allclose(est, torch.full((2,), sigma), rtol=0.1)
        assert torch.allclose(ddm2.amplitude(amp**2 + 2 * est[:, None, None, None] ** 2, est), amp, atol=1e-6)


def test_t_star_follows_the_schedule(run):
    _, _, res = run
    abar = DiscreteSchedule.from_name("linear", 1000).alphas_cumprod
    level = ((1 - abar) / abar).sqrt()
    for s, t in zip(res.sigma, res.t_star, strict=True):
        assert int(t) == int((level - 2 * s).abs().argmin())  # images in [-1, 1]: the std doubles


def test_neighbours():
    assert neighbours(8, 0, 4) == [1, 2, 3, 4]
    assert neighbours(8, 4, 4) == [3, 5, 2, 6]
    assert neighbours(3, 2, 4) == [1, 0]


def test_training_draws_the_neighbours_prediction_uses():
    # each channel must hold the same volume in training as at prediction, or the index tells the net nothing
    x = torch.arange(6.0)[:, None, None, None].expand(6, 3, 4, 4).contiguous()  # volume v is all v
    target, others, v = ddm2._draw(x, 3, 32, torch.Generator().manual_seed(0))
    assert torch.equal(target[:, 0, 0, 0], v.float())
    for row, i in zip(others[:, :, 0, 0], v, strict=True):
        assert row.tolist() == [float(n) for n in neighbours(6, int(i), 3)]


def test_resume_does_not_retrain(tmp_path, monkeypatch):
    _, noisy = smooth_series(volumes=3, slices=1)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # killed during Stage III
        m.setattr(ddm2, "diffusion_loss", stop)
        with pytest.raises(KeyboardInterrupt):
            ddm2_denoise(noisy, TINY, work_dir=tmp_path, progress=False)
    stage1 = tmp_path / "stage1" / "step-00000020.json"
    before = stage1.read_bytes(), stage1.stat().st_mtime_ns
    first = ddm2_denoise(noisy, TINY, work_dir=tmp_path, progress=False)
    assert (stage1.read_bytes(), stage1.stat().st_mtime_ns) == before  # Stage I resumed, not retrained
    assert (tmp_path / "stage3" / "step-00000010.json").is_file()
    with monkeypatch.context() as m:  # both stages done: nothing is trained again
        m.setattr(ddm2, "diffusion_loss", stop)
        again = ddm2_denoise(noisy, TINY, work_dir=tmp_path, progress=False)
    assert torch.equal(first.stage1, again.stage1) and torch.equal(first.denoised, again.denoised)
    with pytest.raises(ValueError, match="another series"):
        ddm2_denoise(noisy.flip(-1), TINY, work_dir=tmp_path, progress=False)


@pytest.mark.parametrize("size", [(10, 10), (13, 17)])
def test_odd_sizes_are_padded(size):
    _, noisy = smooth_series(volumes=3, slices=2, size=size)
    res = ddm2_denoise(noisy, TINY, progress=False)
    assert res.denoised.shape == res.stage1.shape == noisy.shape
    assert bool(torch.isfinite(res.denoised).all())


@pytest.mark.parametrize("series, message", [
    (torch.rand(2, 16, 16), "must be \\(V >= 2"),
    (torch.rand(1, 2, 16, 16), "must be \\(V >= 2"),
    (torch.rand(3, 2, 2, 16), "H >= 4"),
    (torch.full((3, 2, 16, 16), float("nan")), "NaN or Inf"),
    (torch.zeros(3, 2, 16, 16), "all zero"),
    (torch.rand(3, 2, 16, 16) * 5, "must lie in \\[0, 1\\]"),
    (np.random.rand(3, 2, 16, 16), "real floating-point tensor"),
    (torch.ones(3, 2, 16, 16, dtype=torch.long), "real floating-point tensor"),
])
def test_bad_input_is_one_line(series, message):
    with pytest.raises(ValueError, match=message) as err:
        ddm2_denoise(series, TINY, progress=False)
    assert "\n" not in str(err.value)


def test_unknown_noise_model_is_refused():
    with pytest.raises(ValueError, match="noise must be 'rician' or 'gaussian'"):
        ddm2_denoise(smooth_series(volumes=3, slices=1)[1], dataclasses.replace(TINY, noise="poisson"), progress=False)


def test_normalise_series():
    x = torch.rand(4, 2, 32, 32) * 300
    x[0, 0, 0, 0] = 1e6  # an outlier is clipped, not the scale
    y, scale = normalise_series(x)
    assert 250 < scale < 301 and float(y.max()) == 1 and float(y.min()) >= 0


def test_cli_killed_run_keeps_its_checkpoints(tmp_path, monkeypatch, capsys):
    """Killed in Stage III, `mridpm denoise` writes no output but keeps Stage I's checkpoint for the rerun."""
    from mridpm.data.nifti import write_nifti

    _, noisy = smooth_series(volumes=3, slices=1, size=(8, 8))
    src = write_nifti(tmp_path / "dwi.nii", noisy.permute(2, 3, 1, 0).contiguous())

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ddm2, "diffusion_loss", stop)
    argv = ["denoise", str(src), "--self-supervised", "--out", str(tmp_path / "d.nii"), "--stage1-steps", "3",
            "--work-dir", str(tmp_path / "work")]
    assert cli.main(argv) == 130
    assert not (tmp_path / "d.nii").exists() and (tmp_path / "work" / "stage1" / "step-00000003.json").is_file()


def test_cli_writes_nifti_and_png(tmp_path, capsys):
    from mridpm.data.nifti import read_nifti, write_nifti

    _, noisy = smooth_series(volumes=4, slices=2, size=(10, 10))
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    src = write_nifti(tmp_path / "dwi.nii.gz", (noisy * 700).permute(2, 3, 1, 0).contiguous(), affine)
    out = tmp_path / "den.nii.gz"
    argv = ["denoise", str(src), "--self-supervised", "--out", str(out), "--stage1-steps", "5", "--stage3-steps", "5",
            "--work-dir", str(tmp_path / "work")]
    assert cli.main(argv) == 0
    vol, aff = read_nifti(out)
    assert vol.shape == (10, 10, 2, 4) and np.allclose(aff, affine) and float(vol.max()) > 100  # input units
    assert (tmp_path / "den.png").is_file() and (tmp_path / "work" / "stage3" / "latest.json").is_file()
    capsys.readouterr()
    flat = write_nifti(tmp_path / "t1.nii.gz", noisy[0].permute(1, 2, 0).contiguous())
    for args, message in (([str(flat), "--self-supervised"], "4D"), ([str(src)], "mridpm enhance denoise")):
        assert cli.main(["denoise", *args, "--out", str(tmp_path / "x.nii")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mridpm denoise: error: ") and message in lines[0], lines
    assert not (tmp_path / "x.nii").exists()
