"""The layers of score_sde_pytorch's NCSN++ (models/layerspp.py, models/layers.py,
models/up_or_down_sampling.py): same attribute names, so the same state-dict keys, and the same
arithmetic in the same order. Weights are always loaded, so the original initializers are not kept."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

Act = Callable[[torch.Tensor], torch.Tensor]
SQRT2 = math.sqrt(2.0)


def fir_kernel(k: Sequence[float]) -> torch.Tensor:
    """The 2D FIR filter of a separable 1D one, normalized to sum 1 (_setup_kernel)."""
    k1 = torch.as_tensor(k, dtype=torch.float32)
    k2 = torch.outer(k1, k1) if k1.dim() == 1 else k1
    return k2 / k2.sum()


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-insert by up, pad (negative crops), correlate with the flipped kernel, keep every down-th
    sample; every channel separately (op/upfirdn2d.py, upfirdn2d_native)."""
    b, c, h, w = x.shape
    x = x.reshape(-1, 1, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(-1, 1, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    x = F.conv2d(x, torch.flip(k, [0, 1]).to(x)[None, None])[:, :, ::down, ::down]
    return x.reshape(b, c, x.shape[-2], x.shape[-1])


def upsample_2d(x: torch.Tensor, k: Sequence[float], factor: int = 2) -> torch.Tensor:
    """FIR upsampling by factor (up_or_down_sampling.upsample_2d, gain 1)."""
    kk = fir_kernel(k) * factor**2
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float], factor: int = 2) -> torch.Tensor:
    """FIR downsampling by factor (up_or_down_sampling.downsample_2d, gain 1)."""
    kk = fir_kernel(k)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over factor x factor blocks."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


class FIRConv2d(nn.Module):
    """up_or_down_sampling.Conv2d: a convolution fused with FIR up- or downsampling (StyleGAN2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        if use_bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down, self.resample_kernel, self.use_bias = up, down, tuple(resample_kernel), use_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, kw = self.weight, self.weight.shape[-1]
        if self.up:  # transposed strided conv, then the FIR filter (upsample_conv_2d)
            k = fir_kernel(self.resample_kernel) * 4
            p = (k.shape[0] - 2) - (kw - 1)
            wt = torch.flip(w, [2, 3]).transpose(0, 1)  # the original's w[..., ::-1, ::-1] (which torch refuses)
            x = F.conv_transpose2d(x, wt, stride=2, padding=0)
            x = upfirdn2d(x, k, pad=((p + 1) // 2 + 1, p // 2 + 1))
        elif self.down:  # the FIR filter, then a strided conv (conv_downsample_2d)
            k = fir_kernel(self.resample_kernel)
            p = (k.shape[0] - 2) + (kw - 1)
            x = F.conv2d(upfirdn2d(x, k, pad=((p + 1) // 2, p // 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=kw // 2)
        return x + self.bias.reshape(1, -1, 1, 1) if self.use_bias else x


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    """layers.ddpm_conv3x3."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    """layers.ddpm_conv1x1."""
    return nn.Conv2d(in_ch, out_ch, 1)


def group_norm(ch: int) -> nn.GroupNorm:
    """The GroupNorm every NCSN++ block uses: min(ch // 4, 32) groups, eps 1e-6."""
    return nn.GroupNorm(min(ch // 4, 32), ch, eps=1e-6)


class NIN(nn.Module):
    """A 1x1 convolution stored as an (in, out) matrix W and a bias b (layers.NIN)."""

    def __init__(self, in_dim: int, num_units: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.zeros(in_dim, num_units))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("abcd,de->abce", x.permute(0, 2, 3, 1), self.W) + self.b
        return y.permute(0, 3, 1, 2)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma; W is a frozen parameter (saved in the model, not the EMA)."""

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.zeros(embedding_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


class Combine(nn.Module):
    """A 1x1 projection of the input pyramid joined to h by sum or concatenation."""

    def __init__(self, dim1: int, dim2: int, method: str) -> None:
        super().__init__()
        self.Conv_0, self.method = conv1x1(dim1, dim2), method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels with a residual connection."""

    def __init__(self, channels: int, skip_rescale: bool) -> None:
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0, self.NIN_1 = NIN(channels, channels), NIN(channels, channels)
        self.NIN_2, self.NIN_3 = NIN(channels, channels), NIN(channels, channels)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(hn), self.NIN_1(hn), self.NIN_2(hn)
        a = torch.einsum("bchw,bcij->bhwij", q, k) * (int(c) ** (-0.5))
        a = F.softmax(a.reshape(b, h, w, h * w), dim=-1).reshape(b, h, w, h, w)
        out = self.NIN_3(torch.einsum("bhwij,bcij->bchw", a, v))
        return (x + out) / SQRT2 if self.skip_rescale else x + out


class Resample(nn.Module):
    """layerspp.Upsample (up=True) or layerspp.Downsample: FIR or nearest/mean, with or without a conv."""

    def __init__(self, in_ch: int, out_ch: int | None, up: bool, with_conv: bool, fir: bool,
                 fir_kernel: Sequence[float]) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, up=up, down=not up, resample_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch) if up else conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.up, self.with_conv, self.fir, self.fir_kernel = up, with_conv, fir, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            if self.with_conv:
                return self.Conv2d_0(x)
            return upsample_2d(x, self.fir_kernel) if self.up else downsample_2d(x, self.fir_kernel)
        if self.up:
            h = F.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2), mode="nearest")
            return self.Conv_0(h) if self.with_conv else h
        return self.Conv_0(F.pad(x, (0, 1, 0, 1))) if self.with_conv else F.avg_pool2d(x, 2, stride=2)


class ResnetBlockBigGANpp(nn.Module):
    """The BigGAN residual block: GroupNorm, act, optional FIR resampling of both paths, conv, plus the
    noise embedding, GroupNorm, act, conv; a 1x1 shortcut when shape changes; (x + h) / sqrt 2."""

    def __init__(self, act: Act, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(0.0)
        self.Conv_1 = conv3x3(out_ch, out_ch)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir, self.fir_kernel = act, up, down, fir, tuple(fir_kernel)
        self.skip_rescale, self.in_ch, self.out_ch = skip_rescale, in_ch, out_ch

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return upsample_2d(x, self.fir_kernel) if self.fir else naive_upsample_2d(x)
        if self.down:
            return downsample_2d(x, self.fir_kernel) if self.fir else naive_downsample_2d(x)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / SQRT2 if self.skip_rescale else x + h


def get_act(name: str) -> Act:
    """layers.get_act: the nonlinearity a config names."""
    acts: dict[str, Act] = {"elu": nn.ELU(), "relu": nn.ReLU(), "lrelu": nn.LeakyReLU(0.2), "swish": nn.SiLU()}
    if name.lower() not in acts:
        raise ValueError(f"nonlinearity must be one of {sorted(acts)}, got {name!r}")
    return acts[name.lower()]
