"""NCSNv2 / NCSNv2Deeper / NCSNv2Deepest (ermongroup/ncsnv2 models/ncsnv2.py and models/layers.py, as
csgm-mri-langevin vendors them): a RefineNet of residual blocks with InstanceNorm++, not conditioned on
the noise level; the output is divided by sigmas[y] for the integer level y (sigmas descending, as
stored). Same attribute names (so the same state-dict keys) and the same arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mridpm.nets.external._ncsnpp_layers import Act, get_act

# stages (name, in and out channels in units of ngf, downsampling, dilation); a dilated "down" block
# keeps the resolution (ResidualBlock's dilated branch has no pooling)
_STAGES = {
    "NCSNv2": [("res1", 1, 1, False, None), ("res2", 1, 2, True, None), ("res3", 2, 2, True, 2),
               ("res4", 2, 2, True, 4)],
    "NCSNv2Deeper": [("res1", 1, 1, False, None), ("res2", 1, 2, True, None), ("res3", 2, 2, True, None),
                     ("res4", 2, 4, True, 2), ("res5", 4, 4, True, 4)],
    "NCSNv2Deepest": [("res1", 1, 1, False, None), ("res2", 1, 2, True, None), ("res3", 2, 2, True, None),
                      ("res31", 2, 2, True, None), ("res4", 2, 4, True, 2), ("res5", 4, 4, True, 4)],
}
# refine blocks in the original's registration order: (name, input widths, width, the stage it joins)
_REFINES = {
    "NCSNv2": [("refine1", (2,), 2, "res4"), ("refine2", (2, 2), 2, "res3"), ("refine3", (2, 2), 1, "res2"),
               ("refine4", (1, 1), 1, "res1")],
    "NCSNv2Deeper": [("refine1", (4,), 4, "res5"), ("refine2", (4, 4), 2, "res4"), ("refine3", (2, 2), 2, "res3"),
                     ("refine4", (2, 2), 1, "res2"), ("refine5", (1, 1), 1, "res1")],
    "NCSNv2Deepest": [("refine1", (4,), 4, "res5"), ("refine2", (4, 4), 2, "res4"), ("refine3", (2, 2), 2, "res3"),
                      ("refine31", (2, 2), 2, "res31"), ("refine4", (2, 2), 1, "res2"),
                      ("refine5", (1, 1), 1, "res1")],
}
MODELS = tuple(_STAGES)


class InstanceNorm2dPlus(nn.Module):
    """Instance norm that keeps the spread of channel means: gamma (IN(x) + alpha m~) + beta, m~ the
    channel means standardized across channels."""

    def __init__(self, num_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_features, self.bias = num_features, bias
        self.alpha = nn.Parameter(torch.ones(num_features))
        self.gamma = nn.Parameter(torch.ones(num_features))
        if bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = torch.mean(x, dim=(2, 3))
        m, v = torch.mean(means, dim=-1, keepdim=True), torch.var(means, dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(x, eps=1e-5) + means[..., None, None] * self.alpha[..., None, None]
        out = self.gamma.view(-1, self.num_features, 1, 1) * h
        return out + self.beta.view(-1, self.num_features, 1, 1) if self.bias else out


def _conv(cin: int, cout: int, k: int = 3, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """A stride-1 convolution then 2 x 2 mean pooling (adjust_padding: pad one row and column first)."""

    def __init__(self, cin: int, cout: int, k: int, adjust_padding: bool = False) -> None:
        super().__init__()
        conv = _conv(cin, cout, k)
        self.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), conv) if adjust_padding else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """norm, act, conv, norm, act, conv plus a shortcut (a conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, down: bool, act: Act, dilation: int | None = None,
                 adjust_padding: bool = False) -> None:
        super().__init__()
        d = dilation or 1
        if down and dilation is None:
            self.conv1, self.normalize2 = _conv(cin, cin), InstanceNorm2dPlus(cin)
            self.conv2: nn.Module = ConvMeanPool(cin, cout, 3, adjust_padding)
            self.shortcut: nn.Module = ConvMeanPool(cin, cout, 1, adjust_padding)
        else:
            mid = cin if down else cout
            self.conv1, self.normalize2 = _conv(cin, mid, dilation=d), InstanceNorm2dPlus(mid)
            self.conv2 = _conv(mid, cout, dilation=d)
            if cout != cin or down:
                self.shortcut = _conv(cin, cout, k=3 if dilation else 1, dilation=d)
        self.normalize1, self.act, self.same = InstanceNorm2dPlus(cin), act, cout == cin and not down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.normalize1(x)))
        out = self.conv2(self.act(self.normalize2(out)))
        return (x if self.same else self.shortcut(x)) + out


class RCUBlock(nn.Module):
    """n_blocks residual units of n_stages (act, bias-free conv) each; convs named "{i}_{j}_conv"."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: Act) -> None:
        super().__init__()
        for i in range(n_blocks):
            for j in range(n_stages):
                self.add_module(f"{i + 1}_{j + 1}_conv", _conv(features, features, bias=False))
        self.n_blocks, self.n_stages, self.act = n_blocks, n_stages, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                x = getattr(self, f"{i + 1}_{j + 1}_conv")(self.act(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: act, then n_stages of (5 x 5 max pool, conv) each added to x."""

    def __init__(self, features: int, n_stages: int, act: Act) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(features, features, bias=False) for _ in range(n_stages))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: each input convolved and resized (bilinear) to `shape`, then summed."""

    def __init__(self, in_planes: Sequence[int], features: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(c, features) for c in in_planes)

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
        out: torch.Tensor | None = None
        for conv, x in zip(self.convs, xs, strict=True):
            h = F.interpolate(conv(x), size=tuple(shape), mode="bilinear", align_corners=True)
            out = h if out is None else out + h
        assert out is not None
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU on each input, fusion (unless start), chained pooling, output RCU."""

    def __init__(self, in_planes: Sequence[int], features: int, act: Act, start: bool = False,
                 end: bool = False) -> None:
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
        if not start:
            self.msf = MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2, act)

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
        hs = [conv(x) for conv, x in zip(self.adapt_convs, xs, strict=True)]
        h = self.msf(hs, shape) if len(hs) > 1 else hs[0]
        return self.output_convs(self.crp(h))


class NCSNv2(nn.Module):
    """model(x, y) = RefineNet(2x - 1) / sigmas[y] (x as is when logit_transform or rescaled)."""

    def __init__(self, model: str, ngf: int, channels: int, num_classes: int, act: str = "elu",
                 image_size: int = 0, centered: bool = False) -> None:
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"NCSNv2 model must be one of {MODELS}, got {model!r}")
        self.act, self.centered = get_act(act), centered
        self.register_buffer("sigmas", torch.ones(num_classes))
        self.begin_conv = _conv(channels, ngf)
        self.normalizer = InstanceNorm2dPlus(ngf)
        self.end_conv = _conv(ngf, channels)
        self.stages = [name for name, *_ in _STAGES[model]]
        for name, cin, cout, down, dil in _STAGES[model]:
            adjust = model == "NCSNv2" and name == "res4" and image_size == 28
            self.add_module(name, nn.ModuleList([
                ResidualBlock(cin * ngf, cout * ngf, down, self.act, dil, adjust),
                ResidualBlock(cout * ngf, cout * ngf, False, self.act, dil)]))
        refines = _REFINES[model]
        for i, (name, ins, out, _) in enumerate(refines):
            self.add_module(name, RefineBlock([c * ngf for c in ins], out * ngf, self.act, start=i == 0,
                                              end=i == len(refines) - 1))
        # the forward order: from the deepest stage up (Deepest registers refine3 before refine31)
        self.order = sorted(((n, s) for n, _, _, s in refines), key=lambda p: -self.stages.index(p[1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x if self.centered else 2 * x - 1.0
        layers: dict[str, torch.Tensor] = {}
        h = self.begin_conv(h)
        for name in self.stages:
            for block in getattr(self, name):
                h = block(h)
            layers[name] = h
        ref: torch.Tensor | None = None
        for name, stage in self.order:
            skip = layers[stage]
            ref = getattr(self, name)([skip] if ref is None else [skip, ref], skip.shape[2:])
        assert ref is not None
        out = self.end_conv(self.act(self.normalizer(ref)))
        return out / self.sigmas[y].view(x.shape[0], *([1] * (x.dim() - 1)))
