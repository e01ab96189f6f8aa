"""fastMRI HDF5 and NIfTI round trips, fastMRI's own reading conventions, and corrupt files."""

import numpy as np
import pytest
import torch

from mridpm import data

h5py = pytest.importorskip("h5py")
nib = pytest.importorskip("nibabel")
G = torch.Generator().manual_seed(0)


def test_fastmri_round_trip_multicoil(tmp_path):
    k = torch.randn(3, 4, 10, 12, dtype=torch.complex64, generator=G)
    target = torch.rand(3, 10, 12, generator=G)
    path = data.write_fastmri(tmp_path / "a.h5", k, target, attrs={"acquisition": "CORPD_FBK"})
    vol = data.read_fastmri(path)
    assert torch.equal(vol.kspace, k) and torch.equal(vol.target, target)
    assert vol.multicoil and vol.attrs["acquisition"] == "CORPD_FBK"
    assert vol.attrs["max"] == pytest.approx(float(target.max()))
    assert data.header_sizes(vol.header) == {"encoded": (10, 12), "recon": (10, 12), "center": 6, "maximum": 11}
    part = data.read_fastmri(path, slices=slice(1, 2))
    assert torch.equal(part.kspace, k[1:2])
    with h5py.File(path) as f:  # the layout fastMRI's SliceDataset reads
        assert f["kspace"].dtype == np.complex64 and "reconstruction_rss" in f
        assert isinstance(f["ismrmrd_header"][()], bytes)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_fastmri_single_coil_and_mask(tmp_path):
    k = torch.randn(2, 8, 6, dtype=torch.complex64, generator=G)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1])
    vol = data.read_fastmri(data.write_fastmri(tmp_path / "s.h5", k, torch.rand(2, 8, 6), mask=mask))
    assert not vol.multicoil and torch.equal(vol.mask, mask)
    with h5py.File(tmp_path / "s.h5") as f:
        assert "reconstruction_esc" in f


def test_fastmri_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_fastmri(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        data.read_fastmri(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="no 'kspace'"):
        data.read_fastmri(tmp_path / "nok.h5")
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="complex"):
        data.read_fastmri(tmp_path / "real.h5")
    with pytest.raises(ValueError, match="complex"):
        data.write_fastmri(tmp_path / "x.h5", torch.zeros(1, 4, 4))


def test_failed_write_leaves_the_old_file(tmp_path):
    path = data.write_fastmri(tmp_path / "keep.h5", torch.ones(1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError):
        data.write_fastmri(path, torch.ones(1, 4, 4, dtype=torch.complex64), target=torch.ones(2, 4, 4))
    assert torch.equal(data.read_fastmri(path).kspace, torch.ones(1, 4, 4, dtype=torch.complex64))
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_nifti_round_trip(tmp_path, name, dtype):
    vol = torch.randn(5, 6, 7, dtype=dtype, generator=G)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    got, aff = data.read_nifti(data.write_nifti(tmp_path / name, vol, affine))
    assert torch.equal(got, vol) and np.allclose(aff, affine)
    assert nib.load(str(tmp_path / name)).shape == (5, 6, 7)


def test_nifti_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_nifti(tmp_path / "none.nii")
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        data.read_nifti(tmp_path / "bad.nii")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    path = data.write_fastmri(tmp_path / "p.h5", torch.ones(1, 4, 4, dtype=torch.complex64))
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
