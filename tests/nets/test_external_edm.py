"""EDM checkpoints: EDMPrecond around DhariwalUNet equals deepinv's EDMPrecond + ADMUNet, SongUNet
(DDPM++ and NCSN++) equals deepinv's NCSNpp, with the same random weights; an EDMPrecond state dict
saved as EDM / InverseBench save it loads; the VP-scale prior is the exact conversion."""

from __future__ import annotations

import math

import pytest
import torch
from _adm_testing import max_error, randomize
from _deepinv import deepinv_model
from torch import nn

from mridpm.nets.external import edm
from mridpm.nets.priors import load_prior

TINY = {"img_resolution": 16, "model_channels": 32, "channel_mult": [1, 2], "attn_resolutions": [8], "num_blocks": 1}
# deepinv's port norms with torch's GroupNorm(32 groups) where EDM takes min(32, channels // 4): the two
# agree from 128 channels on, so the peers are compared at 128 channels
PEER = {**TINY, "model_channels": 128, "channel_mult": [1, 1]}


class _Unet(nn.Module):
    """deepinv's raw network F(x, c_noise) in the form deepinv's EDMPrecond calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.forward_unet(x, noise, class_labels)


def _peer_adm() -> nn.Module:
    net = deepinv_model("guided_diffusion").ADMUNet(in_channels=2, out_channels=2, pretrained=None, label_dim=0,
                                                    **PEER)
    return randomize(net, seed=1)


def test_edm_precond_with_dhariwal_unet_equals_deepinv(tmp_path) -> None:
    peer_net = _peer_adm()
    peer = deepinv_model("precond").EDMPrecond(_Unet(peer_net), pixel_std=0.5)
    state = {f"model.{k}": v for k, v in peer_net.state_dict().items()}  # EDMPrecond.state_dict()
    torch.save({"net": state, "ema": state, "step": torch.tensor(5)}, tmp_path / "ckpt_50000.pt")  # InverseBench
    prior = load_prior(tmp_path / "ckpt_50000.pt", format="edm", config=PEER)
    precond = prior.model.net
    assert list(precond.state_dict()) == list(state)
    x = torch.randn(3, 2, 16, 32, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.002, 1.0, 80.0])
    with torch.no_grad():
        want, got = peer(x, sigma), precond(x, sigma)
    err = max_error(got, want)
    print(f"edm DhariwalUNet vs deepinv EDMPrecond+ADMUNet: max error {err:.2e}")
    assert err < 1e-5
    # the VP-scale eps-model at step t is D on the sigma scale: eps = (x_s - D(x_s)) / sigma_t
    t = torch.tensor([0, 500, 999])
    sig = edm.edm_sigmas(0.002, 80.0, 1000)[t]
    xs = x * torch.sqrt(1 + sig**2).float().view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = prior.model(x, t)
        d = precond(xs, sig.float())
    torch.testing.assert_close(eps, (xs - d) / sig.float().view(-1, 1, 1, 1), rtol=1e-5, atol=1e-5)
    abar = prior.schedule.alphas_cumprod
    assert math.isclose(float(abar[-1]), 1 / (1 + 80.0**2), rel_tol=1e-12) and prior.prediction == "eps"
    assert prior.info["schedule_kind"] == "edm" and prior.info["size_multiple"] == 2


@pytest.mark.parametrize("kind", ["ddpm", "ncsn"])
def test_song_unet_equals_deepinv_ncsnpp(kind: str, tmp_path) -> None:
    torch.manual_seed(0)  # NCSN++'s Fourier frequencies are a buffer drawn at construction
    peer = deepinv_model("ncsnpp").NCSNpp(model_type=kind, in_channels=2, out_channels=2, augment_dim=0,
                                          pretrained=None, **PEER)
    randomize(peer, seed=2)
    song = {"ddpm": {}, "ncsn": {"embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual",
                                 "resample_filter": [1, 3, 3, 1]}}[kind]
    torch.save(peer.state_dict(), tmp_path / "net.pt")  # the bare network's state dict loads too
    prior = load_prior(tmp_path / "net.pt", format="edm", config=PEER, model_type="SongUNet", **song)
    x = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(3))
    noise = torch.tensor([-1.5, 0.7])
    with torch.no_grad():
        want, got = peer.forward_unet(x, noise), prior.model.net.model(x, noise)
    err = max_error(got, want)
    print(f"edm SongUNet ({kind}) vs deepinv NCSNpp: max error {err:.2e}")
    assert err < 1e-5


def test_pickles_and_misfits_are_refused_in_one_line(tmp_path) -> None:
    (tmp_path / "network-snapshot.pkl").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"torch.save\(net.state_dict\(\)"):
        load_prior(tmp_path / "network-snapshot.pkl", format="edm")
    state = {f"model.{k}": v for k, v in _peer_adm().state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    misfit = r"'model\.map_layer0\.weight' has shape \(512, 128\) .* but \(256, 64\)"
    with pytest.raises(ValueError, match=misfit) as err:
        load_prior(tmp_path / "m.pt", format="edm", config=PEER, model_channels=64)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        load_prior(tmp_path / "m.pt", format="edm", config=PEER, sigma_min=1.0, sigma_max=0.5)
