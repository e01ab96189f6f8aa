"""Priors from score_sde_pytorch checkpoints (score-MRI, DiffusionMBIR: NCSN++ on a continuous VE
SDE). The file is {"model": state dict ("module." keys), "ema": {"decay", "num_updates",
"shadow_params": the trainable parameters in model.parameters() order}, "step", "optimizer"}; the
EMA weights are used. The network takes sigma and returns the score of x = x0 + sigma n, so it runs
through SigmaPrior on the VP schedule of the geometric sigmas sigma_min..sigma_max (N levels)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.nets.external import check_and_load, merge_options, read_checkpoint, strip_prefix
from mridpm.nets.external._hub import ComplexChannels
from mridpm.nets.external._ncsnpp import NCSNpp, NCSNppConfig
from mridpm.nets.external.convert import SigmaPrior, discrete_from_sigmas
from mridpm.nets.priors import Prior

FORMAT = "score-sde"
# score-MRI configs/ve/fastmri_knee_320_ncsnpp_continuous.py on configs/default_lsun_configs.py
ARCH: dict[str, Any] = dict(
    nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), image_size=320, num_channels=1,
    centered=False, scale_by_sigma=True, nonlinearity="swish", conditional=True, fir=True,
    fir_kernel=(1, 3, 3, 1), skip_rescale=True, resamp_with_conv=True, resblock_type="biggan",
    progressive="none", progressive_input="residual", progressive_combine="sum", embedding_type="fourier")
# sigma_min / sigma_max None: from the checkpoint's "sigmas" buffer, else score-MRI's 0.01 / 378
DEFAULTS: dict[str, Any] = {**ARCH, "sigma_min": None, "sigma_max": None, "N": 2000, "p99": 0.9, "ema": True}


def tensor_dict(obj: Any, what: str, source: str) -> dict[str, torch.Tensor]:
    """obj as a {name: tensor} dict with DataParallel's "module." removed, or a one-line ValueError."""
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: {what} is not a dict of tensors")
    return strip_prefix({str(k): v for k, v in obj.items()})


def apply_shadow(model: nn.Module, shadow: Any, source: str) -> None:
    """Copies score_sde's EMA shadow_params (one tensor per trainable parameter, in
    model.parameters() order) into model, or one-line ValueError at the first mismatch."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in shadow):
        raise ValueError(f"{source}: ema.shadow_params is not a list of tensors")
    for i, (name, p) in enumerate(named):
        if i >= len(shadow):
            raise ValueError(f"{source}: ema.shadow_params has {len(shadow)} tensors but the model has "
                             f"{len(named)} trainable parameters; the first without one is {name!r} {tuple(p.shape)}")
        if tuple(shadow[i].shape) != tuple(p.shape):
            raise ValueError(f"{source}: ema.shadow_params[{i}] has shape {tuple(shadow[i].shape)} in the file but "
                             f"{name!r} has {tuple(p.shape)} in the model")
    if len(shadow) != len(named):
        extra = tuple(shadow[len(named)].shape)
        raise ValueError(f"{source}: ema.shadow_params has {len(shadow)} tensors but the model has {len(named)} "
                         f"trainable parameters; shadow_params[{len(named)}] (shape {extra}) has no parameter")
    with torch.no_grad():
        for (_, p), s in zip(named, shadow, strict=True):
            p.copy_(s.float())


def geometric_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """VESDE.discrete_sigmas: n levels from sigma_min to sigma_max, evenly spaced in log (float64)."""
    if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)) or n < 2:
        raise ValueError(f"need 0 < sigma_min < sigma_max and N >= 2, got {sigma_min}, {sigma_max}, {n}")
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), n, dtype=torch.float64))


def load(path: Path, device: str | torch.device = "cpu", **options: Any) -> Prior:
    """The NCSN++ VE prior in a score_sde_pytorch checkpoint (its EMA weights unless ema=False);
    options: the architecture fields of ARCH, sigma_min, sigma_max, N (sampling levels), p99."""
    opts = merge_options(DEFAULTS, options, FORMAT)
    source = str(path)
    obj = read_checkpoint(Path(path))
    raw = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    state = tensor_dict(raw, "the model state", source)
    buffer = state.pop("sigmas", None)
    cfg = NCSNppConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items() if k in ARCH})
    net = NCSNpp(cfg)
    check_and_load(net, state, source, FORMAT)
    ema = obj.get("ema") if isinstance(obj, dict) else None
    if opts["ema"] and ema is not None:
        apply_shadow(net, ema.get("shadow_params") if isinstance(ema, dict) else None, source)
    net = net.eval().float().to(device)

    found = buffer is not None and buffer.numel() > 1
    s_min = opts["sigma_min"] or (float(f"{float(buffer.min()):.10g}") if found else 0.01)  # exp(log) noise off
    s_max = opts["sigma_max"] or (float(f"{float(buffer.max()):.10g}") if found else 378.0)
    sigmas = geometric_sigmas(float(s_min), float(s_max), int(opts["N"]))
    where = "the checkpoint's sigmas buffer" if found and not (opts["sigma_min"] and opts["sigma_max"]) else "options"
    info = {
        "format": FORMAT, "image_size": [cfg.image_size, cfg.image_size], "data_range": [-1.0, 1.0],
        "p99": float(opts["p99"]), "size_multiple": 2 ** (len(cfg.ch_mult) - 1), "source": source,
        "schedule_kind": "ve", "sigmas": [float(s_min), float(s_max), int(opts["N"])],
        "ema": bool(opts["ema"] and ema is not None),
        "notes": (f"NCSN++ score network on a continuous VE SDE (sigma {s_min:g}..{s_max:g} from {where}, "
                  f"{int(opts['N'])} levels), conditioned on log sigma; trained on magnitude images scaled to "
                  f"[0, 1] by their maximum ({'centered input' if cfg.centered else 'mapped to 2x-1 inside'}); "
                  + ("real and imaginary parts run separately through the 1-channel network; "
                     if cfg.num_channels == 1 else "real and imaginary parts as 2 channels; ")
                  + f"p99 {float(opts['p99']):g} is an assumed 99th percentile of a max-normalized magnitude "
                  "image (option p99; the training data's own value is not in the checkpoint)"),
    }
    c = cfg.num_channels  # 1: real and imaginary parts through the network separately (ComplexChannels)
    model = ComplexChannels(SigmaPrior(net, sigmas, "score"), c, c, source).to(device).eval()
    return Prior(model, discrete_from_sigmas(sigmas), "eps", info)
