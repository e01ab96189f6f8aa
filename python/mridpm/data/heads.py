"""Synthetic heads for training priors (SynthSeg-style, Billot et al. 2023), from the MNI152 maps in nilearn.

A label volume on the 1 mm MNI grid (padded below for the neck) holds CSF, grey and white matter
(argmax of the template's tissue maps inside the closed intracranial space) and extra-cerebral layers
grown by distance transforms: a CSF rim, the skull's inner table, marrow, outer table, muscle,
subcutaneous fat and skin, eyes in fatty orbits and a neck. Each slice is its own draw, seeded by
(seed, i): an axial, coronal or sagittal plane at a position along its axis, tilted, rotated, scaled,
sheared and elastically warped, sampled from the label volume; a random mean and texture per label
(spin-echo or inversion-recovery contrasts from jittered T1/T2/PD, or arbitrary means with bone and
air dark), Gaussian blur and k-space truncation (resolution), a smooth bias field, a smooth phase and
complex Gaussian noise (Rician magnitude). Held out: positions with (pos - first) % HOLDOUT_EVERY ==
HOLDOUT_EVERY // 2 along each orientation's axis are drawn only with heldout=True, the rest only without.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

LABELS = ("background", "csf", "gm", "wm", "bone", "marrow", "muscle", "fat", "skin", "eye")
# (T1 ms, T2 ms, proton density) per label at 3 T, rough literature values; bone gives almost no signal
PARAMS = np.array([(1.0, 1.0, 0.0), (3700, 1500, 1.0), (1331, 110, 0.80), (832, 80, 0.69), (300, 1, 0.05),
                   (400, 100, 0.85), (1420, 32, 0.70), (380, 130, 0.90), (1000, 40, 0.65), (3000, 1000, 1.0)])
ORIENTATIONS = ("axial", "coronal", "sagittal")
HOLDOUT_EVERY = 8
PAD_BELOW = 48  # mm of neck added below the template's lowest slice
FOV = 256.0  # mm across the larger image side before random scaling
_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the volume axis (x, y, z) each orientation slices
_ROWS_COLS = {"axial": ((0, -1, 0), (1, 0, 0)), "coronal": ((0, 0, -1), (1, 0, 0)), "sagittal": ((0, 0, -1), (0, 1, 0))}
_MARGIN = 0.12  # fraction of the head's extent along each axis left out at both ends


def _edt(mask: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel outside mask to it: 0 inside."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask).astype(np.float32)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, coarse: int = 6) -> np.ndarray:
    """A smooth random field in [-1, 1]: coarse Gaussian noise upsampled trilinearly."""
    low = torch.from_numpy(rng.uniform(-1, 1, (1, 1) + (coarse,) * len(shape)).astype(np.float32))
    return F.interpolate(low, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Runs torch on one thread meanwhile: on busy cores the generator's many small ops otherwise wait on
    OpenMP barriers (4000 16x16 slices: 33 s on two loaded cores, 2 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def head_labels() -> torch.Tensor:
    """The head's label volume (x, y, z) on the 1 mm grid, float32 label indices into LABELS (cached)."""
    with _one_thread():
        return _build_labels()


def _build_labels() -> torch.Tensor:
    """head_labels' work: brain labels from the template, the layers around them from distance transforms."""
    from mridpm.data.phantom import tissue_maps

    maps = {k: np.pad(v.numpy(), ((0, 0), (0, 0), (PAD_BELOW, 0))) for k, v in tissue_maps().items()}
    icv = (maps["gm"] + maps["wm"] + maps["csf"]) > 0.5
    bottom = PAD_BELOW + 2  # the template cuts the brainstem: continue it down the neck as a cord in its canal
    icv[:, :, :bottom] |= icv[:, :, bottom : bottom + 1]
    shape = icv.shape
    rng = np.random.default_rng(17)
    vary = 1 + 0.25 * _smooth_field(shape, rng)  # layer thicknesses vary smoothly over the head
    d_in = _edt(icv) / vary
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    eye_r = np.full(shape, np.inf, np.float32)  # distance (mm) to the nearer eye centre
    for side in (-1, 1):  # eyeballs below the frontal lobes, centres at MNI (+-32, 48, -38) mm
        r2 = (x - (98 + side * 32)) ** 2 + (y - (134 + 48)) ** 2 + (z - (72 + PAD_BELOW - 38)) ** 2
        eye_r = np.minimum(eye_r, np.sqrt(r2.astype(np.float32)))
    # neck: an elliptic cylinder under the skull base, slightly posterior
    neck = (((x - 98) / 50) ** 2 + ((y - 116) / 58) ** 2 <= 1) & (z < 72 + PAD_BELOW - 38)  # reaches the face
    face = (eye_r <= 26) & (z >= 72 + PAD_BELOW - 50)  # soft tissue around the eyes, joining the neck below
    head = (d_in <= 14) | neck | face
    head &= np.abs(x - 98) <= 90  # keep the head inside the grid
    d_skin = _edt(~head)
    lab = np.zeros(shape, np.float32)
    lab[head] = LABELS.index("muscle")
    lab[head & (d_skin <= 6 * vary)] = LABELS.index("fat")
    lab[head & (d_skin <= 1.5)] = LABELS.index("skin")
    for thick, name in ((8.5, "bone"), (7.0, "marrow"), (3.5, "bone"), (2.0, "csf")):
        lab[(d_in <= thick) & (d_skin > 2.5)] = LABELS.index(name)
    lab[(eye_r <= 16) & (d_in > 3.5)] = LABELS.index("fat")
    lab[(eye_r <= 12) & (d_in > 3.5)] = LABELS.index("eye")
    frac = np.stack([maps["csf"], maps["gm"], maps["wm"]])
    lab[icv] = 1 + frac.argmax(0)[icv]
    section = icv[:, :, bottom]  # the cord's cross-section, a 2 mm CSF sheath around white matter
    core = _edt(~section) > 2
    lab[:, :, :bottom][section] = LABELS.index("csf")
    lab[:, :, :bottom][core] = LABELS.index("wm")
    return torch.from_numpy(lab)


@functools.lru_cache(maxsize=1)
def _geometry() -> tuple[tuple[float, float, float], dict[str, tuple[int, int]]]:
    """(the head's centre in voxels, each orientation's slice position range [first, last))."""
    lab = head_labels()
    idx = (lab > 0).nonzero()
    lo, hi = idx.min(0).values.tolist(), idx.max(0).values.tolist()
    centre = tuple((a + b) / 2 for a, b in zip(lo, hi, strict=True))
    ranges = {}
    for o, ax in _AXIS.items():
        m = round(_MARGIN * (hi[ax] - lo[ax]))
        ranges[o] = (lo[ax] + m, hi[ax] - m)
    return centre, ranges  # type: ignore[return-value]


def slice_positions(orientation: str, heldout: bool = False) -> list[int]:
    """The voxel positions along an orientation's axis that training (or, heldout=True, evaluation) draws."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; choose one of {ORIENTATIONS}")
    return list(_positions(orientation, bool(heldout)))


@functools.lru_cache(maxsize=8)
def _positions(orientation: str, heldout: bool) -> tuple[int, ...]:
    """slice_positions, cached: every draw looks them up."""
    first, last = _geometry()[1][orientation]
    return tuple(p for p in range(first, last) if ((p - first) % HOLDOUT_EVERY == HOLDOUT_EVERY // 2) == heldout)


def _rotation(rng: np.random.Generator, degrees: np.ndarray) -> np.ndarray:
    """A rotation matrix from angles (degrees) about x, y and z."""
    a, b, c = np.radians(rng.uniform(-1, 1, 3) * degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw(rng: np.random.Generator, heldout: bool, contrast: str | None = None, strip: float = 0.0
          ) -> dict[str, Any]:
    """One slice's random parameters: geometry, contrast (random, or the named spin echo), texture, blur,
    bias, phase, noise and (with probability strip, drawn last so that strip = 0 changes no other draw)
    skull stripping."""
    o = ORIENTATIONS[int(rng.integers(3))]
    pos = _positions(o, heldout)
    p = float(pos[int(rng.integers(len(pos)))])
    axis = _AXIS[o]
    tilt = np.array([15.0, 15.0, 15.0])
    tilt[axis] = 30.0  # in-plane rotation up to 30 degrees, out-of-plane tilts up to 15
    shear = np.eye(3) + np.triu(rng.uniform(-0.05, 0.05, (3, 3)), 1)
    m = _rotation(rng, tilt) @ np.diag(rng.uniform(0.87, 1.15, 3)) @ shear
    rows, cols = (np.array(v, dtype=np.float64) for v in _ROWS_COLS[o])
    if rng.random() < 0.5:
        cols = -cols  # mirror
    return {"p": p, "axis": axis, "rows": m @ rows, "cols": m @ cols, "shift": rng.normal(0, 6, 3),
            "warp": rng.uniform(0, 4), "means": _means(rng) if contrast is None else _named(rng, contrast),
            "texture": rng.uniform(0, 0.12, len(LABELS)),
            "blur": rng.uniform(0.35, 1.1, 2), "keep": rng.uniform(0.55, 1.0, 2) if rng.random() < 0.4 else (1, 1),
            "bias": rng.uniform(0, 0.35), "phase_c": rng.normal(0, rng.uniform(0.2, 1.5), 6),
            "noise": math.exp(rng.uniform(-6.5, -3)),
            "fov": FOV * rng.uniform(0.9, 1.1), "seed": int(rng.integers(2**31)),
            "stripped": bool(strip > 0 and rng.random() < strip)}


def _means(rng: np.random.Generator) -> np.ndarray:
    """Mean intensity per label: a jittered spin-echo or inversion-recovery signal, or arbitrary means."""
    kind = rng.random()
    if kind < 0.3:  # arbitrary contrast, bone and air dark as in any real sequence
        mu = rng.uniform(0, 1, len(LABELS))
        mu[[0, LABELS.index("bone")]] = rng.uniform(0, 0.08, 2)
        return mu
    t1, t2, pd = (PARAMS * rng.uniform(0.85, 1.15, PARAMS.shape)).T
    te = rng.uniform(8, 20) if rng.random() < 0.5 else rng.uniform(60, 120)
    tr = math.exp(rng.uniform(math.log(350), math.log(6000)))
    if kind < 0.75:  # spin echo: T1-, PD- and T2-weighted and in between
        mu = pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)
    else:  # inversion recovery (MPRAGE-like to FLAIR-like): tissues nulled near TI = T1 ln 2
        tr = rng.uniform(2000, 9000)
        ti = rng.uniform(0.2, 0.8) * tr if tr < 6000 else rng.uniform(1800, 2800)
        mu = pd * np.abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)
    return mu / max(mu.max(), 1e-6)


def _named(rng: np.random.Generator, contrast: str) -> np.ndarray:
    """Mean intensity per label of the spin echo phantom.CONTRASTS names (T1, T2, PD), tissue values jittered."""
    from mridpm.data.phantom import CONTRASTS

    tr, te = CONTRASTS[contrast]
    t1, t2, pd = (PARAMS * rng.uniform(0.9, 1.1, PARAMS.shape)).T
    mu = pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return mu / max(mu.max(), 1e-6)


BRAIN_MAX = LABELS.index("wm")  # labels 1..BRAIN_MAX (CSF, grey and white matter) are what skull stripping keeps
CLIP = 1.5  # magnitudes above 1.5 x the 99th percentile are clipped (their phase kept)


def _render(params: list[dict[str, Any]], size: tuple[int, int]) -> torch.Tensor:
    """Complex slices (B, H, W) of the drawn parameters, each normalised to a 99th-percentile magnitude of 1."""
    h, w = size
    b = len(params)
    lab = head_labels()
    centre, _ = _geometry()
    gens = [torch.Generator().manual_seed(q["seed"]) for q in params]
    low = torch.stack([torch.randn(4, 5, 5, generator=g) for g in gens])  # warp (3) and bias (1) fields
    white = torch.stack([torch.randn(h, w, generator=g) for g in gens])
    noise = torch.stack([torch.randn(2, h, w, generator=g) for g in gens])
    amp = torch.tensor([(q["warp"],) * 3 + (q["bias"],) for q in params], dtype=torch.float32)[:, :, None, None]
    fields = F.interpolate(low * amp, size=(h, w), mode="bicubic", align_corners=True)
    disp = fields[:, :3].permute(0, 2, 3, 1)
    # the plane: centre (position p on the slicing axis, shifted in plane) + row and column offsets (mm = voxels)
    spacing = torch.tensor([q["fov"] / max(h, w) for q in params], dtype=torch.float32)[:, None, None, None]
    r = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2)[None, :, None, None] * spacing
    c = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2)[None, None, :, None] * spacing
    origin = []
    for q in params:
        o = np.array(centre) + q["shift"]
        o[q["axis"]] = q["p"]
        origin.append(o)
    org = torch.tensor(np.array(origin), dtype=torch.float32)[:, None, None, :]
    rows = torch.tensor(np.array([q["rows"] for q in params]), dtype=torch.float32)[:, None, None, :]
    cols = torch.tensor(np.array([q["cols"] for q in params]), dtype=torch.float32)[:, None, None, :]
    pts = org + r * rows + c * cols + disp  # (B, H, W, 3) voxel coordinates (x, y, z)
    dims = torch.tensor(lab.shape, dtype=torch.float32)
    grid = (2 * pts / (dims - 1) - 1).flip(-1)  # grid_sample wants (z, y, x) for an (x, y, z) volume
    labels = F.grid_sample(lab[None, None], grid[None], mode="nearest", align_corners=True)[0, 0].long()
    means = torch.tensor(np.array([q["means"] for q in params]), dtype=torch.float32)
    tex = means * torch.tensor(np.array([q["texture"] for q in params]), dtype=torch.float32)
    flat = labels.flatten(1)
    img = (means.gather(1, flat) + tex.gather(1, flat) * white.flatten(1)).view(b, h, w)
    # resolution: a Gaussian blur and (sometimes) a truncated k-space, one filter in the Fourier domain
    fy, fx = torch.fft.fftfreq(h)[None, :, None], torch.fft.fftfreq(w)[None, None, :]
    sig = torch.tensor(np.array([q["blur"] for q in params]), dtype=torch.float32)
    keep = torch.tensor(np.array([q["keep"] for q in params]), dtype=torch.float32)
    filt = torch.exp(-2 * math.pi**2 * (sig[:, 0, None, None] ** 2 * fy**2 + sig[:, 1, None, None] ** 2 * fx**2))
    filt = filt * (fy.abs() <= keep[:, 0, None, None] / 2) * (fx.abs() <= keep[:, 1, None, None] / 2)
    img = torch.fft.ifft2(torch.fft.fft2(img) * filt).real
    img = img * torch.exp(fields[:, 3])
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(x), x, y, x * y, x * x, y * y])
    pc = torch.tensor(np.array([q["phase_c"] for q in params]), dtype=torch.float32)
    z = img * torch.polar(torch.ones_like(img), torch.einsum("bk,khw->bhw", pc, basis))
    scale = _p99(z.abs())
    sd = torch.tensor([q["noise"] for q in params], dtype=torch.float32)[:, None, None] * scale
    z = z + sd * torch.complex(noise[:, 0], noise[:, 1])
    stripped = torch.tensor([q["stripped"] for q in params])[:, None, None]
    brain = (labels >= 1) & (labels <= BRAIN_MAX)
    z = torch.where(stripped & ~brain, 0, z)  # a skull-stripped image: zero (noise too) outside the brain
    z = z / _p99(z.abs())
    mag = z.abs()
    return (z * (mag.clamp(max=CLIP) / mag.clamp_min(1e-12))).to(torch.complex64)


def _p99(mag: torch.Tensor) -> torch.Tensor:
    """Each (H, W) image's 99th-percentile value (B, 1, 1), at least 1e-6 (kthvalue: quantile is slow)."""
    flat = mag.flatten(1)
    return flat.kthvalue(max(1, math.ceil(0.99 * flat.shape[1])), dim=1).values[:, None, None].clamp_min(1e-6)


def head_slices(n: int, size: tuple[int, int] = (128, 128), seed: int = 0, *, heldout: bool = False,
                contrast: str | None = None, strip: float = 0.0, chunk: int = 64) -> torch.Tensor:
    """n complex64 synthetic head slices (n, H, W), slice i drawn from (seed, i) (held out: (seed, i, 1)); the
    99th percentile of each slice's magnitude is 1 (clipped at CLIP). heldout=True draws only held-out positions;
    contrast (a phantom.CONTRASTS name) fixes the spin echo instead of drawing one (evaluation by contrast);
    strip is the fraction of slices skull-stripped (zero outside CSF, grey and white matter), as many
    public datasets are."""
    from mridpm.data.phantom import CONTRASTS

    if contrast is not None and contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {sorted(CONTRASTS)} or None (random)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 4 for s in size):
        raise ValueError(f"size must be two integers >= 4, got {size!r}")
    _check_strip(strip)
    return torch.cat(list(_chunks(n, (int(size[0]), int(size[1])), seed, heldout, chunk, contrast, strip)))


def _check_strip(strip: float) -> None:
    """strip must be a probability."""
    if isinstance(strip, bool) or not isinstance(strip, (int, float)) or not 0 <= strip <= 1:
        raise ValueError(f"strip (the fraction of skull-stripped slices) must be in [0, 1], got {strip!r}")


def _chunks(n: int, size: tuple[int, int], seed: int, heldout: bool, chunk: int, contrast: str | None = None,
            strip: float = 0.0) -> Iterator[torch.Tensor]:
    """head_slices in chunks of `chunk` slices, so that callers keep crops, not all the full slices."""
    with _one_thread():
        for start in range(0, n, chunk):
            ids = range(start, min(n, start + chunk))
            yield _render([_draw(np.random.default_rng([seed, i, 1] if heldout else [seed, i]), heldout, contrast,
                                 strip) for i in ids], size)


def training_patches(data: dict[str, Any]) -> torch.Tensor:
    """(n, 2, patch, patch) real and imaginary parts of random patch x patch crops of training head slices
    from a [data] table (n, size, patch, seed, strip). Slice i and its crop come from (seed, i)."""
    n, seed, strip = int(data.get("n", 4000)), int(data.get("seed", 0)), data.get("strip", 0.0)
    _check_strip(strip)
    size = tuple(int(s) for s in data.get("size", [192, 192]))
    p = int(data.get("patch", 96))
    if n < 1 or p < 1 or len(size) != 2 or min(size) < 4:
        raise ValueError(f"[data] n and patch must be >= 1 and size two integers >= 4, got {n}, {p}, {list(size)}")
    if p > min(size):
        raise ValueError(f"[data] patch {p} is larger than the slices {list(size)}")
    ph, pw = p, p
    out = torch.empty(n, 2, ph, pw)
    i = 0
    for x in _chunks(n, size, seed, False, 64, strip=strip):  # type: ignore[arg-type]
        for s in x:
            y0, x0 = np.random.default_rng([seed, i, 2]).integers(0, (size[0] - ph + 1, size[1] - pw + 1))
            out[i] = torch.view_as_real(s[y0 : y0 + ph, x0 : x0 + pw]).permute(2, 0, 1)
            i += 1
    return out
