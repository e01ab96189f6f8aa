"""score_sde_pytorch checkpoints (score-MRI, DiffusionMBIR): NCSN++ against deepinv's NCSNpp (EDM's
SongUNet, the same network under other names: the mapping below), the original checkpoint layout
("module." keys, the EMA as a positional list) and its refusals, and a reconstruction end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _adm_testing import multicoil_problem
from _deepinv import deepinv_model
from torch import nn

from mridpm.nets.external import score_sde
from mridpm.nets.external._ncsnpp import NCSNpp, NCSNppConfig
from mridpm.nets.external._ncsnpp_layers import Resample
from mridpm.nets.priors import load_prior
from mridpm.random import Generator
from mridpm.tasks.reconstruction import reconstruct_prior

# the score-MRI network at toy size; 128 channels because deepinv's GroupNorm takes 32 groups where
# score_sde takes min(C // 4, 32)
PEER = dict(nf=128, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(8,), image_size=16)
TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), image_size=16)


def _random_net(arch: dict[str, Any], seed: int, fourier: float = 16.0) -> NCSNpp:
    """An NCSN++ with every weight random (the original initializes many to ~0, which hides paths);
    fourier: the std of the Fourier frequencies W (16 in the configs)."""
    net = NCSNpp(NCSNppConfig(**arch))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            scale = fourier if name == "all_modules.0.W" else 0.1
            base = 1.0 if "GroupNorm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return net.eval()


def _checkpoint(path: Path, arch: dict[str, Any], fourier: float = 16.0) -> tuple[NCSNpp, NCSNpp]:
    """A checkpoint as score_sde's run_lib saves it: the DataParallel model's state ("module." keys,
    the float64 sigmas buffer), the EMA's shadow_params list, step, optimizer. Returns (model, ema)."""
    model, ema = _random_net(arch, 0, fourier), _random_net(arch, 1, fourier)
    ema.all_modules[0].W.data.copy_(model.all_modules[0].W)  # frozen: not in the EMA
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.sigmas"] = torch.exp(torch.linspace(math.log(378.0), math.log(0.01), 10, dtype=torch.float64))
    shadow = [p.detach().clone() for p in ema.parameters() if p.requires_grad]
    torch.save({"model": state, "ema": {"decay": 0.999, "num_updates": 7, "shadow_params": shadow}, "step": 7,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}}, path)
    return model, ema


def _to_deepinv(net: NCSNpp, peer: nn.Module) -> None:
    """Copies NCSN++ weights into deepinv's NCSNpp: both run the same modules in the same order, an
    AttnBlockpp sits in the UNetBlock before it (NIN matrices are transposed 1x1 convs; q, k, v
    interleave in one qkv conv), the Fourier features are deepinv's freqs."""
    units: list[tuple[str, nn.Module]] = [("fourier", peer.map_noise), ("linear", peer.map_layer0),
                                          ("linear", peer.map_layer1)]
    for blocks in (peer.enc, peer.dec):
        for m in blocks.values():
            kind = type(m).__name__
            units.append(({"UNetBlock": "block", "UpDownConv2d": "conv", "GroupNorm": "norm"}[kind], m))
            if kind == "UNetBlock" and m.num_heads:
                units.append(("attn", m))
    mine = list(net.all_modules)
    assert len(mine) == len(units)
    with torch.no_grad():
        for a, (kind, b) in zip(mine, units, strict=True):
            if isinstance(a, Resample):  # the input pyramid's FIR-down conv
                a = a.Conv2d_0
            name = type(a).__name__
            if kind == "fourier":
                b.freqs.copy_(a.W)
            elif kind in ("linear", "conv", "norm"):
                assert name in ("Linear", "Conv2d", "FIRConv2d", "GroupNorm"), (name, kind)
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
            elif kind == "block":
                assert name == "ResnetBlockBigGANpp" and hasattr(a, "Conv_2") == (b.skip is not None)
                pairs = [("GroupNorm_0", "norm0"), ("Conv_0", "conv0"), ("Dense_0", "affine"),
                         ("GroupNorm_1", "norm1"), ("Conv_1", "conv1"), ("Conv_2", "skip")]
                for x, y in pairs:
                    if hasattr(a, x):
                        getattr(b, y).weight.copy_(getattr(a, x).weight)
                        getattr(b, y).bias.copy_(getattr(a, x).bias)
            else:
                assert name == "AttnBlockpp"
                b.norm2.weight.copy_(a.GroupNorm_0.weight)
                b.norm2.bias.copy_(a.GroupNorm_0.bias)
                nins = (a.NIN_0, a.NIN_1, a.NIN_2)
                b.qkv.weight.copy_(torch.stack([n.W.t() for n in nins], 1).reshape(-1, a.NIN_0.W.shape[0], 1, 1))
                b.qkv.bias.copy_(torch.stack([n.b for n in nins], 1).reshape(-1))
                b.proj.weight.copy_(a.NIN_3.W.t()[:, :, None, None])
                b.proj.bias.copy_(a.NIN_3.b)


def _peer(net: NCSNpp) -> nn.Module:
    cfg = net.cfg
    peer = deepinv_model("ncsnpp").NCSNpp(
        model_type="ncsn", img_resolution=cfg.image_size, in_channels=1, out_channels=1, label_dim=0,
        augment_dim=0, model_channels=cfg.nf, channel_mult=cfg.ch_mult, num_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions, dropout=0.0, pretrained=None)
    _to_deepinv(net, peer)
    return peer.eval()


def _peer_score(peer: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """score_sde's score from deepinv's UNet: [0, 1] data to 2x - 1, log sigma in, output / sigma."""
    return peer.forward_unet(2 * x - 1, torch.log(sigma)) / sigma.view(-1, 1, 1, 1)


def test_ncsnpp_equals_deepinv_ncsnpp_through_the_key_mapping(tmp_path: Path) -> None:
    """At 1e-5 of each output's peak. The Fourier frequencies have std 1 here, not 16: deepinv computes
    x * (2 pi W) where score_sde computes (x W) 2 pi, and at std 16 the float32 arguments (~10^3 rad)
    round apart by ~1e-4 rad, which alone moves outputs by ~7e-5 (sigma = 1, where log sigma = 0 and
    the arguments are exact, agrees to 4e-6 at either std)."""
    _checkpoint(tmp_path / "checkpoint_95.pth", PEER, fourier=1.0)
    prior = score_sde.load(tmp_path / "checkpoint_95.pth", **PEER)
    net = prior.model.net.net
    peer = _peer(net)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 16, 16, generator=g)
    sigma = torch.tensor([0.01, 1.0, 378.0])
    with torch.no_grad():
        want, got = _peer_score(peer, x, sigma), net(x, sigma)
    scale = want.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    assert float(((got - want) / scale).abs().max()) < 1e-5
    # the prior: a 2-channel eps-model on the VP scale, real and imaginary through the network apart
    x2 = torch.randn(2, 2, 16, 16, generator=g)
    t = torch.tensor([0, 1999])
    s = prior.model.net.sigmas[t].float()
    xs = x2 * torch.sqrt(1 + s**2).view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = prior.model(x2, t)
        ref = -s.view(-1, 1, 1, 1) * torch.cat([_peer_score(peer, xs[:, c:c + 1], s) for c in (0, 1)], 1)
    assert float(((eps - ref) / ref.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).abs().max()) < 1e-5


@pytest.mark.parametrize("up", [True, False])
def test_fir_resampling_equals_deepinv(up: bool) -> None:
    """The FIR paths the default config does not use (the pyramids' fused conv, the plain FIR
    resampling of input_skip / output_skip) against deepinv's UpDownConv2d."""
    peer_conv = deepinv_model("utils").UpDownConv2d
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    fused = Resample(3, 5, up=up, with_conv=True, fir=True, fir_kernel=(1, 3, 3, 1))
    peer = peer_conv(3, 5, 3, up=up, down=not up, resample_filter=[1, 3, 3, 1], fused_resample=True)
    plain = Resample(3, None, up=up, with_conv=False, fir=True, fir_kernel=(1, 3, 3, 1))
    peer_plain = peer_conv(3, 3, 0, up=up, down=not up, resample_filter=[1, 3, 3, 1])
    with torch.no_grad():
        for name, p in fused.Conv2d_0.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
            getattr(peer, name).copy_(p)
        want = peer(x)
        assert want.shape[-1] == (16 if up else 4)
        assert float((fused(x) - want).abs().max()) < 1e-5 * float(want.abs().max())
        torch.testing.assert_close(plain(x), peer_plain(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", [dict(progressive="output_skip", progressive_input="input_skip"),
                                     dict(progressive="residual", progressive_input="none"),
                                     dict(progressive_input="input_skip", progressive_combine="cat"),
                                     dict(fir=False, progressive="residual")])
def test_the_other_pyramid_variants_run(variant: dict[str, Any]) -> None:
    with torch.no_grad():
        out = _random_net(dict(TINY, **variant), 0)(torch.rand(2, 1, 16, 16), torch.tensor([0.1, 10.0]))
    assert out.shape == (2, 1, 16, 16) and bool(torch.isfinite(out).all())


def test_the_original_layout_loads_the_ema_and_the_card(tmp_path: Path) -> None:
    model, ema = _checkpoint(tmp_path / "ck.pth", TINY)
    prior = score_sde.load(tmp_path / "ck.pth", **TINY)
    net = prior.model.net.net
    assert not net.training and all(p.dtype == torch.float32 for p in net.parameters())
    for (name, p), q in zip(net.named_parameters(), ema.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)  # EMA list, and W from the model
    info = prior.info
    assert info["format"] == "score-sde" and info["schedule_kind"] == "ve" and info["size_multiple"] == 2
    assert info["sigmas"] == pytest.approx([0.01, 378.0, 2000]) and info["data_range"] == [-1.0, 1.0]
    assert info["p99"] == 0.9 and "p99" in info["notes"] and info["image_size"] == [16, 16]
    assert prior.prediction == "eps" and len(prior.schedule.betas) == 2000
    abar = prior.schedule.alphas_cumprod
    assert float(1 / abar[0] - 1) == pytest.approx(0.01**2) and float(1 / abar[-1] - 1) == pytest.approx(378.0**2)
    plain = score_sde.load(tmp_path / "ck.pth", ema=False, N=50, sigma_max=50.0, p99=0.5, **TINY)
    for p, q in zip(plain.model.net.net.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert plain.info["sigmas"] == pytest.approx([0.01, 50.0, 50]) and plain.info["p99"] == 0.5


def test_mismatching_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ck.pth"
    _checkpoint(path, TINY)
    ck = torch.load(path, weights_only=True)
    bad = dict(ck, ema=dict(ck["ema"], shadow_params=[torch.zeros(3, 3), *ck["ema"]["shadow_params"][1:]]))
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shadow_params\[0\] has shape \(3, 3\) in the file but "
                                         r"'all_modules.1.weight' has \(32, 16\)") as err:
        score_sde.load(tmp_path / "shape.pth", **TINY)
    assert "\n" not in str(err.value)
    torch.save(dict(ck, ema=dict(ck["ema"], shadow_params=ck["ema"]["shadow_params"][:-1])), tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"has \d+ tensors but the model has \d+ trainable parameters; the first "
                                         r"without one is 'all_modules.\d+.bias' \(1,\)"):
        score_sde.load(tmp_path / "short.pth", **TINY)
    model = {k: v for k, v in ck["model"].items() if k != "module.all_modules.4.Conv_0.weight"}
    torch.save(dict(ck, model=model), tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"'all_modules.4.Conv_0.weight' \(shape \(8, 8, 3, 3\) in the model\) "
                                         r"is missing from the file"):
        score_sde.load(tmp_path / "missing.pth", **TINY)
    with pytest.raises(ValueError, match=r"'all_modules.0.W' has shape \(8,\) in the file but \(16,\) in the model"):
        score_sde.load(path, **dict(TINY, nf=16))
    with pytest.raises(ValueError, match="unknown score-sde options"):
        score_sde.load(path, nf_=3)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a weights-only torch checkpoint"):
        score_sde.load(tmp_path / "junk.pth", **TINY)


@pytest.mark.parametrize("method", ["pc", "dds"])
def test_a_score_sde_prior_reconstructs_a_multicoil_problem(tmp_path: Path, method: str) -> None:
    _checkpoint(tmp_path / "ck.pth", dict(TINY, attn_resolutions=()))
    prior = load_prior(tmp_path / "ck.pth", format="score-sde", N=20, **dict(TINY, attn_resolutions=()))
    size = (16, 16)
    y, op = multicoil_problem(size)
    r = reconstruct_prior(y, op, prior, method=method, steps=3, samples=1, generator=Generator(0))
    assert tuple(r.mean.shape) == (1, *size) and bool(torch.isfinite(r.mean).all())
