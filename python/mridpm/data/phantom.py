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
    zs = _slice_list(slices, next(iter(maps.values())).shape[2])
    rng = np.random.default_rng(seed)
    scale = {k: float(1 + jitter * rng.uniform(-1, 1)) for k in TISSUES}
    img = _axial(spin_echo({k: v[:, :, zs] for k, v in maps.items()}, tr, te, scale), shape)
    return img / img.max().clamp_min(1e-12)


def _slice_list(slices: Sequence[int] | None, depth: int) -> list[int]:
    zs = list(np.linspace(60, 130, 8).round().astype(int)) if slices is None else [int(z) for z in slices]
    if not zs or any(not 0 <= z < depth for z in zs):
        raise ValueError(f"slices must be a non-empty list within [0, {depth}), got {zs}")
    return zs


def _axial(vol: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(x, y, s) MNI slices -> (s, H, W), anterior up, resampled with an antialiased bilinear filter."""
    img = vol.permute(2, 1, 0).flip(1)
    return F.interpolate(img[:, None], size=shape, mode="bilinear", align_corners=False, antialias=True)[:, 0]


LABELS = ("background", "csf", "gm", "wm")


def tissue_labels(slices: Sequence[int] | None = None, shape: tuple[int, int] = (256, 256)) -> torch.Tensor:
    """Hard tissue labels (len(slices), H, W), int64, indexing LABELS: each pixel takes the tissue
    (or background) with the largest fraction on the image grid, the slices brain_slices makes."""
    maps = tissue_maps()
    zs = _slice_list(slices, next(iter(maps.values())).shape[2])
    frac = torch.stack([_axial(maps[k][:, :, zs], shape) for k in ("csf", "gm", "wm")], 1).clamp(0, 1)
    background = (1 - frac.sum(1, keepdim=True)).clamp_min(0)
    return torch.cat([background, frac], 1).argmax(1)


def one_hot(labels: torch.Tensor, classes: int = len(LABELS)) -> torch.Tensor:
    """(N, H, W) labels -> (N, classes, H, W) channels in {-1, 1}, the form a DPM generates."""
    if labels.dtype not in (torch.int64, torch.int32, torch.uint8) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must be integers in [0, {classes}), got {labels.dtype}")
    return F.one_hot(labels.long(), classes).movedim(-1, 1).float() * 2 - 1


def insert_lesions(images: torch.Tensor, brain: torch.Tensor, count: int = 1, radius: tuple[float, float] = (3, 7),
                   intensity: tuple[float, float] = (0.1, 0.4), seed: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images with synthetic lesions, their masks (N, H, W) bool): per image `count` ellipses of
    semi-axes in radius (pixels), centred inside brain (N, H, W) bool, whose smooth-edged interior
    takes an intensity drawn from `intensity` (relative to the image peak; the default is darker than
    grey and white matter, as T1-hypointense tumours and MS lesions are)."""
    if images.shape != brain.shape or images.dim() != 3:
        raise ValueError(f"images and brain must both be (N, H, W), got {tuple(images.shape)}, {tuple(brain.shape)}")
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out, masks = images.clone(), torch.zeros(images.shape, dtype=torch.bool)
    for i in range(n):
        inside = brain[i].nonzero()
        if len(inside) == 0:
            raise ValueError(f"image {i} has no brain pixels to place a lesion in")
        peak = float(images[i].max())
        for _ in range(count):
            cy, cx = inside[int(rng.integers(len(inside)))].tolist()
            a, b = rng.uniform(*radius, size=2)
            th = rng.uniform(0, math.pi)
            u = ((xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)) / a
            v = (-(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)) / b
            r = (u * u + v * v).sqrt()
            weight = (1.5 - r).clamp(0, 0.5) * 2 * brain[i]  # 1 inside r < 1, a linear edge to r = 1.5
            out[i] = out[i] * (1 - weight) + weight * peak * float(rng.uniform(*intensity))
            masks[i] |= (r < 1.25) & brain[i]
    return out, masks


def motion_kspace(image: torch.Tensor, shots: int, moved: Sequence[int], max_shift: float = 2.0,
                  max_angle: float = 3.0, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-coil k-space (H, W) of an image scanned in `shots` interleaved shots of phase-encode rows
    (row r in shot r % shots), the shots in `moved` with the object rigidly rotated (up to max_angle
    degrees) and shifted (up to max_shift pixels) in plane: (k-space, corrupted rows (H,) bool)."""
    if image.dim() != 2:
        raise ValueError(f"image must be (H, W), got {tuple(image.shape)}")
    if not 0 < shots <= image.shape[0] or any(not 0 <= s < shots for s in moved):
        raise ValueError(f"need 0 < shots <= {image.shape[0]} and moved shots within [0, shots), got {shots}, {moved}")
    rng = np.random.default_rng(seed)
    x = image.to(torch.complex64)
    k = fft2c(x)
    rows = torch.arange(image.shape[0]) % shots
    for s in moved:
        ang = math.radians(rng.uniform(-max_angle, max_angle))
        dy, dx = rng.uniform(-max_shift, max_shift, size=2)
        c, si = math.cos(ang), math.sin(ang)
        h, w = image.shape
        theta = torch.tensor([[c, -si, 2 * dx / w], [si, c, 2 * dy / h]], dtype=torch.float32)[None]
        grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
        moved_img = F.grid_sample(image.float()[None, None], grid, align_corners=False, padding_mode="zeros")[0, 0]
        k[rows == s] = fft2c(moved_img.to(torch.complex64))[rows == s]
    return k, torch.isin(rows, torch.tensor(list(moved), dtype=torch.long))


def simplex_noise(shape: Sequence[int], frequency: float = 1 / 16, octaves: int = 6, persistence: float = 0.8,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-mean, unit-variance 2D simplex noise (*batch, H, W) summed over octaves (frequency doubling,
    amplitude times persistence), randomly offset per image: AnoDDPM's noise, which hides
    lesion-sized structure better than white noise."""
    *batch, h, w = shape
    n = int(np.prod(batch)) if batch else 1
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    total = torch.zeros(n, h, w, dtype=torch.float64)
    amp = 1.0
    for o in range(octaves):
        f = frequency * 2 ** o
        offset = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 1000
        perm = torch.stack([torch.randperm(256, generator=generator) for _ in range(n)])
        total += amp * _simplex2(xx * f + offset[:, :1, None], yy * f + offset[:, 1:, None], perm)
        amp *= persistence
    total = total - total.mean(dim=(-2, -1), keepdim=True)
    total = total / total.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return total.float().reshape(*batch, h, w) if batch else total[0].float()


_GRAD = torch.tensor([[math.cos(a), math.sin(a)] for a in np.arange(12) * 2 * math.pi / 12], dtype=torch.float64)


def _simplex2(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Gustavson's 2D simplex noise at (x, y) (n, H, W) with each image's permutation table (n, 256)."""
    f2, g2 = 0.5 * (math.sqrt(3) - 1), (3 - math.sqrt(3)) / 6
    s = (x + y) * f2
    i, j = torch.floor(x + s), torch.floor(y + s)
    t = (i + j) * g2
    x0, y0 = x - (i - t), y - (j - t)
    i1 = (x0 > y0).to(x.dtype)
    j1 = 1 - i1
    corners = [(x0, y0, 0, 0), (x0 - i1 + g2, y0 - j1 + g2, i1, j1), (x0 - 1 + 2 * g2, y0 - 1 + 2 * g2, 1, 1)]
    out = torch.zeros_like(x)
    flat = perm.reshape(perm.shape[0], -1)
    for cx, cy, di, dj in corners:
        ii = ((i + di).long() % 256).reshape(perm.shape[0], -1)
        jj = ((j + dj).long() % 256).reshape(perm.shape[0], -1)
        h = torch.gather(flat, 1, (ii + torch.gather(flat, 1, jj)) % 256).reshape(x.shape) % 12
        g = _GRAD[h]
        falloff = (0.5 - cx * cx - cy * cy).clamp_min(0)
        out += falloff ** 4 * (g[..., 0] * cx + g[..., 1] * cy)
    return 70 * out


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """A random low-order polynomial phase map (radians), as B0 and coil phase give."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, shape[0]), torch.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.normal(0, strength, 6)
    return float(c[0]) + c[1] * x + c[2] * y + c[3] * x * y + c[4] * x * x + c[5] * y * y


def simulate_multicoil(images: torch.Tensor, coils: int = 8, noise: float = 0.0, seed: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k-space (slices, coils, H, W), maps (coils, H, W), complex images) from magnitude slices, or complex
    ones (their phase kept): a smooth phase, birdcage sensitivities, centered FFT, and complex Gaussian noise
    of standard deviation noise * (the k-space's largest magnitude) per real and imaginary part."""
    if images.dim() != 3:
        raise ValueError(f"images must be (slices, H, W), got {tuple(images.shape)} {images.dtype}")
    rng = np.random.default_rng(seed)
    shape = tuple(images.shape[-2:])
    phase = smooth_phase(shape, rng)  # type: ignore[arg-type]
    if images.is_complex():
        x = images.to(torch.complex64) * torch.polar(torch.ones_like(phase), phase.float())
    else:
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
