"""NCSNv2 checkpoints (ermongroup/ncsnv2 as csgm-mri-langevin uses them): the network against a
functional re-derivation from the state dict, the level mapping (prior step t = network level
L - 1 - t, the output divided by that level's sigma), the original `states` list layout and its
refusals, and a reconstruction end to end. No peer library implements NCSNv2, hence the re-derivation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from _adm_testing import multicoil_problem

from mridpm.nets.external import ncsnv2
from mridpm.nets.external._ncsnv2 import NCSNv2
from mridpm.nets.priors import load_prior
from mridpm.random import Generator
from mridpm.tasks.reconstruction import reconstruct_prior

SD = dict[str, torch.Tensor]
TINY = dict(ngf=4, num_classes=6, sigma_begin=50.0, sigma_end=0.01, image_size=16)


def _random_net(model: str, seed: int) -> NCSNv2:
    net = NCSNv2(model, 4, 2, 6)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if name.endswith(("alpha", "gamma")) else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
        net.sigmas.copy_(torch.exp(torch.linspace(torch.log(torch.tensor(50.0)), torch.log(torch.tensor(0.01)), 6)))
    return net.eval()


def _save(path: Path, model: str = "NCSNv2Deepest") -> tuple[NCSNv2, NCSNv2]:
    """states as ncsn_runner saves them: [DataParallel state ("module."), optimizer, epoch, step,
    EMAHelper.shadow (unwrapped names)]. Returns (model, ema)."""
    net, ema = _random_net(model, 0), _random_net(model, 1)
    states = [{f"module.{k}": v for k, v in net.state_dict().items()},
              {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}, 3, 1000,
              {k: v.detach().clone() for k, v in ema.named_parameters()}]
    torch.save(states, path)
    return net, ema


# --- the re-derivation: the forward of models/ncsnv2.py + layers.py written on the state dict -------------
def _inorm(x: torch.Tensor, sd: SD, p: str) -> torch.Tensor:
    mu = x.mean(dim=(2, 3))
    mu = (mu - mu.mean(-1, keepdim=True)) / (mu.var(-1, keepdim=True) + 1e-5).sqrt()
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    h = (x - x.mean(dim=(2, 3), keepdim=True)) / (var + 1e-5).sqrt()
    h = h + mu[..., None, None] * sd[p + "alpha"][:, None, None]
    return sd[p + "gamma"][:, None, None] * h + sd[p + "beta"][:, None, None]


def _conv(x: torch.Tensor, sd: SD, p: str, dil: int = 1) -> torch.Tensor:
    w = sd[p + "weight"]
    return F.conv2d(x, w, sd.get(p + "bias"), padding=dil * (w.shape[-1] // 2), dilation=dil)


def _res(x: torch.Tensor, sd: SD, p: str, down: bool, dil: int | None) -> torch.Tensor:
    d, pool = dil or 1, down and dil is None
    h = _conv(F.elu(_inorm(x, sd, p + "normalize1.")), sd, p + "conv1.", d)
    h = F.elu(_inorm(h, sd, p + "normalize2."))
    h = F.avg_pool2d(_conv(h, sd, p + "conv2.conv."), 2) if pool else _conv(h, sd, p + "conv2.", d)
    if p + "shortcut.weight" in sd:
        x = _conv(x, sd, p + "shortcut.", d)
    elif p + "shortcut.conv.weight" in sd:
        x = F.avg_pool2d(_conv(x, sd, p + "shortcut.conv."), 2)
    return x + h


def _rcu(x: torch.Tensor, sd: SD, p: str, blocks: int) -> torch.Tensor:
    for i in range(1, blocks + 1):
        r = x
        for j in (1, 2):
            x = _conv(F.elu(x), sd, f"{p}{i}_{j}_conv.")
        x = x + r
    return x


def _refine(xs: list[torch.Tensor], sd: SD, p: str, end: bool) -> torch.Tensor:
    hs = [_rcu(x, sd, f"{p}adapt_convs.{i}.", 2) for i, x in enumerate(xs)]
    shape = xs[0].shape[2:]
    h = hs[0] if len(hs) == 1 else sum(F.interpolate(_conv(h, sd, f"{p}msf.convs.{i}."), size=shape,
                                                     mode="bilinear", align_corners=True) for i, h in enumerate(hs))
    h = F.elu(h)
    path = h
    for i in (0, 1):
        path = _conv(F.max_pool2d(path, 5, 1, 2), sd, f"{p}crp.convs.{i}.")
        h = path + h
    return _rcu(h, sd, p + "output_convs.", 3 if end else 1)


def _deepest(x: torch.Tensor, y: torch.Tensor, sd: SD) -> torch.Tensor:
    h = _conv(2 * x - 1, sd, "begin_conv.")
    layers = {}
    for name, down, dil in [("res1", False, None), ("res2", True, None), ("res3", True, None),
                            ("res31", True, None), ("res4", True, 2), ("res5", True, 4)]:
        h = _res(_res(h, sd, f"{name}.0.", down, dil), sd, f"{name}.1.", False, dil)
        layers[name] = h
    ref = _refine([layers["res5"]], sd, "refine1.", False)
    for r, s in [("refine2", "res4"), ("refine31", "res31"), ("refine3", "res3"), ("refine4", "res2")]:
        ref = _refine([layers[s], ref], sd, r + ".", False)
    ref = _refine([layers["res1"], ref], sd, "refine5.", True)
    out = _conv(F.elu(_inorm(ref, sd, "normalizer.")), sd, "end_conv.")
    return out / sd["sigmas"][y].view(-1, 1, 1, 1)


def test_ncsnv2_deepest_equals_the_rederivation_and_maps_levels(tmp_path: Path) -> None:
    _, ema = _save(tmp_path / "checkpoint_100000.pth")
    prior = ncsnv2.load(tmp_path / "checkpoint_100000.pth", **TINY)
    net = prior.model.net.net
    sd = {k: v.detach() for k, v in ema.state_dict().items()}
    x = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 2, 5])
    with torch.no_grad():
        want, got = _deepest(x, y, sd), net(x, y)
        assert float((got - want).abs().max() / want.abs().max()) < 1e-5
        # the prior's step t is the network's level 5 - t: eps = -sigma_t * score = -(raw output) for every t
        raw = want * sd["sigmas"][y].view(-1, 1, 1, 1)  # the network is not noise-conditional
        for t in range(6):
            s = float(sd["sigmas"][5 - t])
            eps = prior.model(x / (1 + s**2) ** 0.5, torch.full((3,), t))
            torch.testing.assert_close(eps, -raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
    assert prior.model.sigmas.tolist() == pytest.approx(sd["sigmas"].flip(0).tolist())


@pytest.mark.parametrize("model", ["NCSNv2", "NCSNv2Deeper"])
def test_the_smaller_ncsnv2_models_keep_the_shape(tmp_path: Path, model: str) -> None:
    _save(tmp_path / "ck.pth", model)
    prior = ncsnv2.load(tmp_path / "ck.pth", model=model, **TINY)
    assert prior.info["size_multiple"] == {"NCSNv2": 2, "NCSNv2Deeper": 4}[model]
    with torch.no_grad():
        assert prior.model(torch.randn(2, 2, 16, 16), torch.tensor([0, 5])).shape == (2, 2, 16, 16)


def test_the_states_list_loads_the_ema_and_the_card(tmp_path: Path) -> None:
    model, ema = _save(tmp_path / "ck.pth")
    prior = ncsnv2.load(tmp_path / "ck.pth", **TINY)
    net = prior.model.net.net
    assert not net.training
    for (name, p), q in zip(net.named_parameters(), ema.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    info = prior.info
    assert info["format"] == "ncsnv2" and info["p99"] == 1.0 and info["size_multiple"] == 8 and info["ema"]
    assert info["sigmas"] == pytest.approx([0.01, 50.0, 6]) and info["schedule_kind"] == "ve"
    abar = prior.schedule.alphas_cumprod
    assert float(1 / abar[0] - 1) == pytest.approx(0.01**2, rel=1e-5) and len(abar) == 6
    plain = ncsnv2.load(tmp_path / "ck.pth", ema=False, **TINY)
    for p, q in zip(plain.model.net.net.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_mismatching_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ck.pth"
    _save(path)
    states = torch.load(path, weights_only=True)
    shadow = dict(states[-1], **{"begin_conv.weight": torch.zeros(1, 2, 3, 3)})
    torch.save([*states[:-1], shadow], tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"EMA shadow .*'begin_conv.weight' has shape \(1, 2, 3, 3\) in the file "
                                         r"but \(4, 2, 3, 3\) in the model") as err:
        ncsnv2.load(tmp_path / "shape.pth", **TINY)
    assert "\n" not in str(err.value)
    model = {k: v for k, v in states[0].items() if k != "module.refine31.crp.convs.1.weight"}
    torch.save([model, *states[1:]], tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"'refine31.crp.convs.1.weight' \(shape \(8, 8, 3, 3\) in the model\) "
                                         r"is missing"):
        ncsnv2.load(tmp_path / "missing.pth", **TINY)
    with pytest.raises(ValueError, match=r"'sigmas' has shape \(6,\) in the file but \(7,\) in the model"):
        ncsnv2.load(path, **dict(TINY, num_classes=7))
    with pytest.raises(ValueError, match=r"is not in the model"):  # Deepest's res31 is not in NCSNv2Deeper
        ncsnv2.load(path, model="NCSNv2Deeper", **TINY)
    torch.save(5, tmp_path / "int.pth")
    with pytest.raises(ValueError, match="is the list"):
        ncsnv2.load(tmp_path / "int.pth", **TINY)


@pytest.mark.parametrize("method", ["langevin", "dds"])
def test_an_ncsnv2_prior_reconstructs_a_multicoil_problem(tmp_path: Path, method: str) -> None:
    _save(tmp_path / "ck.pth")
    prior = load_prior(tmp_path / "ck.pth", format="ncsnv2", **TINY)  # through the front end
    size = (16, 16)
    y, op = multicoil_problem(size)
    r = reconstruct_prior(y, op, prior, method=method, steps=3, samples=1, generator=Generator(0))
    assert tuple(r.mean.shape) == (1, *size) and bool(torch.isfinite(r.mean).all())
