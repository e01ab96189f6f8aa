"""`mridpm reconstruct` refuses bad outputs, options and files before it writes anything, writes its
outputs all together or not at all, and resumes past a damaged part file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mridpm.data.simulation import simulated_slices
from mridpm.nets import priors
from mridpm.tasks import recon_file as rf
from mridpm.tasks import recon_parts, recon_slices

h5py = pytest.importorskip("h5py")
pytest.importorskip("nibabel")
pytestmark = pytest.mark.skipif("brain64c" not in priors.available(), reason="prior not bundled")

FAST = {"method": "dds", "accel": 4, "steps": 2, "samples": 1, "progress": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A 2-slice, 8-coil 64x64 fastMRI file with its target, its true coil maps and its k-space."""
    from mridpm.data.fastmri import write_fastmri

    x, maps, k, _ = simulated_slices([60, 68], (64, 64), 8, 0.002, seed=3)
    path = tmp_path_factory.mktemp("small") / "brain.h5"
    write_fastmri(path, k, target=x.abs())
    return path, maps.expand(2, -1, -1, -1).clone(), k


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_output_paths_name_every_file_and_need_an_h5_name(tmp_path) -> None:
    assert recon_parts.output_paths(tmp_path / "r.h5") == {
        "hdf5": tmp_path / "r.h5", "nifti": tmp_path / "r.nii.gz",
        "nifti_uncertainty": tmp_path / "r_uncertainty.nii.gz", "png": tmp_path / "r.png"}
    assert recon_parts.output_paths("a.b.hdf5")["png"] == Path("a.b.png")
    for bad in ("r.nii.gz", "r", ".h5", "r.png"):
        with pytest.raises(ValueError, match=r"--out must name an HDF5 file ending in \.h5"):
            recon_parts.output_paths(bad)


def test_out_equal_to_an_input_is_refused_untouched(small, tmp_path) -> None:
    path, maps, _ = small
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"the output .*brain\.h5 is the input"):
        rf.reconstruct_file(path, path, maps=maps, **FAST)
    assert path.read_bytes() == before and not path.with_name("brain.h5.parts").exists()
    maps_file = tmp_path / "maps.h5"
    with h5py.File(maps_file, "w") as f:
        f.create_dataset("maps", data=maps.numpy())
    with pytest.raises(ValueError, match="is the input"):
        rf.reconstruct_file(path, maps_file, maps=maps_file, **FAST)
    assert _listing(tmp_path) == ["maps.h5"]


def test_existing_outputs_need_overwrite(small, tmp_path) -> None:
    path, maps, _ = small
    (tmp_path / "r.png").write_bytes(b"old figure")  # one of the side outputs, not the HDF5 file
    with pytest.raises(ValueError, match=r"r\.png exists; pass --overwrite"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path) == ["r.png"]
    written = rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, overwrite=True, **FAST)
    assert written == recon_parts.output_paths(tmp_path / "r.h5")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert _listing(tmp_path) == ["r.h5", "r.nii.gz", "r.png", "r_uncertainty.nii.gz"]


BAD_OPTIONS = [
    ({"samples": 0}, "samples must be a positive integer"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"accel": math.nan}, "acceleration must be a finite number > 1, got nan"),
    ({"accel": math.inf}, "acceleration must be a finite number > 1, got inf"),
    ({"accel": 1}, "acceleration must be a finite number > 1, got 1"),
    ({"center": 1.5}, r"center fraction must lie in \(0, 1\)"),
    ({"center": 0.0}, r"center fraction must lie in \(0, 1\)"),
    ({"accel": None, "center": 0.1}, "applies only with an acceleration"),
    ({"noise_std": -1.0}, "noise_std must be finite and >= 0"),
    ({"noise_std": math.nan}, "noise_std must be finite and >= 0"),
    ({"method": "kspace"}, "method must be one of"),
    ({"t_start": 300}, "warm_start and t_start go together"),
    ({"warm_start": "cg"}, "warm_start and t_start go together"),
    ({"warm_start": "cg", "t_start": -1}, r"t_start must be an integer timestep in \[0, 999\], got -1"),
    ({"warm_start": "cg", "t_start": 1000}, r"t_start must be an integer timestep in \[0, 999\], got 1000"),
    ({"warm_start": "noise", "t_start": 10}, "warm_start must be one of"),
    ({"samples": 10**9}, r"reconstructing with --samples 1000000000 would need about \d+\.\d GiB of memory"),
]


@pytest.mark.parametrize(("change", "message"), BAD_OPTIONS, ids=[str(c) for c, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_any_write(small, tmp_path, change, message) -> None:
    path, maps, _ = small
    with pytest.raises(ValueError, match=message):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **{**FAST, **change})
    assert _listing(tmp_path) == []  # no r.h5.parts/settings.json that would refuse the corrected run


def test_a_corrected_rerun_is_accepted(small, tmp_path) -> None:
    path, maps, _ = small
    with pytest.raises(ValueError, match="samples"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **{**FAST, "samples": 0})
    rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path) == ["r.h5", "r.nii.gz", "r.png", "r_uncertainty.nii.gz"]


def _file(tmp_path: Path, name: str, k: torch.Tensor, **kw) -> Path:
    from mridpm.data.fastmri import write_fastmri

    return write_fastmri(tmp_path / "in" / name, k, **kw)


@pytest.mark.parametrize(("bad", "message"), [(math.nan, "NaN or Inf"), (math.inf, "NaN or Inf")])
def test_a_bad_target_is_refused_before_any_write(small, tmp_path, bad, message) -> None:
    _, maps, k = small
    target = torch.rand(2, 64, 64)
    target[1, 3, 3] = bad
    src = _file(tmp_path, "t.h5", k, target=target)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=rf"t\.h5: the target image \(reconstruction_rss/_esc\) contains {message}"):
        rf.reconstruct_file(src, tmp_path / "out" / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path / "out") == []
    src = _file(tmp_path, "s.h5", k, target=torch.rand(2, 64, 64))
    with h5py.File(src, "r+") as f:  # a target of another slice count
        del f["reconstruction_rss"]
        f.create_dataset("reconstruction_rss", data=torch.rand(3, 64, 64).numpy())
    with pytest.raises(ValueError, match=r"the target must be \(slices, h, w\) with 2 slices, got \(3, 64, 64\)"):
        rf.reconstruct_file(src, tmp_path / "out" / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path / "out") == []


def test_a_complex_target_is_refused(small, tmp_path) -> None:
    _, maps, k = small
    src = _file(tmp_path, "c.h5", k)
    with h5py.File(src, "r+") as f:
        f.create_dataset("reconstruction_rss", data=(torch.rand(2, 64, 64) + 0j).numpy())
    with pytest.raises(ValueError, match="the target reconstruction_rss must hold real magnitudes, got complex"):
        rf.reconstruct_file(src, tmp_path / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path) == ["in"]


def test_outputs_appear_together_or_not_at_all(small, tmp_path, monkeypatch) -> None:
    """A failure while writing (here the figure, the last output) leaves no output and keeps the
    finished slices, so the rerun only writes."""
    path, maps, _ = small

    def broken(*args, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(recon_parts, "file_figure", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path) == ["r.h5.parts"]  # no .h5, no .nii.gz, no temporary file
    assert _listing(tmp_path / "r.h5.parts") == ["settings.json", "slice-0000.safetensors", "slice-0001.safetensors"]
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(recon_slices, "reconstruct_prior", lambda *a, **kw: calls.append(1))
    rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    assert calls == [] and _listing(tmp_path) == ["r.h5", "r.nii.gz", "r.png", "r_uncertainty.nii.gz"]


def test_a_damaged_part_is_computed_again(small, tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    path, maps, _ = small
    real, calls = recon_slices.reconstruct_prior, []

    def cut(*args, **kw):
        if calls:
            raise KeyboardInterrupt  # the run stops after its first slice
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(recon_slices, "reconstruct_prior", cut)
    with pytest.raises(KeyboardInterrupt):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    part = tmp_path / "r.h5.parts" / "slice-0000.safetensors"
    first = {k: v.clone() for k, v in load_file(str(part)).items()}  # not views of the file cut below
    part.write_bytes(part.read_bytes()[:100])  # truncated
    calls.clear()
    monkeypatch.setattr(recon_slices, "reconstruct_prior", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    with pytest.warns(UserWarning, match=r"slice-0000\.safetensors is unreadable .*computing that slice again"):
        out = rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)["hdf5"]
    assert len(calls) == 2  # the damaged slice and the missing one
    with h5py.File(out) as f:  # the same seed per slice: the recomputed slice is the one that was lost
        for key, name in (("mean", "reconstruction"), ("std", "uncertainty"), ("cg", "cg_sense")):
            assert torch.equal(torch.from_numpy(f[name][0]), first[key])


def test_a_part_of_another_shape_is_computed_again(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({k: torch.zeros(8, 8) for k in recon_parts.NAMES}, str(tmp_path / "p.safetensors"))
    with pytest.warns(UserWarning, match="does not hold a finished slice of this run"):
        assert recon_parts.load_part(tmp_path / "p.safetensors", (64, 64)) is None
    assert set(recon_parts.load_part(tmp_path / "p.safetensors", (8, 8))) == set(recon_parts.NAMES)


def test_a_corrupt_settings_file_is_named(small, tmp_path) -> None:
    path, maps, _ = small
    parts = tmp_path / "r.h5.parts"
    parts.mkdir()
    (parts / "settings.json").write_text('{"method": "dd')
    with pytest.raises(ValueError, match=r"r\.h5\.parts/settings\.json is corrupt .*delete the directory "
                                         r".*r\.h5\.parts to compute its slices again"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    (parts / "settings.json").unlink()
    (parts / "slice-0000.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds slices but no settings\.json"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    parts.write_text("")
    with pytest.raises(ValueError, match="is not a directory; remove it"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, **FAST)


def test_a_run_failing_in_its_first_slice_leaves_no_parts(small, tmp_path) -> None:
    path, maps, _ = small
    with pytest.raises(TypeError, match="no_such_option"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=maps, no_such_option=1, **FAST)
    assert _listing(tmp_path) == []


def test_tv3d_needs_two_slices(small, tmp_path) -> None:
    _, maps, k = small
    src = _file(tmp_path, "one.h5", k[:1])
    with pytest.raises(ValueError, match=r"tv3d \(TV along the slices\) needs >= 2 slices, .*one\.h5 has 1; use dds"):
        rf.reconstruct_file(src, tmp_path / "r.h5", maps=maps[:1], **{**FAST, "method": "tv3d"})
    assert _listing(tmp_path) == ["in"]


def test_huge_finite_kspace_is_called_a_scale_problem(small, tmp_path) -> None:
    _, maps, k = small
    src = _file(tmp_path, "big.h5", k / k.abs().max() * 1e30)
    with pytest.raises(ValueError, match=r"the k-space of .*big\.h5 has values up to 1e\+30, which overflow float32 "
                                         r"arithmetic; rescale the data"):
        rf.reconstruct_file(src, tmp_path / "r.h5", maps=maps, **FAST)
    bad = k.clone()
    bad[0, 0, 0, 0] = complex(math.inf, 0)
    src = _file(tmp_path, "inf.h5", bad)
    with pytest.raises(ValueError, match=r"the k-space of .*inf\.h5 contains NaN or Inf"):
        rf.reconstruct_file(src, tmp_path / "r.h5", maps=maps, **FAST)
    assert _listing(tmp_path) == ["in"]


def test_a_nan_mask_in_the_file_is_not_read_as_fully_sampled(small, tmp_path) -> None:
    _, maps, k = small
    src = _file(tmp_path, "m.h5", k, mask=torch.full((64,), math.nan))
    with pytest.raises(ValueError, match=r"^the file's mask contains NaN or Inf; repair the file or give --accel$"):
        rf.reconstruct_file(src, tmp_path / "r.h5", maps=maps, **{**FAST, "accel": None})
    assert _listing(tmp_path) == ["in"]


def test_all_zero_coil_maps_are_refused(small, tmp_path) -> None:
    path, maps, _ = small
    with pytest.raises(ValueError, match=r"the coil maps are all zero \(their sum of squares is zero at every pixel"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=torch.zeros_like(maps), **FAST)
    half = maps.clone()
    half[1] = 0
    with pytest.raises(ValueError, match=r"the coil maps of slice\(s\) \[1\] are all zero"):
        rf.reconstruct_file(path, tmp_path / "r.h5", maps=half, **FAST)
    assert _listing(tmp_path) == []


def test_memory_estimate_counts_the_unet_and_the_per_sample_tensors() -> None:
    from mridpm._memory import unet_bytes

    cfg = priors.load_prior("brain64c").model.config
    base = unet_bytes(cfg, 3, (64, 64))
    assert rf.memory_bytes(cfg, 3, 1, 8, (64, 64), "dds") == base + 3 * 8 * 4096 * (5 * 8 + 10)
    assert rf.memory_bytes(cfg, 3, 1, 8, (64, 64), "dps") == 2 * base + 3 * 8 * 4096 * (5 * 8 + 10)
    per_coil = unet_bytes(cfg, 3 * 2 * 8, (64, 64))
    assert rf.memory_bytes(cfg, 3, 2, 8, (64, 64), "pc-rss") == per_coil + 3 * 8 * 4096 * (5 * 16 + 10 * 16)


def test_settings_round_trip_through_json(small, tmp_path) -> None:
    """The parts' settings compare equal after JSON, so a resumed run is recognised."""
    path = small[0]
    settings = {"input": str(path), "accel": 4, "center": None, "t_start": "300"}
    recon_parts.save_part(tmp_path / "p", settings, tmp_path / "p" / "slice-0000.safetensors",
                 {k: torch.zeros(2, 2) for k in recon_parts.NAMES})
    assert json.loads((tmp_path / "p" / "settings.json").read_text()) == settings
    rf.check_parts(tmp_path / "p", settings)
    with pytest.raises(ValueError, match="other settings"):
        rf.check_parts(tmp_path / "p", {**settings, "accel": 8})
