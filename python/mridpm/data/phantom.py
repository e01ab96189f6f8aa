"""Brain phantoms from the MNI152 (ICBM 2009a) tissue maps that ship inside nilearn (no download):
grey matter, white matter and CSF (the closed intracranial space less tissue) get T1, T2 and PD,
and the spin-echo signal equation S = PD (1 - exp(-TR / T1)) exp(-TE / T2) gives T1-, T2- and
PD-weighted images. Multi-coil k-space follows with birdcage maps, a smooth phase and noise."""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from mridpm.mri.coils import birdcage_maps, rss
from mridpm.mri.fft import fft2c, ifft2c

# (T1 ms, T2 ms, proton density) at 3 T, from the literature
TISSUES: dict[str, tuple[float, float, float]] = {
    "wm": (832.0, 80.0, 0.69), "gm": (1331.0, 110.0, 0.80), "csf": (3700.0, 1500.0, 1.0),
}
# (TR ms, TE ms) of spin-echo sequences
CONTRASTS: dict[str, tuple[float, float]] = {"T1": (500.0, 14.0), "T2": (4000.0, 100.0), "PD": (3000.0, 14.0)}
_FILES = {"gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the brain phantom needs the MNI152 maps that ship in nilearn: pip install 'mridpm[data]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def tissue_maps() -> dict[str, torch.Tensor]:
    """Tissue fractions on the 1 mm MNI grid (x, y, z), float32 in [0, 1]: gm, wm, csf."""
    from mridpm.data.nifti import read_nifti

    d = _template_dir()
    vols = {k: read_nifti(d / name)[0] / 255.0 for k, name in _FILES.items()}
    gm, wm = vols["gm"], vols["wm"]
    tissue = (gm + wm).clamp(max=1.0)
    # the intracranial space: tissue closed by a dilation then an erosion; CSF fills what tissue leaves
    closed = _erode(_dilate((tissue > 0.1).float(), 4), 4)
    csf = (closed - tissue).clamp(0.0, 1.0)
    return {"gm": gm, "wm": wm, "csf": csf}


def _dilate(v: torch.Tensor, r: int) -> torch.Tensor:
    """Max over a (2r+1)^3 box, one axis at a time."""
    x = v[None, None]
    for k in ((2 * r + 1, 1, 1), (1, 2 * r + 1, 1), (1, 1, 2 * r + 1)):
        x = F.max_pool3d(x, k, 1, tuple(n // 2 for n in k))
    return x[0, 0]


def _erode(v: torch.Tensor, r: int) -> torch.Tensor:
    return -_dilate(-v, r)


def spin_echo(tissues: dict[str, torch.Tensor], tr: float, te: float, scale: dict[str, float] | None = None
              ) -> torch.Tensor:
    """Sum over tissues of fraction * PD (1 - exp(-TR/T1)) exp(-TE/T2); scale jitters (T1, T2, PD) per tissue."""
    out = torch.zeros_like(next(iter(tissues.values())))
    for name, frac in tissues.items():
        t1, t2, pd = TISSUES[name]
        s = (scale or {}).get(name, 1.0)
        out = out + frac * (pd * s) * (1 - math.exp(-tr / (t1 * s))) * math.exp(-te / (t2 * s))
    return out


def brain_slices(contrast: str | tuple[float, float] = "T1", slices: Sequence[int] | None = None,
                 shape: tuple[int, int] = (256, 256), jitter: float = 0.0, seed: int | None = None) -> torch.Tensor:
    """Axial magnitude slices (len(slices), H, W), anterior up, normalised to max 1. slices index the
    1 mm z axis (default: 8 between z = 60 and 130); jitter varies each tissue's T1, T2, PD by up to
    that fraction (one draw per call, seeded)."""
    if isinstance(contrast, str) and contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {sorted(CONTRASTS)} or give (TR, TE)")
    tr, te = CONTRASTS[contrast] if isinstance(contrast, str) else contrast
    maps = tissue_maps()
    depth = next(iter(maps.values())).shape[2]
    zs = list(np.linspace(60, 130, 8).round().astype(int)) if slices is None else list(slices)
    if any(not 0 <= z < depth for z in zs):
        raise ValueError(f"slices must lie in [0, {depth}), got {zs}")
    rng = np.random.default_rng(seed)
    scale = {k: float(1 + jitter * rng.uniform(-1, 1)) for k in TISSUES}
    vol = spin_echo({k: v[:, :, zs] for k, v in maps.items()}, tr, te, scale)  # (x, y, s)
    img = vol.permute(2, 1, 0).flip(1)  # (s, y, x), anterior up
    img = F.interpolate(img[:, None], size=shape, mode="bilinear", align_corners=False, antialias=True)[:, 0]
    return img / img.max().clamp_min(1e-12)


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """A random low-order polynomial phase map (radians), as B0 and coil phase give."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, shape[0]), torch.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.normal(0, strength, 6)
    return float(c[0]) + c[1] * x + c[2] * y + c[3] * x * y + c[4] * x * x + c[5] * y * y


def simulate_multicoil(images: torch.Tensor, coils: int = 8, noise: float = 0.0, seed: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k-space (slices, coils, H, W), maps (coils, H, W), complex images) from magnitude slices:
    a smooth phase, birdcage sensitivities, centered FFT, and complex Gaussian noise of standard
    deviation noise * (the k-space's largest magnitude) per real and imaginary part."""
    if images.dim() != 3 or images.is_complex():
        raise ValueError(f"images must be real (slices, H, W), got {tuple(images.shape)} {images.dtype}")
    rng = np.random.default_rng(seed)
    shape = tuple(images.shape[-2:])
    phase = smooth_phase(shape, rng)  # type: ignore[arg-type]
    x = torch.polar(images.float(), phase.expand_as(images).float())
    maps = birdcage_maps(coils, shape)
    k = fft2c(maps * x[:, None])
    if noise > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        k = k + noise * k.abs().max() * torch.randn(k.shape, dtype=torch.complex64, generator=gen) * math.sqrt(2)
    return k, maps, x


def rss_target(kspace: torch.Tensor) -> torch.Tensor:
    """fastMRI's target: the root-sum-of-squares of the fully sampled coil images."""
    return rss(ifft2c(kspace), dim=1)


def simulate_dataset(out_dir: str | Path, volumes: int = 4, contrast: str = "T1", coils: int = 8,
                     slices: int = 8, shape: tuple[int, int] = (256, 256), noise: float = 0.002, jitter: float = 0.05,
                     seed: int = 0, progress: bool = False) -> list[Path]:
    """Writes `volumes` fastMRI-format multi-coil files of simulated brain slices: each volume draws its
    tissue parameters (within jitter), slice positions, left-right flip, phase and noise from its own seed."""
    from tqdm.auto import tqdm

    from mridpm.data.fastmri import write_fastmri

    if volumes < 1 or slices < 1 or coils < 1:
        raise ValueError(f"volumes, slices and coils must be positive, got {volumes}, {slices}, {coils}")
    out = Path(out_dir)
    paths = []
    for v in tqdm(range(volumes), desc="simulate", disable=not progress):
        rng = np.random.default_rng([seed, v])
        start = int(rng.integers(50, 70))
        zs = np.linspace(start, start + 70, slices).round().astype(int).tolist()
        img = brain_slices(contrast, zs, shape, jitter=jitter, seed=int(rng.integers(2**31)))
        if rng.random() < 0.5:
            img = img.flip(-1)
        k, _, _ = simulate_multicoil(img, coils, noise, seed=int(rng.integers(2**31)))
        target = rss_target(k)
        path = out / f"sim_{contrast.lower()}_{seed}_{v:04d}.h5"
        attrs = {"acquisition": f"SIM_SE_{contrast}", "patient_id": f"sim{seed}-{v}"}
        paths.append(write_fastmri(path, k, target, attrs=attrs))
    return paths
