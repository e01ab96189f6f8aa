"""Priors from NCSNv2 checkpoints (ermongroup/ncsnv2, as csgm-mri-langevin trains and loads them):
`states = torch.load(...)`, a list [model state ("module." keys), optimizer state, epoch, step, EMA
shadow (named, no prefix)]; the EMA weights are used. The network takes the integer noise level y of
the descending sigmas it stores and returns the score; SigmaPrior runs it on the VP schedule of the
same sigmas in ascending order, so the prior's step t is the network's level num_classes - 1 - t."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.nets.external import check_and_load, merge_options, read_checkpoint
from mridpm.nets.external._ncsnv2 import MODELS, NCSNv2
from mridpm.nets.external.convert import SigmaPrior, discrete_from_sigmas
from mridpm.nets.external.score_sde import tensor_dict
from mridpm.nets.priors import Prior
from mridpm.train.checkpoint import state_mismatch

FORMAT = "ncsnv2"
# csgm-mri-langevin configs/file/brain_T2.yaml, langevin_config (and main.py's NCSNv2Deepest)
DEFAULTS: dict[str, Any] = dict(
    model="NCSNv2Deepest", ngf=128, channels=2, num_classes=2311, sigma_begin=232.0, sigma_end=0.0066,
    nonlinearity="elu", normalization="InstanceNorm++", image_size=384, logit_transform=False, rescaled=False,
    p99=1.0, data_range=(-1e9, 1e9), ema=True)
_DOWN = {"NCSNv2": 2, "NCSNv2Deeper": 4, "NCSNv2Deepest": 8}


class LevelIndex(nn.Module):
    """The SigmaPrior net of an NCSNv2: its level y = num_classes - 1 - index (descending sigmas)."""

    def __init__(self, net: NCSNv2) -> None:
        super().__init__()
        self.net, self.last = net, int(net.sigmas.numel()) - 1

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.last - index.long())


def _states(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(model state, EMA shadow or None) from ncsnv2's states list, or from a bare state dict."""
    if isinstance(obj, dict):
        return tensor_dict(obj, "the checkpoint", source), None
    if not isinstance(obj, (list, tuple)) or not obj:
        raise ValueError(f"{source}: an NCSNv2 checkpoint is the list [model, optimizer, epoch, step, ema] "
                         f"or a state dict, got {type(obj).__name__}")
    model = tensor_dict(obj[0], "states[0] (the model state)", source)
    if len(obj) < 2 or not isinstance(obj[-1], dict):  # saved without an EMA: [model, optimizer, epoch, step]
        return model, None
    return model, tensor_dict(obj[-1], "states[-1] (the EMA shadow)", source)


def load(path: Path, device: str | torch.device = "cpu", **options: Any) -> Prior:
    """The NCSNv2 prior in an ncsnv2 / csgm-mri-langevin checkpoint (EMA weights unless ema=False);
    options: model (NCSNv2, NCSNv2Deeper, NCSNv2Deepest), ngf, channels, num_classes, sigma_begin,
    sigma_end, nonlinearity, image_size, logit_transform, rescaled, p99, data_range."""
    opts = merge_options(DEFAULTS, options, FORMAT)
    source = str(path)
    if opts["model"] not in MODELS or opts["normalization"] != "InstanceNorm++" or opts["channels"] != 2:
        raise ValueError(f"ncsnv2 priors here need model in {MODELS}, normalization 'InstanceNorm++' and 2 "
                         f"channels (real, imaginary), got {opts['model']!r}, {opts['normalization']!r}, "
                         f"{opts['channels']}")
    state, shadow = _states(read_checkpoint(Path(path)), source)
    net = NCSNv2(opts["model"], int(opts["ngf"]), 2, int(opts["num_classes"]), opts["nonlinearity"],
                 int(opts["image_size"]), bool(opts["logit_transform"] or opts["rescaled"]))
    stored = "sigmas" in state
    if not stored:  # a state dict saved without the buffer: rebuild it as get_sigmas does
        begin, end = math.log(float(opts["sigma_begin"])), math.log(float(opts["sigma_end"]))
        state["sigmas"] = torch.exp(torch.linspace(begin, end, int(opts["num_classes"]), dtype=torch.float64)).float()
    check_and_load(net, state, source, FORMAT)
    use_ema = bool(opts["ema"]) and shadow is not None
    if use_ema:
        assert shadow is not None
        params = dict(net.named_parameters())
        if (problem := state_mismatch(params, shadow)) is not None:
            raise ValueError(f"{source}: the EMA shadow (states[-1]) does not fit the model: {problem}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(shadow[name].float())
    net = net.eval().float().to(device)
    desc = net.sigmas.detach().double().cpu()
    if not (bool((desc > 0).all()) and bool((desc.diff() < 0).all())):
        raise ValueError(f"{source}: the stored sigmas must be positive and strictly decreasing")
    sigmas = desc.flip(0)
    info = {
        "format": FORMAT, "image_size": [int(opts["image_size"])] * 2, "data_range": list(opts["data_range"]),
        "p99": float(opts["p99"]), "size_multiple": _DOWN[opts["model"]], "source": source,
        "schedule_kind": "ve", "sigmas": [float(sigmas[0]), float(sigmas[-1]), int(sigmas.numel())],
        "ema": use_ema, "model": opts["model"],
        "notes": (f"{opts['model']} score network (not noise-conditional; output / sigma of its level), "
                  f"{sigmas.numel()} sigmas {float(sigmas[0]):g}..{float(sigmas[-1]):g} "
                  f"{'stored in the checkpoint' if stored else 'from sigma_begin, sigma_end'}; real and imaginary "
                  "parts as 2 channels of an image divided by the 99th percentile of its magnitude "
                  f"(csgm-mri-langevin), so p99 = 1; {'used as is' if net.centered else 'mapped to 2x-1 inside'}; "
                  "x0 is not clipped by default (option data_range)"),
    }
    model = SigmaPrior(LevelIndex(net), sigmas, "score").to(device).eval()
    return Prior(model, discrete_from_sigmas(sigmas), "eps", info)
