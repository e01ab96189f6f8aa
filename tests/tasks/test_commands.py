"""The task subcommands end to end on phantom NIfTI files, and their errors on bad input."""

import pytest
import torch

from mridpm import cli
from mridpm.data.nifti import read_nifti, write_nifti


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    assert cli.main(["phantom", "--out", str(out), "--z", "45", "125"]) == 0
    return out


def test_phantom_files(phantom_dir):
    t1, _ = read_nifti(phantom_dir / "t1.nii.gz")
    labels, _ = read_nifti(phantom_dir / "labels.nii.gz")
    k, _ = read_nifti(phantom_dir / "t1_motion_kspace.nii.gz")
    assert t1.shape == labels.shape == (64, 64, 2) and k.is_complex() and k.shape == (64, 64, 2)
    assert set(labels.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}


@pytest.mark.parametrize("argv,outputs", [
    (["segment", "{d}/t1.nii.gz", "--samples", "2", "--steps", "4"], ["", "_uncertainty"]),
    (["anomaly", "{d}/t1_lesion.nii.gz", "--steps", "4"], ["", "_mask", "_healthy"]),
    (["enhance", "denoise", "{d}/t1.nii.gz", "--sigma", "0.05", "--steps", "4"], [""]),
    (["enhance", "inpaint", "{d}/t1.nii.gz", "--mask", "{d}/lesion_mask.nii.gz", "--steps", "4"], [""]),
    (["enhance", "motion", "{d}/t1_motion_kspace.nii.gz", "--steps", "4", "--shots", "8"], [""]),
    (["generate", "--n", "2", "--steps", "3"], [""]),
])
def test_commands_write_nifti_and_png(phantom_dir, tmp_path, capsys, argv, outputs):
    out = tmp_path / "out.nii.gz"
    assert cli.main([a.format(d=phantom_dir) for a in argv] + ["--out", str(out)]) == 0
    for suffix in outputs:
        vol, _ = read_nifti(tmp_path / f"out{suffix}.nii.gz")
        assert vol.shape[:2] == (64, 64) and bool(torch.isfinite(vol).all())
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_superres_doubles_the_size(tmp_path):
    from mridpm.data.phantom import brain_slices

    low = torch.nn.functional.avg_pool2d(brain_slices("T1", [45], (64, 64))[None], 2)[0]
    write_nifti(tmp_path / "low.nii", low.permute(1, 2, 0).contiguous())
    out = tmp_path / "sr.nii"
    assert cli.main(["enhance", "superres", str(tmp_path / "low.nii"), "--factor", "2", "--steps", "4",
                     "--out", str(out)]) == 0
    assert read_nifti(out)[0].shape == (64, 64, 1)


@pytest.mark.parametrize("argv,message", [
    (["segment", "{d}/missing.nii.gz"], "no NIfTI file"),
    (["segment", "{d}/t1.nii.gz", "--model", "nonexistent"], "no bundled prior"),
    (["segment", "{d}/t1_motion_kspace.nii.gz"], "expected a real"),
    (["anomaly", "{d}/t1.nii.gz", "--t", "5000"], "--t: must be an integer in"),
    (["enhance", "inpaint", "{d}/t1.nii.gz"], "needs --mask"),
    (["enhance", "motion", "{d}/t1.nii.gz"], "complex single-coil|complex k-space"),
    (["generate", "--labels", "{d}/labels.nii.gz"], "conditioning channels"),
    (["translate", "{d}/t1.nii.gz", "--model", "brain64"], "source contrasts"),
])
def test_bad_input_is_one_line_and_exit_2(phantom_dir, tmp_path, capsys, argv, message):
    argv = [a.format(d=phantom_dir) for a in argv] + ["--out", str(tmp_path / "o.nii.gz")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mridpm {argv[0]}: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


def test_out_must_be_nifti(phantom_dir, capsys):
    assert cli.main(["segment", str(phantom_dir / "t1.nii.gz"), "--out", "labels.png"]) == 2
    assert "NIfTI" in capsys.readouterr().err


def test_conditional_models_from_run_directories(translate_prior, synth_prior, tmp_path):
    d = tmp_path / "small"
    assert cli.main(["phantom", "--out", str(d), "--z", "80", "--size", "32", "32"]) == 0
    out = tmp_path / "t2.nii.gz"
    assert cli.main(["translate", str(d / "t1.nii.gz"), str(d / "pd.nii.gz"), "--model",
                     translate_prior.info["run_dir"], "--steps", "4", "--samples", "2", "--out", str(out)]) == 0
    assert read_nifti(out)[0].shape == (32, 32, 1) and (tmp_path / "t2_std.nii.gz").is_file()
    out = tmp_path / "synth.nii.gz"
    assert cli.main(["generate", "--labels", str(d / "labels.nii.gz"), "--prior", synth_prior.info["run_dir"],
                     "--steps", "4", "--out", str(out)]) == 0
    img = read_nifti(out)[0]
    assert img.shape == (32, 32, 1) and 0 <= float(img.min()) and float(img.max()) <= 1
