"""Any image size for a prior: its UNet halves the image len(channel_mult) - 1 times, so each side must
be a multiple of 2^(levels - 1). The model is run on the image zero-padded (centered, in image space)
to the next multiple and its output cropped back to H x W; the data consistency and the operator stay
at the user's size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mridpm.mri.espirit import resize_center


def unet_factor(network: Any) -> int:
    """The multiple a network's image sides must be: 2^(levels - 1) for a UNet config, else 1."""
    config = getattr(network, "config", None)
    mult = getattr(config, "channel_mult", None)
    return 2 ** (len(mult) - 1) if mult else 1


def size_multiple(prior: Any) -> int:
    """The multiple a prior's image sides must be: its card's "size_multiple" (external priors), else its UNet's."""
    return int(prior.info["size_multiple"]) if "size_multiple" in prior.info else unet_factor(prior.model)


def padded_size(size: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Each side rounded up to the next multiple of factor."""
    return tuple(-(-int(n) // factor) * factor for n in size)


class PaddedModel:
    """model(x, t) on images of any size: x (batch, *spatial) zero-padded to padded_size, the output
    cropped back to x's size (both centered, as espirit.resize_center places them)."""

    def __init__(self, model: Callable[..., torch.Tensor], factor: int) -> None:
        self.model, self.factor = model, factor

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        big = padded_size(size, self.factor)
        if big == size:
            return self.model(x, t, **kwargs)
        return resize_center(self.model(resize_center(x, big), t, **kwargs), size)


def fit_model(model: Callable[..., torch.Tensor], size: tuple[int, ...], factor: int) -> Callable[..., torch.Tensor]:
    """model itself when both sides of size are multiples of factor, else a PaddedModel around it."""
    return model if padded_size(size, factor) == tuple(size) else PaddedModel(model, factor)
