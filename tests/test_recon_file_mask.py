"""The line mask of a file's reconstruction: a damaged stored mask (NaN, values other than 0/1) is
refused instead of being read as fully sampled, and so are nonsensical accelerations and centers."""

from __future__ import annotations

import math

import pytest
import torch

from mridpm.mri.masks import check_line_options, file_mask, line_mask

K = torch.ones(1, 2, 4, 16, dtype=torch.complex64)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_stored_mask_is_refused(bad: float) -> None:
    for stored in (torch.full((16,), bad), torch.cat([torch.ones(15), torch.tensor([bad])])):
        with pytest.raises(ValueError, match=r"^the file's mask contains NaN or Inf; repair the file or give --accel$"):
            file_mask(K, stored, None, None, 0)


def test_a_stored_mask_must_be_zero_or_one() -> None:
    stored = torch.tensor([1.0, 0, 0.5, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, -1])
    with pytest.raises(ValueError, match=r"^the file's mask must hold only 0 and 1, found \[-1\.0, 0\.5, 2\.0\]"):
        file_mask(K, stored, None, None, 0)
    ok = torch.tensor([1.0, 0] * 8)
    assert torch.equal(file_mask(K, ok, None, None, 0).reshape(-1), ok)
    assert torch.equal(file_mask(K, ok.bool().float(), None, None, 0).reshape(-1), ok)


@pytest.mark.parametrize(("accel", "center", "message"), [
    (math.nan, None, r"acceleration must be a finite number > 1, got nan"),
    (math.inf, None, r"acceleration must be a finite number > 1, got inf"),
    (1.0, None, r"acceleration must be a finite number > 1, got 1\.0"),
    (0.5, None, r"acceleration must be a finite number > 1, got 0\.5"),
    (4.0, 0.0, r"center fraction must lie in \(0, 1\), got 0\.0"),
    (4.0, 1.0, r"center fraction must lie in \(0, 1\), got 1\.0"),
    (4.0, math.nan, r"center fraction must lie in \(0, 1\), got nan"),
    (None, 0.08, r"a center fraction applies only with an acceleration"),
])
def test_nonsense_line_options_are_refused(accel, center, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_line_options(accel, center)
    with pytest.raises(ValueError, match=message):
        file_mask(K, None, accel, center, 0)


def test_good_line_options_pass() -> None:
    check_line_options(None, None)
    check_line_options(4, 0.08)
    assert torch.equal(file_mask(K, None, 4.0, 0.25, 1), line_mask(16, 4.0, 0.25, 1))


def test_write_fastmri_keeps_a_2d_mask_2d(tmp_path) -> None:
    """Lines are stored as fastMRI's (W,), a 2D mask as (H, W) or (slices, H, W), and read back so."""
    from mridpm.data.fastmri import read_fastmri, write_fastmri

    pytest.importorskip("h5py")
    k = torch.ones(2, 3, 6, 8, dtype=torch.complex64)
    plane = (torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    for mask, stored in ((plane.reshape(1, 1, 6, 8), plane), (plane.expand(2, 1, 6, 8), plane.expand(2, 6, 8)),
                         (line_mask(8, 4.0), line_mask(8, 4.0).reshape(-1))):
        write_fastmri(tmp_path / "m.h5", k, mask=mask)
        assert torch.equal(read_fastmri(tmp_path / "m.h5").mask, stored)


@pytest.fixture(scope="module")
def masked_file(tmp_path_factory: pytest.TempPathFactory):
    """Two 8-coil 48x40 slices (full k-space, true maps) and a variable-density Poisson-disc 2D mask."""
    from mridpm.data.simulation import simulated_slices
    from mridpm.mri.masks import poisson_disc_2d

    pytest.importorskip("h5py")
    pytest.importorskip("nibabel")
    x, maps, k, _ = simulated_slices([60, 68], (48, 40), 8, 0.002, seed=3)
    mask = poisson_disc_2d((48, 40), 3.0, calib=12, seed=1)
    return tmp_path_factory.mktemp("masked"), x, maps.expand(2, -1, -1, -1).clone(), k, mask


def _run_capturing(monkeypatch, path, out, **kwargs):
    """reconstruct_file with the operators and k-space that reached the prior recorded."""
    from mridpm.tasks import recon_file as rf
    from mridpm.tasks import recon_slices

    seen, real = [], recon_slices.reconstruct_prior

    def record(y, op, *a, **kw):
        seen.append((y, op))
        return real(y, op, *a, **kw)

    monkeypatch.setattr(recon_slices, "reconstruct_prior", record)
    written = rf.reconstruct_file(path, out, method="dds", steps=2, samples=1, progress=False, **kwargs)
    return written, seen


@pytest.mark.filterwarnings("ignore:the prior was trained on")
@pytest.mark.parametrize("how", ["stored", "stored per slice", "zeros"])
def test_a_2d_masked_file_never_takes_unmeasured_kspace_as_measured(masked_file, monkeypatch, how) -> None:
    """A 2D mask stored in the file (shared or per slice) or defined by the k-space zeros reaches the
    data consistency as that 2D mask, and the zero-filled output is the 2D-masked adjoint."""
    import h5py

    from mridpm.data.fastmri import write_fastmri
    from mridpm.mri.operators import Sense
    from mridpm.nets import priors

    if "brain64c" not in priors.available():
        pytest.skip("prior not bundled")
    d, x, maps, k, mask = masked_file
    per = torch.stack([mask, torch.roll(mask, 1, -1)]) if how == "stored per slice" else mask.expand(2, 48, 40)
    path = d / f"{how.replace(' ', '_')}.h5"
    if how == "zeros":
        write_fastmri(path, k * per[:, None], target=x.abs())
    else:
        write_fastmri(path, k, target=x.abs(), mask=per if how == "stored per slice" else mask)
    written, seen = _run_capturing(monkeypatch, path, d / f"{path.stem}_out.h5", maps=maps)
    assert len(seen) == 2
    for s, (y, op) in enumerate(seen):
        m = torch.broadcast_to(op.mask.mask, y.shape)
        assert torch.equal(m[0], per[s].expand(8, 48, 40))  # 2D, not every column with a sample
        assert bool((y[0][per[s].expand(8, 48, 40) == 0] == 0).all())
    with h5py.File(written["hdf5"]) as f:
        zf = torch.from_numpy(f["zero_filled"][()])
    want = Sense(maps, per[:, None]).adjoint(k * per[:, None]).abs()
    torch.testing.assert_close(zf, want, rtol=1e-4, atol=1e-5 * float(want.max()))


@pytest.mark.filterwarnings("ignore:the prior was trained on")
def test_espirit_calibrates_from_the_center_of_a_2d_mask(masked_file, monkeypatch) -> None:
    """Without maps, ESPIRiT takes the fully sampled center square of the 2D mask; a Poisson-disc
    --accel mask (mask_kind) is made 2D and recorded in the settings."""
    import h5py

    from mridpm.data.fastmri import write_fastmri
    from mridpm.nets import priors

    if "brain64c" not in priors.available():
        pytest.skip("prior not bundled")
    d, x, _, k, mask = masked_file
    write_fastmri(d / "esp.h5", k * mask, target=x.abs())
    _, seen = _run_capturing(monkeypatch, d / "esp.h5", d / "esp_out.h5")
    assert all(bool((op.maps != 0).any()) for _, op in seen)
    written, seen = _run_capturing(monkeypatch, d / "esp.h5", d / "kind_out.h5", accel=4.0, center=0.25,
                                   mask_kind="poisson")
    m = seen[0][1].mask.mask
    assert m.shape == (1, 1, 48, 40) and abs(float(m.mean()) - 0.25) < 0.02
    with h5py.File(written["hdf5"]) as f:
        assert f.attrs["mask_kind"] == "poisson"


def test_the_noise_estimate_reads_the_measured_samples_of_a_2d_mask() -> None:
    """Only the samples a 2D mask measures in the outermost rows count (the unmeasured zeros would pull
    the median to 0); a line mask gives what it gave before, from the sampled columns."""
    from mridpm.mri.masks import poisson_disc_2d
    from mridpm.tasks.recon_baselines import estimate_noise_std

    g = torch.Generator().manual_seed(0)
    noise = 0.3 * torch.randn(2, 4, 64, 48, dtype=torch.complex64, generator=g)  # 0.3 / sqrt(2) per real part
    mask = poisson_disc_2d((64, 48), 4.0, calib=8, seed=0)
    assert estimate_noise_std(noise * mask, mask) == pytest.approx(0.3 / 2**0.5, rel=0.1)
    assert estimate_noise_std((noise * mask)[:, 0], mask.reshape(1, 1, 64, 48)) == pytest.approx(0.3 / 2**0.5,
                                                                                                rel=0.15)
    lines = line_mask(48, 4.0)
    assert estimate_noise_std(noise * lines, lines) == pytest.approx(0.3 / 2**0.5, rel=0.1)
