"""Every subcommand against bad input: exit 2, one line `mridpm <command>: error: ...` naming the
problem, no output file left behind and every input unchanged (by checksum). Each probe fails before
any heavy work, so the whole table is cheap enough for CI."""

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch

from mridpm import cli

MB = 2**20


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Input files: phantom NIfTIs, a simulated fastMRI file and damaged variants, configurations."""
    import h5py
    import nibabel as nib

    d = tmp_path_factory.mktemp("inputs")
    assert cli.main(["phantom", "--out", str(d), "--z", "80", "--size", "64", "64"]) == 0
    assert cli.main(["simulate", "--out", str(d / "sim"), "--volumes", "1", "--slices", "1", "--coils", "4",
                     "--size", "64", "64"]) == 0
    scan = d / "scan.h5"
    shutil.move(next((d / "sim").glob("*.h5")), scan)
    (d / "sim").rmdir()
    for name, edit in {
        "nan_target.h5": lambda f: f["reconstruction_rss"].__setitem__(Ellipsis, np.nan),
        "group.h5": lambda f: (f.__delitem__("kspace"), f.create_group("kspace")),
    }.items():
        shutil.copy(scan, d / name)
        with h5py.File(d / name, "r+") as f:
            edit(f)
    raw = bytearray(scan.read_bytes())
    raw[:64] = b"\0" * 64
    (d / "corrupt.h5").write_bytes(bytes(raw))
    with h5py.File(d / "zero_maps.h5", "w") as f:
        f["maps"] = np.zeros((1, 4, 64, 64), np.complex64)
    rgb = np.zeros((64, 64, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(d / "rgb.nii"))
    nib.save(nib.Nifti1Image(np.full((64, 64, 1), np.nan, np.float32), np.eye(4)), str(d / "nan.nii"))
    (d / "dir.h5").mkdir()
    (d / "cfg.toml").write_text('[model]\nchannels = -1\n[train]\nsteps = 2\nout_dir = "run"\n')
    run = d / "run_list"
    run.mkdir()
    (run / "latest.json").write_text(json.dumps(["step-00000001"]))
    (d / "good.toml").write_text(f'[model]\nchannels = 8\n[train]\nsteps = 2\nout_dir = "{run}"\n')
    return d


def _checksums(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


F = "{d}"  # the inputs directory
PROBES = [
    # command, arguments, what the one line must say
    ("info", ["--bogus"], "unrecognized arguments"),
    ("simulate", ["--out", "o", "--size", "0", "0"], "--size: must be an integer >= 8"),
    ("simulate", ["--out", "o", "--noise", "inf"], "--noise: must be a finite number"),
    ("simulate", ["--out", "o", "--volumes", "0"], "--volumes: must be an integer >= 1"),
    ("simulate", ["--out", f"{F}/t1.nii.gz"], "is an existing file; name a directory"),
    ("simulate", ["--out", "o", "--size", "100000", "100000"], "would need about [\\d.]+ GiB"),
    ("phantom", ["--out", f"{F}/t1.nii.gz"], "is an existing file; name a directory"),
    ("phantom", ["--out", F], "exists; pass --overwrite"),
    ("phantom", ["--out", "o", "--size", "-4", "64"], "--size: must be an integer >= 8"),
    ("phantom", ["--out", "o", "--z", "-1"], "--z: must be an integer >= 0"),
    ("train", [f"{F}/cfg.toml"], "channels"),
    ("train", [f"{F}/good.toml", "--steps", "-1"], "--steps: must be an integer >= 1"),
    ("train", [f"{F}/good.toml", "--device", "bogus"], "bogus"),
    ("train", [f"{F}/good.toml", "--device", "meta"], "meta"),
    ("train", [f"{F}/good.toml"], "latest.json"),
    ("train", [f"{F}/missing.toml"], "no configuration file"),
    ("sample", ["--out", "s.png", "--n", "0"], "--n: must be an integer >= 1"),
    ("sample", ["--out", "s.png", "--seed", "-1"], "--seed: must be an integer in \\[0, 18446744073709551615\\]"),
    ("sample", ["--out", "s.png", "--steps", "0"], "--steps: must be an integer >= 1"),
    ("sample", ["--out", F], "is a directory; name a file"),
    ("sample", ["--out", "s.png", "--n", "100000"], "sampling --n 100000 images would need about"),
    ("sample", ["--out", "s.png", "--prior", "nonexistent"], "nonexistent"),
    ("reconstruct", [f"{F}/scan.h5", "--out", f"{F}/scan.h5"], "is the input"),
    ("reconstruct", [f"{F}/scan.h5", "--out", f"{F}/dir.h5"], "is a directory"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.nii"], "must name an HDF5 file"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "/proc/r.h5"], "not writable"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--accel", "nan"], "--accel: must be a finite number"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--accel", "inf"], "--accel: must be a finite number"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--samples", "0"], "--samples: must be an integer >= 1"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--steps", "0"], "--steps: must be an integer >= 1"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--t-start", "400"], "warm"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--warm-start", "cg", "--t-start", "5000", "--accel", "4"],
     "t_start must be an integer timestep in \\[0, 999\\]"),
    ("reconstruct", [f"{F}/nan_target.h5", "--out", "r.h5"], "NaN|finite"),
    ("reconstruct", [f"{F}/group.h5", "--out", "r.h5"], "group"),
    ("reconstruct", [f"{F}/corrupt.h5", "--out", "r.h5"], "HDF5"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--method", "tv3d", "--accel", "4"], "tv3d"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--maps", f"{F}/zero_maps.h5", "--accel", "4"], "zero"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--samples", "1000000000", "--accel", "4"], "would need about"),
    ("evaluate", ["--accels", "nan"], "--accels: must be a finite number"),
    ("evaluate", ["--accels", "4,0.5"], "--accels: must be > 1"),
    ("evaluate", ["--slices", "0"], "--slices: must be an integer >= 1"),
    ("evaluate", ["--slices", "-1"], "--slices: must be an integer >= 1"),
    ("evaluate", ["--json", F], "is a directory"),
    ("evaluate", ["--methods", "bogus"], "cannot run"),
    ("evaluate", ["--kspace-cv", f"{F}/missing.h5"], "no fastMRI file"),
    ("evaluate", ["--kspace-cv", f"{F}/scan.h5", "--fraction", "0.9"], "--fraction: must be <= 0.5"),
    ("reconstruct", [f"{F}/scan.h5", "--out", "r.h5", "--mask-kind", "poisson"], "applies only with an acceleration"),
    ("demo", ["--out", F], "is a directory"),
    ("demo", ["--out", "demo.png", "--samples", "0"], "--samples: must be an integer >= 1"),
    ("generate", ["--out", "g.nii", "--depth", "0"], "--depth: must be an integer >= 1"),
    ("generate", ["--out", "g.nii", "--n", "-3"], "--n: must be an integer >= 1"),
    ("generate", ["--out", "g.nii", "--n", "100000"], "would need about"),
    ("generate", ["--out", "g.png"], "must name a NIfTI file"),
    ("generate", ["--out", "g.nii", "--labels", f"{F}/labels.nii.gz", "--depth", "2"], "not both"),
    ("translate", [f"{F}/rgb.nii", "--model", "brain64", "--out", "t.nii"], "RGB"),
    ("translate", [f"{F}/t1.nii.gz", "--model", "brain64", "--out", "t.nii", "--samples", "0"], "--samples"),
    ("register", [f"{F}/t1.nii.gz", f"{F}/missing.nii", "--model", "m", "--out", "r.nii"], "no NIfTI file"),
    ("register", [f"{F}/t1.nii.gz", f"{F}/t2.nii.gz", "--model", "m", "--out", "r.nii", "--steps", "1"],
     "--steps: must be an integer >= 2"),
    ("classify", [f"{F}/t1.nii.gz", "--model", "m", "--out", "c.nii"], "must name a JSON file"),
    ("classify", [f"{F}/missing.nii", "--model", "m", "--out", "c.json"], "no NIfTI file"),
    ("classify", [f"{F}/t1.nii.gz", "--model", f"{F}/no_run", "--out", "c.json"], "no classification model"),
    ("classify", [f"{F}/t1.nii.gz", "--model", "m", "--out", "c.json", "--t-start", "0"],
     "--t-start: must be an integer in \\[1, 999\\]"),
    ("segment", [f"{F}/t1.nii.gz", "--out", f"{F}/t1.nii.gz"], "is the input"),
    ("segment", [f"{F}/t1.nii.gz", "--out", f"{F}/t2.nii.gz"], "exists; pass --overwrite"),
    ("segment", [f"{F}/rgb.nii", "--out", "s.nii"], "RGB"),
    ("segment", [f"{F}/nan.nii", "--out", "s.nii"], "NaN or Inf"),
    ("segment", [f"{F}/missing.nii", "--out", "s.nii"], "no NIfTI file"),
    ("anomaly", [f"{F}/t1.nii.gz", "--out", "a.nii", "--threshold", "nan"], "--threshold: must be a finite"),
    ("anomaly", [f"{F}/t1.nii.gz", "--out", "a.nii", "--t", "0"], "--t: must be an integer in \\[1, 999\\]"),
    ("enhance", ["superres", f"{F}/t1.nii.gz", "--out", "e.nii", "--factor", "128"], "would need about"),
    ("enhance", ["superres", f"{F}/t1.nii.gz", "--out", "e.nii", "--factor", "0"], "--factor: must be"),
    ("enhance", ["denoise", f"{F}/t1.nii.gz", "--out", "e.nii", "--sigma", "nan"], "--sigma: must be a finite"),
    ("enhance", ["denoise", f"{F}/t1.nii.gz", "--out", "e.nii", "--sigma", "0"], "--sigma: must be > 0"),
    ("enhance", ["inpaint", f"{F}/t1.nii.gz", "--out", "e.nii"], "needs --mask"),
    ("enhance", ["motion", f"{F}/t1.nii.gz", "--out", "e.nii"], "complex"),
    ("enhance", ["denoise", f"{F}/rgb.nii", "--out", "e.nii"], "RGB"),
    ("denoise", [f"{F}/t1.nii.gz", "--out", "d.nii"], "pass --self-supervised.*mridpm enhance denoise"),
    ("denoise", [f"{F}/t1.nii.gz", "--self-supervised", "--out", "d.nii"], "expected a real 4D"),
    ("denoise", [f"{F}/missing.nii", "--self-supervised", "--out", "d.nii"], "no NIfTI file"),
    ("denoise", [f"{F}/t1.nii.gz", "--self-supervised", "--out", "d.png"], "must name a NIfTI file"),
    ("denoise", [f"{F}/t1.nii.gz", "--self-supervised", "--out", "d.nii", "--stage1-steps", "0"],
     "--stage1-steps: must be an integer >= 1"),
    ("evaluate-tasks", ["--slices", "0"], "--slices: must be an integer >= 1"),
    ("evaluate-tasks", ["--json", F], "is a directory"),
    ("evaluate-tasks", ["--figure", f"{F}/t1.nii.gz/f.png"], "is not a directory"),
]


@pytest.mark.parametrize("command,args,message", PROBES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(PROBES)])
def test_bad_input(inputs, tmp_path, monkeypatch, capsys, command, args, message):
    monkeypatch.chdir(tmp_path)
    before = _checksums(inputs)
    assert cli.main([command, *(a.replace(F, str(inputs)) for a in args)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mridpm {command}: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert list(tmp_path.rglob("*")) == []  # no output, no temporary file, no .parts directory
    assert _checksums(inputs) == before


def test_every_subcommand_is_probed():
    assert set(cli._parser().commands) == {c for c, _, _ in PROBES}


def test_interrupt_is_one_line_and_leaves_nothing(inputs, tmp_path, monkeypatch, capsys):
    from mridpm.tasks import segmentation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(segmentation, "segment", interrupted)
    out = tmp_path / "s.nii"
    assert cli.main(["segment", str(inputs / "t1.nii.gz"), "--out", str(out)]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mridpm segment: interrupted"), lines
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_with_the_flag(inputs, tmp_path, capsys):
    out = tmp_path / "s.nii"
    out.write_bytes(b"mine")
    argv = ["segment", str(inputs / "t1.nii.gz"), "--out", str(out), "--samples", "1", "--steps", "1"]
    assert cli.main(argv) == 2 and out.read_bytes() == b"mine"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert out.read_bytes()[:4] != b"mine" and torch.tensor(1)  # a NIfTI now, with its PNG and uncertainty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nii", "s.png", "s_uncertainty.nii"]


@pytest.mark.parametrize("err, status", [
    (RuntimeError("mridpm._C: CUDA error: an illegal memory access was encountered (step kernel)"), 1),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"), 1),
])
def test_cuda_failures_are_one_line(inputs, tmp_path, monkeypatch, capsys, err, status):
    """A kernel's CUDA failure or running out of GPU memory: one line and nothing written; any other
    RuntimeError is a bug and keeps its traceback."""
    from mridpm.tasks import segmentation

    def fail(*args, **kwargs):
        raise err

    monkeypatch.setattr(segmentation, "segment", fail)
    out = tmp_path / "s.nii"
    assert cli.main(["segment", str(inputs / "t1.nii.gz"), "--out", str(out)]) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"mridpm segment: error: {str(err).splitlines()[0]}", lines
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(segmentation, "segment", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["segment", str(inputs / "t1.nii.gz"), "--out", str(out)])
