"""MONAI bundles: a tiny random DiffusionModelUNet saved in a bundle directory (configs/inference.json
with "@" references and "$" expressions, models/model.pt) loads through monai_bundle.load, runs as
the peer runs, carries the MONAI scheduler's exact schedule and prediction type, refuses checkpoints
that do not fit and expressions it would have to evaluate, reconstructs, and a latent bundle loads
for generation only."""

from __future__ import annotations

import json

import pytest
import torch

monai_nets = pytest.importorskip("monai.networks.nets")
monai_schedulers = pytest.importorskip("monai.networks.schedulers")
pytest.importorskip("einops")  # MONAI's attention blocks need it

from _adm_testing import max_error, randomize  # noqa: E402
from _hub_testing import check_schedule, corrupt, expect_one_line, reconstructs  # noqa: E402

from mridpm.dpm.discrete import sample_ddim  # noqa: E402
from mridpm.nets.external import monai_bundle  # noqa: E402
from mridpm.nets.priors import load_prior  # noqa: E402

UNET = {"channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1, "norm_num_groups": 4,
        "num_head_channels": 4}
AE = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8], "latent_channels": 3,
      "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False, False],
      "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}


def _unet(channels: int = 2) -> torch.nn.Module:
    """Random weights everywhere (MONAI zero-initialises the output conv)."""
    net = monai_nets.DiffusionModelUNet(spatial_dims=2, in_channels=channels, out_channels=channels, **UNET)
    return randomize(net, seed=channels)


def _bundle(tmp_path, net: torch.nn.Module, channels: int = 2, scheduler: dict | None = None, **extra: object):
    """A bundle directory as the model zoo lays it out, with expressions mridpm must not evaluate."""
    config = {
        "imports": ["$import torch"], "bundle_root": ".", "model_dir": "$@bundle_root + '/models'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "spatial_dims": 2, "image_channels": channels,
        "network_def": {"_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": "@spatial_dims",
                        "in_channels": "@image_channels", "out_channels": "@image_channels", **UNET},
        "network": "$@network_def.to(@device)",
        "noise_scheduler": scheduler or {"_target_": "monai.networks.schedulers.DDPMScheduler",
                                         "num_train_timesteps": 1000, "schedule": "linear_beta"},
        **extra,
    }
    (tmp_path / "configs").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(config))
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    return tmp_path


def _xt() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([999, 17])


def test_a_two_channel_bundle_runs_as_the_peer(tmp_path) -> None:
    net = _unet(2)
    prior = load_prior(_bundle(tmp_path, net), format="monai", image_size=[16, 16])
    x, t = _xt()
    with torch.no_grad():
        got, want = prior.model(x, t), net(x, timesteps=t)
    err = max_error(got, want)
    print(f"MONAI DiffusionModelUNet (2 channels): max error {err:.2e}")
    assert err < 1e-5 and float(want.abs().max()) > 0.1
    info = prior.info
    assert info["format"] == "monai" and info["image_size"] == [16, 16] and info["size_multiple"] == 2
    assert prior.prediction == "eps" and info["data_range"] == [-1.0, 1.0]
    reconstructs(prior)


def test_a_one_channel_bundle_runs_on_the_real_and_imaginary_parts(tmp_path) -> None:
    net = _unet(1)
    prior = monai_bundle.load(_bundle(tmp_path, net, channels=1))
    x, t = _xt()
    with torch.no_grad():
        got = prior.model(x, t)
        want = torch.cat([net(x[:, :1], timesteps=t), net(x[:, 1:], timesteps=t)], 1)
    err = max_error(got, want)
    print(f"MONAI DiffusionModelUNet (1 channel, real and imaginary): max error {err:.2e}")
    assert err < 1e-5
    reconstructs(prior)


SCHEDULES = [("linear_beta", {}), ("scaled_linear_beta", {"beta_start": 0.0015, "beta_end": 0.0195}),
             ("sigmoid_beta", {"beta_start": 1e-4, "beta_end": 0.03, "sig_range": 5.0}), ("cosine", {"s": 0.01})]


@pytest.mark.parametrize(("schedule", "args"), SCHEDULES, ids=[s for s, _ in SCHEDULES])
@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler"])
def test_the_schedule_is_the_schedulers(tmp_path, schedule: str, args: dict, cls: str) -> None:
    config = {"num_train_timesteps": 300, "schedule": schedule, **args}
    peer = getattr(monai_schedulers, cls)
    prior = monai_bundle.load(_bundle(tmp_path, _unet(2), scheduler={"_target_": cls, **config}))
    check_schedule(prior.schedule.alphas_cumprod, lambda: peer(**config))


def test_a_monai_generative_bundle(tmp_path) -> None:
    """MONAI Generative's names: generative.networks.*, num_channels, beta_schedule="scaled_linear"."""
    net = _unet(2)
    path = _bundle(tmp_path, net, scheduler={"_target_": "generative.networks.schedulers.DDIMScheduler",
                                             "beta_schedule": "scaled_linear", "beta_start": 0.0015,
                                             "beta_end": 0.0195, "prediction_type": "v_prediction"})
    config = json.loads((path / "configs" / "inference.json").read_text())
    unet = config["network_def"]
    unet["_target_"], unet["num_channels"], unet["use_flash_attention"] = \
        "generative.networks.nets.DiffusionModelUNet", unet.pop("channels"), True
    (path / "configs" / "inference.json").write_text(json.dumps(config))
    prior = monai_bundle.load(path)
    x, t = _xt()
    with torch.no_grad():
        assert max_error(prior.model(x, t), net(x, timesteps=t)) < 1e-5
    assert prior.prediction == "v"
    check_schedule(prior.schedule.alphas_cumprod, lambda: monai_schedulers.DDIMScheduler(
        schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195))


@pytest.mark.parametrize(("theirs", "ours"), [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")])
def test_prediction_types(tmp_path, theirs: str, ours: str) -> None:
    scheduler = {"_target_": "DDPMScheduler", "prediction_type": theirs}
    assert monai_bundle.load(_bundle(tmp_path, _unet(2), scheduler=scheduler)).prediction == ours


def test_other_schedulers_and_3d_networks_are_refused(tmp_path) -> None:
    flow = {"_target_": "monai.networks.schedulers.RectifiedFlowScheduler", "num_train_timesteps": 1000}
    path = _bundle(tmp_path, _unet(2), scheduler=flow)
    expect_one_line(lambda: monai_bundle.load(path), "the scheduler is 'RectifiedFlowScheduler'")
    network = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, **UNET}
    expect_one_line(lambda: monai_bundle.load(path, network=network), "3-dimensional")


def test_a_yaml_config_and_options(tmp_path) -> None:
    """A YAML bundle config; network and scheduler given as options with a safetensors weights file."""
    from safetensors.torch import save_file

    net = _unet(2)
    path = _bundle(tmp_path / "a", net)
    config = json.loads((path / "configs" / "inference.json").read_text())
    (path / "configs" / "inference.json").unlink()
    import yaml

    (path / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    x, t = _xt()
    with torch.no_grad():
        assert max_error(monai_bundle.load(path).model(x, t), net(x, timesteps=t)) < 1e-5
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    prior = monai_bundle.load(tmp_path, network={"spatial_dims": 2, "in_channels": 2, "out_channels": 2, **UNET},
                              scheduler={"schedule": "cosine"}, weights=tmp_path / "net.safetensors")
    with torch.no_grad():
        assert max_error(prior.model(x, t), net(x, timesteps=t)) < 1e-5


def test_expressions_are_never_evaluated(tmp_path) -> None:
    path = _bundle(tmp_path, _unet(2))
    config = json.loads((path / "configs" / "inference.json").read_text())
    config["network_def"]["in_channels"] = "$__import__('os').system('touch pwned') or 2"
    (path / "configs" / "inference.json").write_text(json.dumps(config))
    expect_one_line(lambda: monai_bundle.load(path), "which mridpm does not evaluate")
    assert not (tmp_path / "pwned").exists()
    config["network_def"]["in_channels"] = "@nowhere"
    (path / "configs" / "inference.json").write_text(json.dumps(config))
    expect_one_line(lambda: monai_bundle.load(path), "which it does not define")


@pytest.mark.parametrize("how", ["shape", "missing"])
def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path, how: str) -> None:
    net = _unet(2)
    path = _bundle(tmp_path, net)
    state, text = corrupt(net.state_dict(), how)
    torch.save(state, path / "models" / "model.pt")
    expect_one_line(lambda: monai_bundle.load(path), text)


def test_a_latent_bundle_generates_and_is_refused_for_reconstruction(tmp_path) -> None:
    net = _unet(3)
    ae = randomize(monai_nets.AutoencoderKL(**AE), seed=5)
    path = _bundle(tmp_path, net, channels=3, scale_factor=0.7,
                   autoencoder_def={"_target_": "monai.networks.nets.AutoencoderKL", **AE})
    torch.save(ae.state_dict(), path / "models" / "model_autoencoder.pt")
    expect_one_line(lambda: monai_bundle.load(path), "load it with latent=True")
    prior = monai_bundle.load(path, latent=True)
    assert prior.info["latent"] and prior.info["scale_factor"] == 0.7 and prior.info["data_range"] == [-1e9, 1e9]
    z, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([999, 17])
    with torch.no_grad():
        assert max_error(prior.model(z, t), net(z, timesteps=t)) < 1e-5
        sample = sample_ddim(prior.model, z[:1], prior.schedule, steps=3, prediction=prior.prediction)
        images = monai_bundle.decode(prior, sample)
        torch.testing.assert_close(images, ae.decode_stage_2_outputs(sample / 0.7))
    assert tuple(images.shape) == (1, 1, 16, 16) and bool(torch.isfinite(images).all())
