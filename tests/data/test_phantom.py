"""The MNI152 brain phantom: contrasts behave as the signal equation says; the CLI writes fastMRI files."""

import pytest
import torch

pytest.importorskip("nilearn")
pytest.importorskip("nibabel")
pytest.importorskip("h5py")

from mridpm import cli, data, mri
from mridpm.data import phantom, simulated


def _tissue_means(contrast):
    maps = phantom.tissue_maps()
    z = [90]
    img = phantom.spin_echo({k: v[:, :, z] for k, v in maps.items()}, *phantom.CONTRASTS[contrast])
    return {k: float((img * (v[:, :, z] > 0.9)).sum() / (v[:, :, z] > 0.9).sum()) for k, v in maps.items()}


def test_contrasts_order_tissues_as_expected():
    t1, t2 = _tissue_means("T1"), _tissue_means("T2")
    assert t1["wm"] > t1["gm"] > t1["csf"]  # T1-weighted: white matter brightest, CSF dark
    assert t2["csf"] > t2["gm"] > t2["wm"]  # T2-weighted: CSF brightest
    maps = phantom.tissue_maps()
    assert 0.1 * float(maps["gm"].mean()) < float(maps["csf"].mean()) < float(maps["gm"].mean())


def test_slices_and_multicoil_simulation():
    img = phantom.brain_slices("T2", [80, 100], shape=(64, 48))
    assert img.shape == (2, 64, 48) and float(img.max()) == pytest.approx(1.0)
    assert float(img[:, :4].abs().max()) < 0.05  # background is empty
    k, _, x = phantom.simulate_multicoil(img, coils=6, noise=0.0, seed=1)
    assert k.shape == (2, 6, 64, 48)
    torch.testing.assert_close(phantom.rss_target(k), img, rtol=1e-4, atol=1e-5)  # sum |S|^2 = 1
    torch.testing.assert_close(x.abs(), img, rtol=1e-5, atol=1e-6)
    noisy, _, _ = phantom.simulate_multicoil(img, coils=6, noise=0.01, seed=1)
    rel = float((noisy - k).abs().pow(2).mean().sqrt() / k.abs().max())
    assert rel == pytest.approx(0.01 * 2**0.5, rel=0.05)  # the noise is really there
    with pytest.raises(ValueError, match="contrast"):
        phantom.brain_slices("T3")


def test_cli_simulate_writes_fastmri_files(tmp_path, capsys):
    assert cli.main(["simulate", "--out", str(tmp_path), "--volumes", "2", "--slices", "3", "--coils", "4",
                     "--size", "48", "40", "--contrast", "PD"]) == 0
    files = sorted(tmp_path.glob("*.h5"))
    assert len(files) == 2
    vol = data.read_fastmri(files[0])
    assert vol.kspace.shape == (3, 4, 48, 40) and vol.target.shape == (3, 48, 40)
    assert vol.attrs["acquisition"] == "SIM_SE_PD"
    torch.testing.assert_close(mri.coils.rss(mri.ifft2c(vol.kspace)), vol.target, rtol=1e-4, atol=1e-5)
    assert not torch.equal(vol.kspace, data.read_fastmri(files[1]).kspace)


def _border_fraction(target):
    """The fraction of pixels in the outer eighth of each side brighter than a tenth of their slice's 99th
    percentile, averaged over the slices."""
    h, w = target.shape[-2:]
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[h // 8 : h - h // 8, w // 8 : w - w // 8] = False
    m = target / target.flatten(1).quantile(0.99, dim=1)[:, None, None]
    return float((m[:, ring] > 0.1).float().mean())


def test_heads_source_writes_unstripped_head_volumes(tmp_path):
    brain = simulated.simulate_dataset(tmp_path / "b", volumes=1, slices=3, coils=3, shape=(37, 30), seed=4)
    heads = simulated.simulate_dataset(tmp_path / "h", volumes=2, slices=3, coils=3, shape=(37, 30), seed=4,
                                     contrast="T2", source="heads")
    assert [p.name for p in heads] == simulated.simulated_names(2, "T2", 4, source="heads")
    assert [p.name for p in brain] == simulated.simulated_names(1, "T1", 4) == ["sim_t1_4_0000.h5"]
    assert not set(simulated.simulated_names(3, "T1", 4, "heads")) & set(simulated.simulated_names(3, "T1", 4))
    vol, vb = data.read_fastmri(heads[0]), data.read_fastmri(brain[0])
    assert vol.kspace.shape == (3, 3, 37, 30) and vol.target.shape == (3, 37, 30)
    assert vol.attrs["acquisition"] == "SIM_HEADS_SE_T2"
    torch.testing.assert_close(mri.coils.rss(mri.ifft2c(vol.kspace)), vol.target, rtol=1e-4, atol=1e-5)
    assert not torch.equal(vol.kspace, data.read_fastmri(heads[1]).kspace)
    # skull, scalp and neck reach into the border, where the skull-stripped brain leaves the frame empty
    assert _border_fraction(vol.target) > 0.03 > 0.005 > _border_fraction(vb.target)
    with pytest.raises(ValueError, match="source"):
        simulated.simulate_dataset(tmp_path / "x", source="skull")
    with pytest.raises(ValueError, match="at least 4 x 4"):
        simulated.simulate_dataset(tmp_path / "x", shape=(3, 8), source="heads")
    assert not (tmp_path / "x").exists()


def test_cli_simulate_heads_source(tmp_path, capsys):
    assert cli.main(["simulate", "--source", "heads", "--out", str(tmp_path), "--size", "48", "40", "--slices", "2",
                     "--volumes", "1", "--coils", "2"]) == 0
    (f,) = tmp_path.glob("*.h5")
    assert f.name == "sim_heads_t1_0_0000.h5"
    vol = data.read_fastmri(f)
    assert vol.kspace.shape == (2, 2, 48, 40) and vol.target.shape == (2, 48, 40)
    assert vol.attrs["acquisition"] == "SIM_HEADS_SE_T1"
