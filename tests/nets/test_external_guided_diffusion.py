"""guided-diffusion (DDS) checkpoints: the UNet equals deepinv's DiffUNet (its port of the original)
with the same random weights, a state dict saved as the original saves it loads with its key names,
and a checkpoint that does not fit is refused with one line."""

from __future__ import annotations

import pytest
import torch
from _adm_testing import max_error, randomize
from _deepinv import deepinv_model

from mridpm.nets.external import _adm_unet as adm
from mridpm.nets.external import guided_diffusion as gd
from mridpm.nets.priors import load_prior

# deepinv DiffUNet(large_model=False) is this create_model config (at image_size 256)
DEEPINV_SMALL = {"image_size": 256, "num_channels": 128, "num_res_blocks": 1, "attention_resolutions": "16"}


@pytest.fixture(scope="module")
def peer() -> torch.nn.Module:
    net = deepinv_model("diffunet").DiffUNet(in_channels=2, out_channels=4, pretrained=None)
    return randomize(net, seed=1)


def _original_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """net's parameters as guided-diffusion's torch.save(model.state_dict()) holds them (deepinv adds
    two schedule buffers after loading the original strictly)."""
    return {k: v for k, v in net.state_dict().items() if "alphas_cumprod" not in k}


def test_the_unet_equals_deepinv_diffunet(peer: torch.nn.Module, tmp_path) -> None:
    path = tmp_path / "fastmri_knee_320_complex_1m.pt"
    torch.save(_original_state(peer), path)
    prior = load_prior(path, format="guided-diffusion", **DEEPINV_SMALL)
    assert list(prior.model.net.state_dict()) == list(_original_state(peer))  # same names, same order
    x = torch.randn(2, 2, 32, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 17])
    with torch.no_grad():
        want = peer.forward_diffusion(x, t)[:, :2]
        got = prior.model(x, t)
    err = max_error(got, want)
    print(f"guided-diffusion vs deepinv DiffUNet: max error {err:.2e}")
    assert err < 1e-5 and float(want.abs().max()) > 0.1
    assert prior.prediction == "eps" and prior.info["size_multiple"] == 32
    abar = prior.schedule.alphas_cumprod
    torch.testing.assert_close(abar, torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0))


@pytest.mark.parametrize("kind", ["plain", "scale-shift", "down", "up", "skip-conv"])
def test_each_block_equals_deepinv(kind: str) -> None:
    """The branches DDS's config does not take (conv resampling, additive embedding, new attention
    order), block by block against deepinv's copies of the original's blocks."""
    ref = deepinv_model("diffunet")
    g = torch.Generator().manual_seed(2)
    x, emb = torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 16, generator=g)
    if kind in ("down", "up"):
        cls = "Downsample" if kind == "down" else "Upsample"
        mine, theirs = getattr(adm, cls)(32, True, 64), getattr(ref, cls)(32, True, out_channels=64)
        args: tuple[torch.Tensor, ...] = (x,)
    else:
        shift, out = kind == "scale-shift", 64 if kind == "skip-conv" else 32
        mine = adm.ResBlock(32, 16, out, use_conv=kind == "skip-conv", use_scale_shift_norm=shift)
        theirs = ref.ResBlock(32, 16, 0.0, out, use_conv=kind == "skip-conv", use_scale_shift_norm=shift)
        args = (x, emb)
    randomize(theirs, seed=3)
    mine.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(mine.eval()(*args), theirs(*args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_equals_deepinv(new_order: bool) -> None:
    theirs = randomize(deepinv_model("diffunet").AttentionBlock(64, 4, use_new_attention_order=new_order), seed=4)
    mine = adm.AttentionBlock(64, 4, new_order=new_order)
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 64, 4, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(mine(x), theirs(x), rtol=1e-5, atol=1e-5)


TINY = {"image_size": 16, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "8",
        "num_heads": 2, "num_head_channels": -1, "resblock_updown": False, "use_scale_shift_norm": False}


def _tiny_state(**over: object) -> dict[str, torch.Tensor]:
    cfg = dict(gd.DEFAULTS, **TINY, **over)
    return randomize(adm.UNetModel(**gd.model_kwargs(cfg))).state_dict()


def test_a_state_dict_in_the_original_layout_loads(tmp_path) -> None:
    """torch.save(model.state_dict()), also wrapped by DataParallel or under "ema", as in the wild."""
    state = _tiny_state()
    assert "input_blocks.2.0.op.weight" in state and "output_blocks.1.2.conv.weight" in state
    assert "input_blocks.3.1.qkv.weight" in state and "out.2.weight" in state  # attention at 8x8 (ds 2)
    for i, saved in enumerate([state, {f"module.{k}": v for k, v in state.items()}, {"ema": state}]):
        torch.save(saved, tmp_path / f"m{i}.pt")
        prior = load_prior(tmp_path / f"m{i}.pt", format="guided-diffusion", config=TINY)
        x = torch.randn(1, 2, 16, 16)
        assert prior.model(x, torch.tensor([5])).shape == x.shape
        assert prior.info["image_size"] == [16, 16] and prior.info["schedule_kind"] == "vp"
        assert not prior.model.training and next(prior.model.parameters()).dtype == torch.float32


def test_a_checkpoint_that_does_not_fit_is_refused_in_one_line(tmp_path) -> None:
    torch.save(_tiny_state(learn_sigma=False), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"'out\.2\.weight' has shape \(2, 32, 3, 3\).*\(4, 32, 3, 3\)") as err:
        load_prior(tmp_path / "m.pt", format="guided-diffusion", config=TINY)
    assert "\n" not in str(err.value)
    assert load_prior(tmp_path / "m.pt", format="guided-diffusion", config=TINY, learn_sigma=False) is not None
    with pytest.raises(ValueError, match="unknown guided-diffusion options \\['num_chanels'\\]"):
        load_prior(tmp_path / "m.pt", format="guided-diffusion", num_chanels=3)
    (tmp_path / "net.pkl").write_bytes(b"not read")
    with pytest.raises(ValueError, match="pickles are not loaded"):
        load_prior(tmp_path / "net.pkl", format="guided-diffusion")
