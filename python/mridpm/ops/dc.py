"""Fused data-consistency kernels, the pointwise work around the FFTs of every DC step:

    coil_expand:  out[b, c] = g * maps[b, c] * x[b]                               (batch, coils, *spatial)
    kspace_blend: out = keep * k + lam * mask * (ysign * g * y - k)               (batch, coils, *spatial)
    coil_combine: out[b] = g * sum_c conj(maps[b, c]) * k[b, c]                   (batch, *spatial)

g is the checkerboard (-1)^(sum of spatial indices) when sign=True, else 1: for even sizes it
turns an unshifted orthonormal FFT into the centered one (mri/fft.py). complex64 data, maps
and masks may be shared across the batch (leading size 1), the mask also across coils.
The reference below is the ground truth; C++, CUDA and Triton match it.
"""

from __future__ import annotations

import math

import torch
from torch.utils.weak import WeakIdKeyDictionary

from mridpm import _capture
from mridpm.ops import _checks, _launch
from mridpm.ops._backend import resolve
from mridpm.ops._contract import DC_OPS, DC_SIGN
from mridpm.ops._launch import flat_buffer

_SIZES = ("batch", "coils", "n", "h", "w", "maps_batch", "mask_batch", "mask_coils")  # csrc/bindings.cpp's order


def sign_grid(spatial: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """g = (-1)^(sum of spatial indices), float32 (the kernels compute it from the flat index as
    (-1)^(d + h + w)); for even sizes it is mri.fft.checkerboard."""
    grids = torch.meshgrid(*(torch.arange(n, device=device) for n in spatial), indexing="ij")
    return (1 - 2 * (sum(grids) % 2)).to(torch.float32)  # type: ignore[arg-type]


def dc_reference(op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, keep: float, lam: float,
                 ysign: float, sign: bool) -> torch.Tensor:
    """The three kernels in plain PyTorch (differentiable), on checked tensors."""
    spatial = tuple(a.shape[2:]) if op != "expand" else tuple(a.shape[1:])
    g = sign_grid(spatial, a.device) if sign else None
    if op == "expand":
        out = b * a.unsqueeze(1)
        return out if g is None else out * g
    if op == "blend":
        y = ysign * b if g is None else (ysign * g) * b
        return keep * a + (lam * mask) * (y - a)
    out = (b.conj() * a).sum(dim=1)
    return out if g is None else out * g


def _check_complex64(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype != torch.complex64:
        raise TypeError(f"{name} must be complex64, got {t.dtype}")
    return t


def _check_maps(maps: torch.Tensor, batch: int, coils: int | None, spatial: tuple[int, ...], device) -> None:
    _check_complex64("maps", maps)
    if maps.dim() != len(spatial) + 2 or tuple(maps.shape[2:]) != spatial or maps.shape[0] not in (1, batch):
        raise ValueError(f"maps must have shape ({batch} or 1, coils, {', '.join(map(str, spatial))}), "
                         f"got {tuple(maps.shape)}")
    if coils is not None and maps.shape[1] != coils:
        raise ValueError(f"maps have {maps.shape[1]} coils but the k-space has {coils}")
    if maps.device != device:
        raise ValueError(f"maps are on {maps.device}, the data on {device}")


_CHECKED_MASKS = WeakIdKeyDictionary()  # mask tensor -> its version counter when its values were last checked


def _check_mask_values(mask: torch.Tensor) -> None:
    """Refuses NaN, Inf and negative mask values. A mask is read once per version of its data (a
    sampler's fixed mask costs one read, and one synchronisation on a GPU, not one per step); while a
    CUDA graph is recorded the check runs after each replay; torch.compile'd graphs are not checked."""
    if torch.compiler.is_compiling():
        return
    version = None if mask.is_inference() else mask._version  # inference tensors keep no version: read each call
    if version is not None and _CHECKED_MASKS.get(mask) == version:
        return
    bad = ~(torch.isfinite(mask) & (mask >= 0)).all()

    def check() -> None:
        if bool(bad):
            raise ValueError("mask must be finite and non-negative (0/1 or sampling weights), got NaN, Inf or a "
                             "negative value")

    if _capture.defer(check):  # recording a CUDA graph: read after each replay, no host synchronisation now
        return
    check()
    if version is not None:
        _CHECKED_MASKS[mask] = version


def _mask_table(mask: object, k: torch.Tensor) -> torch.Tensor:
    """The real mask as a contiguous float32 (batch or 1, coils or 1, *spatial) table on k's device."""
    if not isinstance(mask, torch.Tensor) or mask.is_complex():
        raise TypeError("mask must be a real tensor")
    if mask.is_meta:
        raise ValueError("mask: tensors on the meta device hold no data")
    if mask.dim() > k.dim():
        raise ValueError(f"mask of shape {tuple(mask.shape)} has more dimensions than k-space {tuple(k.shape)}")
    m = mask.to(k.device, torch.float32).reshape((1,) * (k.dim() - mask.dim()) + tuple(mask.shape))
    if any(ms not in (1, ks) for ms, ks in zip(m.shape, k.shape, strict=True)):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast against k-space {tuple(k.shape)}")
    return m.expand(m.shape[0], m.shape[1], *k.shape[2:]).contiguous()


def _finite(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b are the same elements in the same order (then an in-place blend reads each before writing it)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b share some byte of one storage (by the spans their strides reach)."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.numel() == 0 or b.numel() == 0:
        return False

    def span(t: torch.Tensor) -> tuple[int, int]:
        start = t.data_ptr()
        return start, start + (sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) + 1) \
            * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _run_kernel(name: str, op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, keep: float,
                lam: float, ysign: float, sign: bool, in_place: bool = False) -> torch.Tensor:
    """Runs one backend on checked tensors and returns the result (a itself when in_place)."""
    if name == "ref":
        out = dc_reference(op, a, b, mask, keep, lam, ysign, sign)
        return a.copy_(out) if in_place else out
    if in_place and not a.is_contiguous():  # the kernels write contiguous rows: blend aside, then copy in
        return a.copy_(_run_kernel(name, op, a, b, mask, keep, lam, ysign, sign))
    if in_place and _overlaps(a, b) and not _same_view(a, b):  # y would be overwritten before it is read
        b = b.clone()
    a, b = a.contiguous(), b.contiguous()
    batch = a.shape[0]
    if op == "expand":
        coils, spatial = b.shape[1], tuple(a.shape[1:])
        out = a.new_empty((batch, coils, *spatial))
    else:
        coils, spatial = a.shape[1], tuple(a.shape[2:])
        out = (a if in_place else torch.empty_like(a)) if op == "blend" else a.new_empty((batch, *spatial))
    n = math.prod(spatial)
    h, w = (spatial[-2], spatial[-1]) if len(spatial) >= 2 else (1, spatial[-1])
    sizes = {"batch": batch, "coils": coils, "n": n, "h": h, "w": w,
             "maps_batch": b.shape[0] if op != "blend" else 1,
             "mask_batch": mask.shape[0] if mask is not None else 1,
             "mask_coils": mask.shape[1] if mask is not None else 1}
    if out.numel() == 0:
        return out
    if name == "triton":
        from mridpm.kernels.triton import dc as triton_dc

        _launch.run_triton(triton_dc.run, a.device, op, a, b, mask, out, sizes, keep, lam, ysign, sign)
        return out
    roles = {"expand": (a, b, None, None), "combine": (None, b, a, None), "blend": (None, None, a, b)}
    x, maps, k, y = roles[op]
    _launch.run_compiled("dc", name, a.device, DC_OPS[op], DC_SIGN if sign else 0, [sizes[key] for key in _SIZES],
                         [flat_buffer(t) for t in (x, maps, k, y, mask, out)], [keep, lam, ysign],
                         spatial=list(spatial))  # the sign's split of the flat index
    return out


@torch.library.custom_op("mridpm::dc_kernel", mutates_args=())
def dc_kernel_op(op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, keep: float, lam: float,
                 ysign: float, sign: bool, backend: str) -> torch.Tensor:
    """The registered op behind the three kernels (a new tensor, never an alias of the inputs)."""
    return _run_kernel(backend, op, a, b, mask, keep, lam, ysign, sign)


@dc_kernel_op.register_fake
def _(op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, keep: float, lam: float, ysign: float,
      sign: bool, backend: str) -> torch.Tensor:
    if op == "expand":
        return a.new_empty((a.shape[0], b.shape[1], *a.shape[1:]))
    return a.new_empty(a.shape) if op == "blend" else a.new_empty((a.shape[0], *a.shape[2:]))


def _run(name: str, op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, keep: float, lam: float,
         ysign: float, sign: bool, in_place: bool = False) -> torch.Tensor:
    """Eager calls go straight to the kernel; under torch.compile the registered op keeps the graph whole."""
    if name != "ref" and torch.compiler.is_compiling():
        out = dc_kernel_op(op, a, b, mask, keep, lam, ysign, sign, name)
        return a.copy_(out) if in_place else out
    return _run_kernel(name, op, a, b, mask, keep, lam, ysign, sign, in_place)


def _needs_grad(*ts: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def coil_expand(x: torch.Tensor, maps: torch.Tensor, *, sign: bool = False, backend: str | None = None
                ) -> torch.Tensor:
    """maps * x per coil: x (batch, *spatial), maps (batch or 1, coils, *spatial) -> (batch, coils, *spatial)."""
    _check_complex64("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must be (batch, *spatial), got shape {tuple(x.shape)}")
    _check_maps(maps, x.shape[0], None, tuple(x.shape[1:]), x.device)
    name = resolve(backend, x.device, _needs_grad(x, maps), op="dc")
    return _run(name, "expand", x, maps, None, 1.0, 1.0, 1.0, sign)


def kspace_blend(k: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, lam: float = 1.0, keep: float = 1.0,
                 ysign: float = 1.0, sign: bool = False, backend: str | None = None,
                 in_place: bool = False) -> torch.Tensor:
    """keep * k + lam * mask * (ysign * g * y - k): the projection's blend (keep = 1) or the gradient's
    residual mask * (y - k) (keep = 0, lam = 1). k, y (batch, coils, *spatial); mask real, finite and
    non-negative (0/1 or weights; NaN, Inf and negative values are refused), broadcastable.
    in_place writes the result into k and returns k (y may be k, or overlap it: then y is read first)."""
    _check_complex64("k", k)
    _check_complex64("y", y)
    if k.dim() < 3 or y.shape != k.shape or y.device != k.device:
        raise ValueError(f"k and y must be (batch, coils, *spatial) of one shape and device, got {tuple(k.shape)} "
                         f"on {k.device} and {tuple(y.shape)} on {y.device}")
    table = _mask_table(mask, k)
    _check_mask_values(mask)
    lam, keep, ysign = _finite("lam", lam), _finite("keep", keep), _finite("ysign", ysign)
    if in_place and _needs_grad(k, y):
        raise ValueError("in_place blending cannot record gradients")
    if in_place:
        _checks.owns_elements("k", k)
    name = resolve(backend, k.device, _needs_grad(k, y), op="dc")
    return _run(name, "blend", k, y, table, keep, lam, ysign, sign, in_place)


def coil_combine(k: torch.Tensor, maps: torch.Tensor, *, sign: bool = False, backend: str | None = None
                 ) -> torch.Tensor:
    """sum_c conj(maps_c) * k_c: k (batch, coils, *spatial) -> (batch, *spatial)."""
    _check_complex64("k", k)
    if k.dim() < 3:
        raise ValueError(f"k must be (batch, coils, *spatial), got shape {tuple(k.shape)}")
    _check_maps(maps, k.shape[0], k.shape[1], tuple(k.shape[2:]), k.device)
    name = resolve(backend, k.device, _needs_grad(k, maps), op="dc")
    return _run(name, "combine", k, maps, None, 1.0, 1.0, 1.0, sign)
