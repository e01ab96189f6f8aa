"""Real acquired brain images that ship inside the dipy package (no download): a T1-weighted coronal
slice and a 10-slice b0 (non-diffusion-weighted) volume, and simulated multi-coil acquisitions of
them. These images are for evaluation only, never for training: they test a reconstruction on real
anatomy and contrast that no bundled prior has seen."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from mridpm.mri.fft import fft2c

T1_FILE = "t1_coronal_slice.npy"  # 256 x 256, a T1-weighted coronal slice of a real scan
B0_FILE = "S0_10slices.nii.gz"  # 128 x 128 x 10 (x 1), 2 mm voxels, b0 of a real diffusion scan
ROBUST_QUANTILE = 0.995  # the "robust peak": this quantile of the magnitudes becomes 1


def dipy_files() -> Path:
    """dipy's bundled data directory (dipy/data/files), found without importing dipy or touching the network."""
    spec = importlib.util.find_spec("dipy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the real evaluation images ship inside dipy, which is not installed: "
                          "pip install 'mridpm[data]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "files"


def _file(name: str) -> Path:
    """A bundled dipy data file, or FileNotFoundError naming it (a dipy build without its data)."""
    p = dipy_files() / name
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing from the installed dipy; reinstall it: pip install 'mridpm[data]'")
    return p


def robust_normalize(magnitude: torch.Tensor, quantile: float = ROBUST_QUANTILE) -> torch.Tensor:
    """float32 magnitudes divided by their `quantile` quantile (robust to a few hot pixels, unlike the max)."""
    m = magnitude.float().abs()
    peak = float(torch.quantile(m.flatten().double(), quantile)) if m.numel() else 0.0
    if not peak > 0:
        peak = float(m.max()) if m.numel() else 0.0
    return m / peak if peak > 0 else m


def dipy_t1_slice() -> torch.Tensor:
    """dipy's real T1-weighted coronal slice, (256, 256) float32 magnitude with robust peak 1.
    Evaluation only, never training."""
    data = np.load(_file(T1_FILE), allow_pickle=False)
    return robust_normalize(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)))


def dipy_b0_slices() -> torch.Tensor:
    """dipy's real 10-slice b0 volume as (10, 128, 128) float32 axial slices (anterior up, the
    phantom's orientation), the volume scaled to robust peak 1. Evaluation only, never training."""
    from mridpm.data.nifti import read_nifti

    vol, _ = read_nifti(_file(B0_FILE))
    vol = vol.reshape(*vol.shape[:3])  # (x, y, z): drop the single volume axis
    return robust_normalize(vol.permute(2, 1, 0).flip(1).contiguous())


def simulated_acquisition(image: torch.Tensor, coils: int = 8, noise: float = 0.002, seed: int = 0
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(k-space (coils, H, W), maps (coils, H, W), complex truth (H, W), noise std per real part) of a
    real magnitude image (H, W), by phantom.simulate_multicoil: a smooth random phase, birdcage coils
    and complex Gaussian noise of std noise * (the noiseless k-space's peak magnitude)."""
    from mridpm.data.phantom import simulate_multicoil

    if not isinstance(image, torch.Tensor) or image.dim() != 2 or image.is_complex():
        raise ValueError(f"image must be a real (H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image contains NaN or Inf")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    k, maps, x = simulate_multicoil(image[None].float(), coils, noise, seed)
    std = noise * float(fft2c(maps * x[:, None]).abs().max())  # the std simulate_multicoil drew with
    return k[0], maps, x[0], std
