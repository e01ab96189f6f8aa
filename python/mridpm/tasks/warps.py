"""Displacement fields for registration, 2D and 3D: random smooth deformations, the spatial-transformer
warp, the local normalised cross-correlation and smoothness losses, the Jacobian determinant, Dice and
endpoint error, and a classical baseline (SimpleITK's symmetric-forces demons).

A field u is (N, dims, *spatial) in pixels, component i along spatial axis i; warp(image, u) pulls:
warp(image, u)(p) = image(p + u(p)). Registering moving to fixed finds u with warp(moving, u) = fixed,
so u maps fixed coordinates into the moving image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

FIELD = {"magnitude": 3.0, "smoothness": 8.0}  # registration's random deformations (training, evaluation), pixels


def _check_field(field: torch.Tensor, spatial: tuple[int, ...] | None = None) -> int:
    dims = field.dim() - 2
    if dims not in (2, 3) or field.shape[1] != dims:
        raise ValueError(f"a field must be (N, dims, *spatial) with dims 2 or 3, got {tuple(field.shape)}")
    if spatial is not None and tuple(field.shape[2:]) != tuple(spatial):
        raise ValueError(f"the field's spatial shape {tuple(field.shape[2:])} differs from the image's {spatial}")
    return dims


def random_smooth_field(shape: tuple[int, ...], magnitude: float = 3.0, smoothness: float = 8.0,
                        generator: torch.Generator | None = None, batch: int = 1) -> torch.Tensor:
    """A random smooth displacement (batch, dims, *shape): white noise low-pass filtered with a Gaussian
    of std `smoothness` pixels (in Fourier space), scaled so each field's largest displacement is
    `magnitude` pixels. Folding needs gradients near 1: keep magnitude well below smoothness."""
    dims = len(shape)
    noise = torch.randn((batch, dims, *shape), generator=generator, dtype=torch.float64)
    axes = tuple(range(2, 2 + dims))
    k2 = sum(torch.fft.fftfreq(n, dtype=torch.float64).reshape([-1 if a == i else 1 for a in range(dims)]) ** 2
             for i, n in enumerate(shape))
    gain = torch.exp(-2 * math.pi**2 * smoothness**2 * k2)
    u = torch.fft.ifftn(torch.fft.fftn(noise, dim=axes) * gain, dim=axes).real
    peak = u.square().sum(1, keepdim=True).sqrt().amax(dim=axes, keepdim=True).clamp_min(1e-12)
    return (u * (magnitude / peak)).float()


def _grid(field: torch.Tensor) -> torch.Tensor:
    """grid_sample's sampling grid (N, *spatial, dims), coordinates in (x, y[, z]) order, of p + u(p)."""
    dims = field.dim() - 2
    sizes = field.shape[2:]
    base = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=field.dtype, device=field.device) for n in sizes),
                                      indexing="ij"))
    pos = base + field
    scale = torch.tensor([2 / max(n - 1, 1) for n in sizes], dtype=field.dtype, device=field.device)
    norm = pos * scale.reshape(1, dims, *[1] * dims) - 1
    return norm.movedim(1, -1).flip(-1)


def warp(image: torch.Tensor, field: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """The spatial transformer: image (N, C, *spatial) sampled at p + field(p), bilinear (trilinear in
    3D) or "nearest" (label maps: give them as float), values beyond the edge taken from the edge."""
    _check_field(field, tuple(image.shape[2:]))
    if image.shape[0] != field.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} and field batch {field.shape[0]} differ")
    return F.grid_sample(image, _grid(field.to(image.dtype)), mode=mode, padding_mode="border", align_corners=True)


def warp_labels(labels: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Integer label maps (N, *spatial) warped by nearest-neighbour sampling."""
    return warp(labels[:, None].float(), field, mode="nearest")[:, 0].round().long()


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, window, stride=1, padding=window // 2, count_include_pad=False)


def lncc(a: torch.Tensor, b: torch.Tensor, window: int = 9, eps: float = 1e-4) -> torch.Tensor:
    """Local normalised cross-correlation of images (N, C, *spatial) over window^dims boxes, averaged:
    1 for identical images (flat regions included), lower as they differ; -lncc is the similarity loss."""
    if a.shape != b.shape:
        raise ValueError(f"images {tuple(a.shape)} and {tuple(b.shape)} differ in shape")
    ma, mb = _box(a, window), _box(b, window)
    cross = _box(a * b, window) - ma * mb
    va, vb = (_box(a * a, window) - ma**2).clamp_min(0), (_box(b * b, window) - mb**2).clamp_min(0)
    return ((cross + eps) / ((va + eps) * (vb + eps)).sqrt()).mean()


def smoothness(field: torch.Tensor) -> torch.Tensor:
    """The mean squared forward difference of the field along every spatial axis (pixels^2 per pixel^2)."""
    dims = _check_field(field)
    return sum(field.diff(dim=2 + i).square().mean() for i in range(dims)) / dims  # type: ignore[return-value]


def jacobian_det(field: torch.Tensor) -> torch.Tensor:
    """det(I + grad u) (N, *spatial) of the map p -> p + u(p), central differences (one-sided at edges)."""
    dims = _check_field(field)
    grads = torch.stack([torch.stack(torch.gradient(field[:, i], dim=tuple(range(1, 1 + dims))), -1)
                         for i in range(dims)], -2)  # (N, *spatial, dims, dims): d u_i / d x_j
    return torch.linalg.det(grads + torch.eye(dims, dtype=field.dtype, device=field.device))


def folding_fraction(field: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The fraction of voxels (within mask (N, *spatial) when given) whose Jacobian determinant is <= 0."""
    fold = jacobian_det(field) <= 0
    return float(fold[mask].float().mean()) if mask is not None else float(fold.float().mean())


def endpoint_error(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The mean Euclidean distance |pred(p) - true(p)| in pixels (over mask (N, *spatial) when given)."""
    if pred.shape != true.shape:
        raise ValueError(f"fields {tuple(pred.shape)} and {tuple(true.shape)} differ in shape")
    err = (pred - true).square().sum(1).sqrt()
    return float(err[mask].mean()) if mask is not None else float(err.mean())


def mean_dice(pred: torch.Tensor, target: torch.Tensor, classes: tuple[int, ...] = (1, 2, 3)) -> float:
    """The mean over classes of mri.metrics.dice (tissue labels: CSF, GM, WM)."""
    from mridpm.mri.metrics import dice

    return sum(dice(pred, target, list(classes)).values()) / len(classes)


def demons(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 100, sigma: float = 1.5) -> torch.Tensor:
    """The classical baseline: SimpleITK's fast symmetric-forces demons (displacement smoothed by a
    Gaussian of std sigma pixels), per image pair (N, 1, *spatial) -> field (N, dims, *spatial) in our
    convention. Needs SimpleITK (a test dependency)."""
    import SimpleITK as sitk  # noqa: N813

    dims = moving.dim() - 2
    out = []
    for m, f in zip(moving[:, 0].double().numpy(), fixed[:, 0].double().numpy(), strict=True):
        reg = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        reg.SetNumberOfIterations(iterations)
        reg.SetStandardDeviations(sigma)
        disp = reg.Execute(sitk.GetImageFromArray(f), sitk.GetImageFromArray(m))
        u = torch.from_numpy(sitk.GetArrayFromImage(disp))  # (*spatial, dims), (x, y[, z]) order
        out.append(u.flip(-1).movedim(-1, 0))
    return torch.stack(out).float().reshape(moving.shape[0], dims, *moving.shape[2:])
