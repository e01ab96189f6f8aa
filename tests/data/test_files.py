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


def _corrupt_object_headers(path, keep_first=True):
    """Overwrites the signatures of the HDF5 object headers ('OHDR', libver latest) after the root group's."""
    raw = bytearray(path.read_bytes())
    at = [i for i in range(len(raw)) if raw.startswith(b"OHDR", i)]
    for i in at[1:] if keep_first else at:
        raw[i : i + 4] = b"XXXX"
    path.write_bytes(bytes(raw))
    return len(at)


def test_fastmri_corrupt_metadata_gives_one_line_errors(tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w", libver="latest") as f:
        f.create_dataset("kspace", data=np.ones((1, 4, 4), np.complex64))
    assert _corrupt_object_headers(p) == 2  # the kspace dataset's header: opens, fails on reading it
    with pytest.raises(ValueError, match=r"c\.h5 is a corrupt HDF5 file \(damaged or truncated\): .*object header"):
        data.read_fastmri(p)
    with h5py.File(p := tmp_path / "r.h5", "w", libver="latest") as f:
        f.create_dataset("kspace", data=np.ones((1, 4, 4), np.complex64))
    _corrupt_object_headers(p, keep_first=False)  # the root group: its links cannot be looked up
    with pytest.raises(ValueError, match=r"r\.h5 is a corrupt HDF5 file \(damaged or truncated\)"):
        data.read_fastmri(p)
    good = data.write_fastmri(tmp_path / "t.h5", torch.ones(1, 4, 4, dtype=torch.complex64))
    (tmp_path / "t2.h5").write_bytes(good.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=r"t2\.h5 is not a readable HDF5 file: .*truncated file"):
        data.read_fastmri(tmp_path / "t2.h5")
    raw = bytearray(good.read_bytes())
    raw[:8] = b"\0" * 8  # the superblock's signature
    (tmp_path / "t3.h5").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"t3\.h5 is not a readable HDF5 file"):
        data.read_fastmri(tmp_path / "t3.h5")


def test_fastmri_groups_where_datasets_belong(tmp_path):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("kspace")
    with pytest.raises(ValueError, match=r"g\.h5: 'kspace' is an HDF5 group, not a dataset"):
        data.read_fastmri(tmp_path / "g.h5")
    for name in ("reconstruction_rss", "mask", "ismrmrd_header"):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("kspace", data=np.ones((1, 4, 4), np.complex64))
            f.create_group(name)
        with pytest.raises(ValueError, match=rf"'{name}' is an HDF5 group, not a dataset"):
            data.read_fastmri(tmp_path / f"{name}.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("kspace", data=np.ones((1, 4, 4), np.complex64))
        f.create_dataset("reconstruction_esc", data=np.ones((1, 4, 4), np.complex64))
    with pytest.raises(ValueError, match="the target reconstruction_esc must hold real magnitudes, got complex64"):
        data.read_fastmri(tmp_path / "c.h5")


def test_fastmri_undecodable_header_is_read(tmp_path):
    """The ISMRMRD header is informational: bytes that are not UTF-8 do not make the k-space unreadable."""
    p = data.write_fastmri(tmp_path / "h.h5", torch.ones(1, 4, 4, dtype=torch.complex64))
    with h5py.File(p, "r+") as f:
        del f["ismrmrd_header"]
        f.create_dataset("ismrmrd_header", data=np.bytes_(b"<x>\xa5\xa5</x>"))
    assert data.read_fastmri(p).header == "<x>\ufffd\ufffd</x>"


def test_read_maps_refuses_groups_corrupt_files_and_zero_maps(tmp_path):
    from mridpm.data.fastmri import read_maps

    k = torch.ones(2, 3, 4, 4, dtype=torch.complex64)
    maps = torch.ones(2, 3, 4, 4, dtype=torch.complex64)
    assert torch.equal(read_maps(maps, k, True), maps)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("maps")
    with pytest.raises(ValueError, match=r"g\.h5: 'maps' is an HDF5 group, not a dataset"):
        read_maps(tmp_path / "g.h5", k, True)
    with h5py.File(tmp_path / "c.h5", "w", libver="latest") as f:
        f.create_dataset("maps", data=maps.numpy())
    _corrupt_object_headers(tmp_path / "c.h5")
    with pytest.raises(ValueError, match=r"c\.h5 is a corrupt HDF5 file \(damaged or truncated\)"):
        read_maps(tmp_path / "c.h5", k, True)
    with pytest.raises(ValueError, match=r"^the coil maps are all zero \(their sum of squares is zero at every"):
        read_maps(torch.zeros_like(maps), k, True)
    half = maps.clone()
    half[0] = 0
    with pytest.raises(ValueError, match=r"^the coil maps of slice\(s\) \[0\] are all zero"):
        read_maps(half, k, True)
    with pytest.raises(ValueError, match="all zero"):
        read_maps(torch.zeros(3, 4, 4, dtype=torch.complex64), k, True)  # (coils, H, W) for every slice
