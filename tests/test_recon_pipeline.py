"""The reconstruction pipelines: a fastMRI file through `mridpm reconstruct` (outputs, resume, bad
input), `mridpm evaluate` and `mridpm demo` on held-out simulated brain slices."""

from __future__ import annotations

import json

import pytest
import torch

from mridpm import cli
from mridpm.data.simulation import simulated_slices
from mridpm.mri.masks import line_mask
from mridpm.nets import priors
from mridpm.random import Generator
from mridpm.tasks import recon_file as rf
from mridpm.tasks import recon_parts, recon_slices
from mridpm.tasks.recon_evaluation import evaluate
from mridpm.tasks.recon_figures import center_crop, demo

pytest.importorskip("h5py")
pytest.importorskip("nilearn")
pytestmark = pytest.mark.skipif("brain64c" not in priors.available(), reason="prior not bundled")

FAST = ["--method", "dds", "--steps", "6", "--samples", "2"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A 3-slice, 8-coil 64x64 fastMRI file of held-out brain slices (fully sampled, with its target),
    its true coil maps and its images."""
    from mridpm.data.fastmri import write_fastmri

    x, maps, k, _ = simulated_slices([60, 68, 76], (64, 64), 8, 0.002, seed=3)
    path = tmp_path_factory.mktemp("vol") / "brain.h5"
    write_fastmri(path, k, target=x.abs())
    return str(path), maps.expand(3, -1, -1, -1), x


def _read(path):
    import h5py

    with h5py.File(path, "r") as f:
        return {k: torch.from_numpy(f[k][()]) for k in f}


def test_reconstruct_file_writes_every_output(volume, tmp_path, capsys) -> None:
    path, _, x = volume
    out = tmp_path / "recon.h5"
    argv = ["reconstruct", path, "--accel", "4", "--center", "0.16", "--out", str(out), "--samples", "2"]
    assert cli.main(argv) == 0  # DDS, 50 steps
    printed = capsys.readouterr().out
    data = _read(out)
    assert set(data) == {"reconstruction", "uncertainty", "zero_filled", "cg_sense"}
    assert all(v.shape == (3, 64, 64) for v in data.values())
    assert float(data["uncertainty"].min()) >= 0 and float(data["uncertainty"].max()) > 0
    # ESPIRiT maps, 4x, measured noise: the DPM reconstruction is closer to the truth than zero-filled
    truth = x.abs()
    err = {k: float((data[k] - truth).norm() / truth.norm()) for k in ("reconstruction", "zero_filled")}
    assert err["reconstruction"] < err["zero_filled"], err
    from mridpm.data.nifti import read_nifti

    nii, _ = read_nifti(tmp_path / "recon.nii.gz")
    assert tuple(nii.shape) == (64, 64, 3)
    torch.testing.assert_close(nii.permute(2, 1, 0), data["reconstruction"])
    from PIL import Image

    with Image.open(tmp_path / "recon.png") as im:
        assert im.size[0] > 5 * 64 * 3  # five panels (with the error against the file's target)
    assert "png" in printed and not (tmp_path / "recon.h5.parts").exists()


def test_interrupted_run_resumes_without_recomputing(volume, tmp_path, monkeypatch) -> None:
    path, maps, _ = volume
    kwargs = {"method": "dds", "accel": 4, "steps": 6, "samples": 2, "maps": maps, "progress": False}
    whole = _read(rf.reconstruct_file(path, tmp_path / "whole.h5", **kwargs)["hdf5"])

    real, calls = recon_slices.reconstruct_prior, []

    def failing(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is cut off in the middle of the volume
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(recon_slices, "reconstruct_prior", failing)
    with pytest.raises(KeyboardInterrupt):
        rf.reconstruct_file(path, tmp_path / "cut.h5", **kwargs)
    assert sorted(p.name for p in (tmp_path / "cut.h5.parts").glob("slice-*")) == ["slice-0000.safetensors",
                                                                                     "slice-0001.safetensors"]
    calls.clear()
    monkeypatch.setattr(recon_slices, "reconstruct_prior", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    resumed = _read(rf.reconstruct_file(path, tmp_path / "cut.h5", **kwargs)["hdf5"])
    assert len(calls) == 1  # only the unfinished slice
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="other settings"):
        (tmp_path / "again.h5.parts").mkdir()
        (tmp_path / "again.h5.parts" / "settings.json").write_text(json.dumps({"method": "pc"}))
        rf.reconstruct_file(path, tmp_path / "again.h5", **kwargs)


def test_noiseless_file_reconstruction_is_data_consistent(tmp_path) -> None:
    """Noiseless k-space and noise_std 0: the reconstruction reproduces the measured k-space."""
    from mridpm.data.fastmri import write_fastmri
    from mridpm.mri.operators import Sense
    from mridpm.tasks.reconstruction import reconstruct_prior

    _, maps, k, _ = simulated_slices([64], (64, 64), 8, 0.0, seed=5)
    mask = line_mask(64, 4)
    y = k * mask
    write_fastmri(tmp_path / "one.h5", y, mask=mask)
    out = rf.reconstruct_file(tmp_path / "one.h5", tmp_path / "dc.h5", method="dds", steps=6, samples=1,
                              noise_std=0.0, maps=maps, progress=False)
    recon = _read(out["hdf5"])["reconstruction"]
    op = Sense(maps, mask)
    r = reconstruct_prior(y, op, priors.load_prior("brain64c"), method="dds", steps=6, noise_std=0.0,
                          generator=Generator(0))
    assert float((op.forward(r.mean) - y).abs().max()) < 1e-4 * float(y.abs().max())
    torch.testing.assert_close(r.mean.abs(), recon, rtol=1e-5, atol=1e-5 * float(recon.max()))


def test_bad_inputs_give_clear_errors(volume, tmp_path, capsys) -> None:
    import h5py

    from mridpm.data.fastmri import write_fastmri

    path, maps, _ = volume
    out = str(tmp_path / "o.h5")

    def error(*argv: str) -> str:
        assert cli.main(["reconstruct", *argv, "--out", out, *FAST]) == 2
        return capsys.readouterr().err

    no_kspace = tmp_path / "nok.h5"
    with h5py.File(no_kspace, "w") as f:
        f.create_dataset("reconstruction_rss", data=torch.zeros(2, 8, 8).numpy())
    assert "no 'kspace'" in error(str(no_kspace))
    assert "no fastMRI file" in error(str(tmp_path / "missing.h5"))
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n not really")
    assert "not a readable HDF5" in error(str(corrupt))
    k = torch.randn(1, 8, 64, 64, dtype=torch.complex64)
    write_fastmri(tmp_path / "wide.h5", k, mask=torch.ones(60))
    assert "width 60" in error(str(tmp_path / "wide.h5"))
    write_fastmri(tmp_path / "empty.h5", k, mask=torch.zeros(64))
    assert "samples no k-space line" in error(str(tmp_path / "empty.h5"))
    write_fastmri(tmp_path / "zeros.h5", torch.zeros(1, 8, 64, 64, dtype=torch.complex64))
    assert "all zeros" in error(str(tmp_path / "zeros.h5"))
    write_fastmri(tmp_path / "full.h5", k)
    assert "--accel" in error(str(tmp_path / "full.h5"))
    bad_maps = tmp_path / "maps.h5"
    with h5py.File(bad_maps, "w") as f:
        f.create_dataset("maps", data=maps[:, :5].numpy())  # 5 coils for 8-coil k-space
    assert "coil maps of shape (3, 5, 64, 64)" in error(path, "--accel", "4", "--maps", str(bad_maps))
    write_fastmri(tmp_path / "acs.h5", k)
    assert "ESPIRiT needs" in error(str(tmp_path / "acs.h5"), "--accel", "8", "--center", "0.01")
    assert "t_start" in error(path, "--accel", "4", "--center", "0.16", "--warm-start", "cg")


def test_warm_start_from_the_command_line(volume, tmp_path, monkeypatch) -> None:
    path, maps, _ = volume
    real, evals = recon_slices.reconstruct_prior, []
    monkeypatch.setattr(recon_slices, "reconstruct_prior",
                        lambda *a, **kw: (r := real(*a, **kw), evals.append(r.evaluations))[0])
    out = rf.reconstruct_file(path, tmp_path / "warm.h5", accel=4, samples=1, maps=maps, warm_start="cg",
                              t_start=300, progress=False)["hdf5"]
    assert evals == [16, 16, 16]  # DDS, 50 leading steps: timesteps 300, 280, ..., 0
    import h5py

    with h5py.File(out, "r") as f:
        assert f.attrs["warm_start"] == "cg" and f.attrs["t_start"] == "300"


def test_volume_with_tv_along_slices(volume, tmp_path) -> None:
    path, maps, x = volume
    out = rf.reconstruct_file(path, tmp_path / "tv.h5", method="tv3d", accel=4, samples=2, steps=10, maps=maps,
                              progress=False)["hdf5"]
    data = _read(out)
    assert data["reconstruction"].shape == (3, 64, 64) and float(data["uncertainty"].max()) > 0
    truth = x.abs()
    err = {k: float((data[k] - truth).norm() / truth.norm()) for k in ("reconstruction", "zero_filled")}
    assert err["reconstruction"] < err["zero_filled"], err


def test_evaluate_and_demo(tmp_path, capsys) -> None:
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--methods", "dds,projection", "--accels", "8", "--slices", "1",
                     "--json", str(out)]) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    names = [r["method"] for r in rows]
    assert names == ["zero-filled", "CG-SENSE", "L1-wavelet", "dds", "projection"]
    assert "| 8x | dds |" in table and all(r["slices"] == 1 for r in rows)
    by = {r["method"]: r for r in rows}
    assert by["dds"]["evals"] == 50 and by["projection"]["evals"] == 100
    assert by["dds"]["psnr"] > by["zero-filled"]["psnr"]
    for method in ("kspace", "tv3d"):
        with pytest.raises(ValueError, match="cannot run"):
            evaluate((8,), (method,))
    png = tmp_path / "demo.png"
    rows = demo(png, slices=1, samples=1, progress=False)
    assert png.stat().st_size > 0 and [r["method"] for r in rows][-1] == "dds"


def test_figure_crops_to_a_smaller_target(tmp_path) -> None:
    """fastMRI targets are center crops (320x320 of 640x368): the figure's metrics and error use that crop."""
    from PIL import Image

    torch.manual_seed(0)
    vols = {k: torch.rand(3, 20, 12) for k in ("mean", "std", "zero_filled", "cg")}
    target = center_crop(vols["mean"], (8, 8)).clone()
    assert torch.equal(target, vols["mean"][:, 6:14, 2:10])
    written = recon_parts.write_outputs(tmp_path / "r.h5", vols, target, {"method": "dds"})
    with Image.open(written["png"]) as im:
        assert im.size[0] == 5 * (8 * 3 + 6) + 6  # five 8-wide panels (scaled 3x, padded 6)


def test_file_reconstruction_runs_cg_sense_once_per_slice(volume, tmp_path, monkeypatch) -> None:
    """The CG-SENSE image that sets the prior's scale is the one written as the baseline: one run per slice."""
    import sys

    from mridpm.mri import classical

    real, calls = classical.cg_sense, []

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    for module in [m for name, m in sys.modules.items() if name.startswith("mridpm") and m is not None]:
        if getattr(module, "cg_sense", None) is real:
            monkeypatch.setattr(module, "cg_sense", counting)
    path, maps, _ = volume
    out = rf.reconstruct_file(path, tmp_path / "once.h5", accel=4, steps=6, samples=1, maps=maps, progress=False)
    assert len(calls) == 3  # three slices
    assert _read(out["hdf5"])["cg_sense"].shape == (3, 64, 64)
