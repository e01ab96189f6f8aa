"""Immutable linear operators with forward, adjoint (.H) and normal (.N): the MRI forward models.

Shapes: images (batch, *spatial), multi-coil k-space (batch, coils, *spatial), spatial being
(H, W) or (D, H, W); everything complex. A mask is real and applied once, in the forward
(M F S x) and once in the adjoint (S^H F^H M y), so N = S^H F^H M^2 F S, which is M for the
usual 0/1 masks. (sigpy applies sqrt(weights) on both sides: the same for 0/1 masks.)
"""

from __future__ import annotations

import torch

from mridpm.mri import consistency
from mridpm.mri import fft as _fft
from mridpm.ops import dc as dc_ops


class LinearOperator:
    """A linear map; call it for the forward, .H is the adjoint, .N = .H @ self, @ composes."""

    _frozen = False

    def __setattr__(self, name: str, value: object) -> None:
        if self._frozen:
            raise AttributeError(f"{type(self).__name__} is immutable; build a new operator instead")
        super().__setattr__(name, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - the conventional name
        return Adjoint(self)

    @property
    def N(self) -> LinearOperator:  # noqa: N802
        return Normal(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Compose(self, other)


class _Derived(LinearOperator):
    """An operator made from another one (its adjoint, its normal)."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op
        self._freeze()


class Adjoint(_Derived):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op


class Normal(_Derived):
    """A^H A, through the operator's own (possibly fused) normal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.normal(x)

    adjoint = forward  # self-adjoint


class Compose(LinearOperator):
    """outer @ inner: x -> outer(inner(x))."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        self.outer, self.inner = outer, inner
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class Identity(LinearOperator):
    def __init__(self) -> None:
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    adjoint = forward


def no_meta(name: str, t: object) -> None:
    """Refuses a tensor on the meta device (shapes without data: nothing to transform or check)."""
    if isinstance(t, torch.Tensor) and t.is_meta:
        raise ValueError(f"{name}: tensors on the meta device hold no data")


class FFT(LinearOperator):
    """The centered orthonormal FFT over the last ndim (2 or 3) dimensions; unitary (empty input, empty output)."""

    def __init__(self, ndim: int = 2) -> None:
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        self.ndim = ndim
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.numel() == 0:  # torch's FFTs refuse empty input
            return torch.empty_like(_fft._check_complex("x", x, self.ndim))
        return _fft.fftnc(x, self.ndim)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if isinstance(y, torch.Tensor) and y.numel() == 0:
            return torch.empty_like(_fft._check_complex("k", y, self.ndim))
        return _fft.ifftnc(y, self.ndim)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return x


def check_mask(mask: object, name: str = "mask") -> torch.Tensor:
    """A real, finite, non-negative mask tensor (bool or numbers), as float32, with some nonzero entry."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.is_complex():
        raise TypeError(f"{name} must be real (0/1 or sampling weights), got {mask.dtype}")
    no_meta(name, mask)
    m = mask.to(torch.float32)
    if m.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    if not bool((m != 0).any()):
        raise ValueError(f"{name} samples nothing (all zeros)")
    return m


class Mask(LinearOperator):
    """Multiplication by a real sampling mask that broadcasts against k-space; self-adjoint."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = check_mask(mask)
        self.binary = bool(((self.mask == 0) | (self.mask == 1)).all())  # decided once, not per call
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        no_meta("k-space", x)
        _broadcasts(self.mask, x, "mask", "k-space")
        return x * self.mask.to(x.device)

    adjoint = forward


def _broadcasts(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"{a_name} of shape {tuple(a.shape)} does not broadcast against {b_name} of shape "
                         f"{tuple(b.shape)}") from None
    if shape != b.shape:
        raise ValueError(f"{a_name} of shape {tuple(a.shape)} would enlarge {b_name} of shape {tuple(b.shape)}")


class CoilExpand(LinearOperator):
    """S: image (batch, *spatial) -> coil images maps * x, (batch, coils, *spatial); adjoint sum_c conj(S_c) y_c."""

    def __init__(self, maps: torch.Tensor, ndim: int = 2) -> None:
        if not isinstance(maps, torch.Tensor) or not maps.is_complex():
            raise TypeError("maps must be a complex tensor (batch, coils, *spatial)")
        if maps.dim() != 2 + ndim:
            raise ValueError(f"maps must have shape (batch, coils, *spatial) with {ndim} spatial dimensions, "
                             f"got {tuple(maps.shape)}")
        no_meta("maps", maps)
        if maps.numel() == 0:
            raise ValueError(f"maps must not be empty (batch, coils and spatial sizes >= 1), got {tuple(maps.shape)}")
        if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
            raise ValueError("maps contain NaN or Inf")
        self.maps, self.ndim = maps, ndim
        self._freeze()

    @property
    def coils(self) -> int:
        return self.maps.shape[1]

    def _check_device(self, name: str, t: torch.Tensor) -> None:
        no_meta(name, t)
        if t.device != self.maps.device:
            raise ValueError(f"{name} is on {t.device}, the maps on {self.maps.device}")

    def _check_image(self, x: torch.Tensor) -> None:
        _fft._check_complex("image", x, self.ndim + 1)
        self._check_device("image", x)
        spatial = tuple(self.maps.shape[2:])
        if x.dim() != self.ndim + 1 or tuple(x.shape[1:]) != spatial or self.maps.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"image must have shape (batch, {', '.join(map(str, spatial))}) with batch "
                             f"{self.maps.shape[0]} or any batch for shared maps, got {tuple(x.shape)}")

    def _check_coils(self, y: torch.Tensor) -> None:
        _fft._check_complex("k-space", y, self.ndim + 2)
        self._check_device("k-space", y)
        if y.dim() != self.ndim + 2 or y.shape[1] != self.coils:
            raise ValueError(f"expected {self.coils} coils in (batch, coils, *spatial), got shape {tuple(y.shape)}")
        if tuple(y.shape[2:]) != tuple(self.maps.shape[2:]) or self.maps.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"coil data of shape {tuple(y.shape)} does not match maps {tuple(self.maps.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return self.maps * x.unsqueeze(1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_coils(y)
        return (self.maps.conj() * y).sum(dim=1)


class SingleCoil(LinearOperator):
    """A = M F: image (batch, *spatial) -> masked centered k-space of the same shape."""

    def __init__(self, mask: torch.Tensor, ndim: int = 2) -> None:
        self.fft, self.mask = FFT(ndim), Mask(mask)
        self.ndim = ndim
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        no_meta("image", x)
        return self.mask(self.fft(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        no_meta("k-space", y)
        return self.fft.H(self.mask(y))


class Sense(LinearOperator):
    """The multi-coil SENSE model A = M F S: image (batch, *spatial) -> masked k-space (batch, coils, *spatial).
    mask None samples everything."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None, ndim: int = 2) -> None:
        self.coil, self.fft = CoilExpand(maps, ndim), FFT(ndim)
        self.mask = None if mask is None else Mask(mask)
        if self.mask is not None:  # per-sample masks may go with shared maps
            m = self.mask.mask
            batch = m.shape[0] if m.dim() == maps.dim() else maps.shape[0]
            _broadcasts(m, torch.empty((batch, *maps.shape[1:]), device="meta"), "mask", "k-space")
        self.ndim = ndim
        self._lines = self._line_mask()
        self._freeze()

    def _line_mask(self) -> torch.Tensor | None:
        """For a 0/1 mask constant along every spatial axis but the last (lines, the fastMRI case),
        that mask ifftshifted along the last axis; else None. Then F^H M F acts along the last axis
        alone and commutes with the circular FFT shifts: F^H M F = ifft_W(ifftshift(M) fft_W(.))."""
        if self.mask is None or not self.mask.binary:
            return None
        m = self.mask.mask
        if any(m.dim() >= d and m.shape[-d] != 1 for d in range(2, self.ndim + 1)):
            return None
        return torch.fft.ifftshift(m, dim=-1)

    @property
    def maps(self) -> torch.Tensor:
        return self.coil.maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.fft(self.coil(x))
        return k if self.mask is None else self.mask(k)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.coil._check_coils(y)
        return self.coil.H(self.fft.H(y if self.mask is None else self.mask(y)))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """S^H F^H M F S x through the fused kernels when the mask is 0/1 and the data complex64."""
        self.coil._check_image(x)
        if x.numel() == 0:  # an empty batch: nothing to transform (the FFTs refuse empty input)
            return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, self.maps.dtype))
        if self.mask is None:
            return self.coil.H(self.coil(x))
        if not self.mask.binary or x.dtype != torch.complex64 or self.maps.dtype != torch.complex64:
            return super().normal(x)
        if self._lines is not None:  # 1D FFTs along the lines only, no shifts: half the FFT work
            k = torch.fft.fft(dc_ops.coil_expand(x, self.maps), dim=-1, norm="ortho")
            k *= self._lines.to(k.device)
            return dc_ops.coil_combine(torch.fft.ifft(k, dim=-1, norm="ortho"), self.maps)
        return consistency.normal(x, self)
