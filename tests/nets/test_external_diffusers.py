"""diffusers priors: tiny random UNet2DModel / UNet2DConditionModel folders written by save_pretrained
load through diffusers_folder.load, run as the peer runs (2 channels as they are, 1 channel on the real
and imaginary parts), carry the scheduler's exact schedule and prediction type, refuse checkpoints that
do not fit with one line, and reconstruct."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from _adm_testing import max_error, randomize  # noqa: E402
from _hub_testing import check_schedule, corrupt, expect_one_line, reconstructs  # noqa: E402

from mridpm.nets.external import diffusers_folder  # noqa: E402
from mridpm.nets.priors import load_prior  # noqa: E402

BLOCKS = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4, "sample_size": 16}


def _unet(channels: int = 2, out: int | None = None) -> torch.nn.Module:
    net = diffusers.UNet2DModel(in_channels=channels, out_channels=out or channels, attention_head_dim=4,
                                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                up_block_types=("AttnUpBlock2D", "UpBlock2D"), **BLOCKS)
    return randomize(net, seed=channels)


def _pipeline(tmp_path, unet: torch.nn.Module, **scheduler: object):
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/)."""
    path = tmp_path / "pipe"
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**scheduler)).save_pretrained(path)
    return path


def _xt(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 2, 16, 16, generator=g), torch.tensor([999, 17][:batch])


def test_a_two_channel_pipeline_runs_as_the_peer(tmp_path) -> None:
    unet = _unet(2)
    prior = load_prior(_pipeline(tmp_path, unet), format="diffusers")
    x, t = _xt()
    with torch.no_grad():
        got, want = prior.model(x, t), unet(x, t).sample
    err = max_error(got, want)
    print(f"diffusers UNet2DModel (2 channels): max error {err:.2e}")
    assert err < 1e-5 and float(want.abs().max()) > 0.1
    info = prior.info
    assert info["format"] == "diffusers" and info["image_size"] == [16, 16] and info["size_multiple"] == 2
    assert info["data_range"] == [-1.0, 1.0] and info["p99"] == 1.0 and info["schedule_kind"] == "vp"
    reconstructs(prior)


def test_a_one_channel_model_runs_on_the_real_and_imaginary_parts(tmp_path) -> None:
    """A bare model folder with its scheduler in a sibling scheduler/ folder."""
    unet = _unet(1)
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDIMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "scheduler")
    prior = diffusers_folder.load(tmp_path / "unet")
    x, t = _xt()
    with torch.no_grad():
        got = prior.model(x, t)
        want = torch.cat([unet(x[:, :1], t).sample, unet(x[:, 1:], t).sample], 1)
    err = max_error(got, want)
    print(f"diffusers UNet2DModel (1 channel, real and imaginary): max error {err:.2e}")
    assert err < 1e-5 and prior.prediction == "v"
    reconstructs(prior)


def test_a_learned_variance_head_is_cut(tmp_path) -> None:
    unet = _unet(2, out=4)
    prior = diffusers_folder.load(_pipeline(tmp_path, unet, variance_type="learned_range"))
    x, t = _xt()
    with torch.no_grad():
        assert max_error(prior.model(x, t), unet(x, t).sample[:, :2]) < 1e-5
    expect_one_line(lambda: diffusers_folder.load(_pipeline(tmp_path / "b", unet)), "is not learned")


def test_a_conditional_unet_takes_cond_and_needs_it(tmp_path) -> None:
    unet = randomize(diffusers.UNet2DConditionModel(
        in_channels=2, out_channels=2, cross_attention_dim=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **BLOCKS))
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    expect_one_line(lambda: diffusers_folder.load(tmp_path / "unet"), "needs its encoder_hidden_states")
    cond = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))
    prior = diffusers_folder.load(tmp_path / "unet", cond=cond)
    x, t = _xt()
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=cond.expand(2, 3, 8)).sample
        assert max_error(prior.model(x, t), want) < 1e-5


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
def test_the_schedule_is_the_schedulers(tmp_path, name: str, cls: str) -> None:
    config = {"num_train_timesteps": 500, "beta_schedule": name, "beta_start": 0.00085, "beta_end": 0.012}
    if cls != "DDPMScheduler" and name == "sigmoid":
        pytest.skip(f"diffusers' {cls} has no sigmoid schedule")
    peer = getattr(diffusers, cls)
    peer(**config).save_pretrained(tmp_path / "scheduler")
    _unet(2).save_pretrained(tmp_path / "unet")
    prior = diffusers_folder.load(tmp_path / "unet")
    assert prior.schedule.num_train_timesteps == 500
    check_schedule(prior.schedule.alphas_cumprod, lambda: peer(**config))


def test_trained_betas_and_a_scheduler_option(tmp_path) -> None:
    betas = torch.linspace(1e-3, 0.05, 40, dtype=torch.float64)
    _unet(2).save_pretrained(tmp_path / "unet")
    prior = diffusers_folder.load(tmp_path / "unet", scheduler={"trained_betas": betas.tolist(),
                                                                "num_train_timesteps": 40})
    torch.testing.assert_close(prior.schedule.betas, betas, rtol=0, atol=0)


@pytest.mark.parametrize(("theirs", "ours"), [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")])
def test_prediction_types(tmp_path, theirs: str, ours: str) -> None:
    assert diffusers_folder.load(_pipeline(tmp_path, _unet(2), prediction_type=theirs)).prediction == ours


def test_refusals(tmp_path) -> None:
    """Zero terminal SNR, a variance-exploding score model, flow matching, no scheduler, an unknown folder."""
    _unet(2).save_pretrained(tmp_path / "unet")
    expect_one_line(lambda: diffusers_folder.load(tmp_path / "unet"), "no scheduler config")
    expect_one_line(lambda: diffusers_folder.load(tmp_path / "unet", scheduler={"rescale_betas_zero_snr": True}),
                    "zero-terminal-SNR")
    expect_one_line(lambda: diffusers_folder.load(tmp_path / "unet", scheduler={"_class_name": "ScoreSdeVeScheduler"}),
                    "format='score-sde'")
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    expect_one_line(lambda: diffusers_folder.load(tmp_path / "unet", scheduler=flow), "not a scheduler of the DDPM")
    expect_one_line(lambda: diffusers_folder.load(tmp_path), "neither a diffusers pipeline folder")


@pytest.mark.parametrize("how", ["shape", "missing"])
def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    path = _pipeline(tmp_path, _unet(2))
    file = path / "unet" / "diffusion_pytorch_model.safetensors"
    state, text = corrupt(load_file(str(file)), how)
    save_file(state, str(file))
    expect_one_line(lambda: diffusers_folder.load(path), text)


def test_bin_weights_load_only_as_plain_tensors(tmp_path) -> None:
    """safe_serialization=False writes a torch .bin: read with weights_only=True; a pickle of any other
    object is refused without running it."""
    unet = _unet(2)
    path = tmp_path / "pipe"
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(
        path, safe_serialization=False)
    x, t = _xt()
    with torch.no_grad():
        assert max_error(diffusers_folder.load(path).model(x, t), unet(x, t).sample) < 1e-5
    torch.save({"conv_in.weight": torch.nn.Identity()}, path / "unet" / "diffusion_pytorch_model.bin")
    expect_one_line(lambda: diffusers_folder.load(path), "not a weights-only torch checkpoint")
