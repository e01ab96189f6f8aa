"""The drop-in schedulers against diffusers' and MONAI's own, step by step and in their loops."""

import pytest
import torch

import mridpm
from mridpm import compat

diffusers = pytest.importorskip("diffusers")
monai_schedulers = pytest.importorskip("monai.networks.schedulers")

SHAPE = (2, 3, 9, 7)


def _float64(theirs, ours):
    """The peer with our float64 schedule in place of its float32 one, so the two differ only in how
    they round the data. (A float32 cumprod is off by about 1e-7 * t relative; in 1 - abar near t = 0
    that is up to 1e-3: see PITFALLS. test_betas_match_the_peers checks the schedules themselves.)"""
    betas, abar = ours.schedule.betas, ours.schedule.alphas_cumprod
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = betas, 1 - betas, abar
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(theirs, "final_alpha_cumprod"):
        theirs.final_alpha_cumprod = torch.tensor(ours.final_alpha_cumprod, dtype=torch.float64)
    if hasattr(theirs, "lambda_t"):  # DPM-Solver keeps alpha_t, sigma_t and log-SNR tables too
        theirs.alpha_t, theirs.sigma_t = abar.sqrt(), (1 - abar).sqrt()
        theirs.lambda_t = theirs.alpha_t.log() - theirs.sigma_t.log()
    return theirs


def _compare_steps(ours, theirs, steps, step_kwargs=None, skip=lambda i, ts: False):
    """Same input, model output and noise at every timestep; outputs within float32 tolerance."""
    theirs = _float64(theirs, ours)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    ts = theirs.timesteps.tolist()
    compared = 0
    for i, t in enumerate(theirs.timesteps):
        x, out = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(i), **(step_kwargs or {}))
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(i), **(step_kwargs or {}))
        if skip(i, ts):
            continue
        prev_b = b[0] if isinstance(b, tuple) else b.prev_sample
        x0_b = b[1] if isinstance(b, tuple) else getattr(b, "pred_original_sample", None)
        # float32 x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) loses digits as 1 / sqrt(abar) grows:
        # the peers compute in float32, we in float64, so allow their rounding, amplified
        atol = 1e-5 * max(1.0, ours.schedule.alpha_bar(int(t)) ** -0.5)
        torch.testing.assert_close(a.prev_sample, prev_b, rtol=1e-5, atol=atol)
        if x0_b is not None:
            torch.testing.assert_close(a.pred_original_sample, x0_b, rtol=1e-5, atol=atol)
        compared += 1
    assert compared > 0


DDIM_CONFIGS = [
    ({}, {}),
    ({}, {"eta": 0.7}),
    ({"prediction_type": "v_prediction", "clip_sample": False}, {"eta": 1.0}),
    ({"prediction_type": "sample", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, {}),
    ({"thresholding": True, "sample_max_value": 2.0, "prediction_type": "v_prediction"}, {}),
    ({"beta_schedule": "squaredcos_cap_v2", "set_alpha_to_one": False, "clip_sample": False}, {"eta": 0.3}),
    ({"steps_offset": 1}, {"eta": 0.5, "use_clipped_model_output": True}),
]


@pytest.mark.parametrize(("config", "step_kwargs"), DDIM_CONFIGS, ids=[str(i) for i in range(len(DDIM_CONFIGS))])
def test_ddim_matches_diffusers(config, step_kwargs):
    _compare_steps(compat.DDIMScheduler(**config), diffusers.DDIMScheduler(**config), 50, step_kwargs)


DDPM_CONFIGS = [
    ({}, 1000),
    ({"variance_type": "fixed_large", "clip_sample": False}, 1000),
    ({"prediction_type": "v_prediction", "thresholding": True}, 250),
    ({"beta_schedule": "sigmoid", "timestep_spacing": "trailing", "clip_sample": False}, 40),
    ({"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "prediction_type": "sample"}, 33),
]


@pytest.mark.parametrize(("config", "steps"), DDPM_CONFIGS, ids=[str(i) for i in range(len(DDPM_CONFIGS))])
def test_ddpm_matches_diffusers(config, steps):
    _compare_steps(compat.DDPMScheduler(**config), diffusers.DDPMScheduler(**config), steps)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_betas_match_the_peers(name):
    ours = compat.DDPMScheduler(beta_schedule=name, beta_start=0.00085, beta_end=0.012)
    theirs = diffusers.DDPMScheduler(beta_schedule=name, beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(ours.schedule.betas.float(), theirs.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod.double(), rtol=2e-4, atol=0)


DPM_CONFIGS = [
    ({}, 20),
    ({"solver_order": 3}, 25),
    ({"solver_order": 3}, 10),
    ({"solver_order": 1, "timestep_spacing": "leading"}, 20),
    ({"prediction_type": "v_prediction", "thresholding": True, "sample_max_value": 2.0}, 12),
    ({"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": False}, 20),
    ({"prediction_type": "sample", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, 30),
    ({"use_karras_sigmas": True}, 20),
    ({"use_karras_sigmas": True, "solver_order": 3, "beta_schedule": "squaredcos_cap_v2"}, 15),
    ({"use_karras_sigmas": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
      "final_sigmas_type": "sigma_min"}, 50),  # rounding repeats low timesteps
]


@pytest.mark.parametrize(("config", "steps"), DPM_CONFIGS, ids=[str(i) for i in range(len(DPM_CONFIGS))])
def test_dpm_solver_multistep_matches_diffusers(config, steps):
    _compare_steps(compat.DPMSolverMultistepScheduler(**config), diffusers.DPMSolverMultistepScheduler(**config),
                   steps)


EULER_CONFIGS = [
    ({}, 20, {}),
    ({"prediction_type": "v_prediction"}, 15, {}),
    ({"timestep_spacing": "leading"}, 25, {}),
    ({"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}, 20, {}),
    ({}, 20, {"s_churn": 5.0, "s_tmin": 0.1, "s_tmax": 10.0}),
    ({"prediction_type": "sample"}, 10, {}),
    ({"use_karras_sigmas": True}, 20, {}),
    ({"use_karras_sigmas": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 12, {}),
]


@pytest.mark.parametrize(("config", "steps", "step_kwargs"), EULER_CONFIGS,
                         ids=[str(i) for i in range(len(EULER_CONFIGS))])
def test_euler_matches_diffusers(config, steps, step_kwargs):
    _compare_steps(compat.EulerDiscreteScheduler(**config), diffusers.EulerDiscreteScheduler(**config), steps,
                   step_kwargs)


def test_euler_loop_with_input_scaling_matches_diffusers():
    """The diffusers loop: noise * init_noise_sigma, then scale_model_input, model, step."""
    def model(x, t):
        return 0.3 * x + 0.001 * t

    mine = compat.EulerDiscreteScheduler(timestep_spacing="leading")
    finals = []
    for scheduler in (mine, _float64(diffusers.EulerDiscreteScheduler(timestep_spacing="leading"), mine)):
        scheduler.set_timesteps(12)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        finals.append(x)
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-4, atol=1e-4)


def test_ddim_with_other_spacings_follows_the_timestep_list():
    """diffusers' DDIM takes t - T // n as the previous step; where that leaves its own list we differ."""
    def disagree(i, ts):
        return i + 1 < len(ts) and ts[i] - 1000 // len(ts) != ts[i + 1]

    _compare_steps(compat.DDIMScheduler(timestep_spacing="trailing"),
                   diffusers.DDIMScheduler(timestep_spacing="trailing"), 30, skip=disagree)


def test_monai_ddpm_matches_with_every_step():
    _compare_steps(compat.MonaiDDPMScheduler(), monai_schedulers.DDPMScheduler(), 1000)
    _compare_steps(compat.MonaiDDPMScheduler(prediction_type="v_prediction", clip_sample=False),
                   monai_schedulers.DDPMScheduler(prediction_type="v_prediction", clip_sample=False), 1000)


def test_monai_ddim_matches_where_its_previous_step_is_on_its_list():
    def disagree(i, ts):
        return i + 1 < len(ts) and ts[i] - 1000 // len(ts) != ts[i + 1]

    _compare_steps(compat.MonaiDDIMScheduler(), monai_schedulers.DDIMScheduler(), 50, {"eta": 0.5}, skip=disagree)
    _compare_steps(compat.MonaiDDIMScheduler(schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195),
                   monai_schedulers.DDIMScheduler(schedule="scaled_linear_beta", beta_start=0.0015,
                                                  beta_end=0.0195), 1000)


def test_step_output_serves_both_interfaces_and_config_round_trips():
    s = compat.DDIMScheduler(num_train_timesteps=500, prediction_type="v_prediction")
    assert s.config.num_train_timesteps == 500 and s.config["prediction_type"] == "v_prediction"
    s2 = compat.DDIMScheduler.from_config({**s.config, "_class_name": "DDIMScheduler", "_diffusers_version": "0"})
    assert s2.config == s.config
    theirs = diffusers.DDIMScheduler(beta_schedule="scaled_linear")
    ours = compat.DDIMScheduler.from_config(theirs.config)
    assert ours.config.beta_schedule == "scaled_linear"
    ours.set_timesteps(10)
    x = torch.randn(SHAPE)
    result = ours.step(torch.randn(SHAPE), ours.timesteps[0], x)
    prev, x0 = result
    assert result.prev_sample is prev and result[0] is prev and x0.shape == x.shape
    assert ours.scale_model_input(x, 3) is x


def test_add_noise_matches_diffusers():
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([5, 900])
    ours = compat.DDPMScheduler(beta_schedule="scaled_linear").add_noise(x0, noise, t)
    theirs = diffusers.DDPMScheduler(beta_schedule="scaled_linear").add_noise(x0, noise, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_mridpm_generator_makes_the_noise_in_the_kernel():
    s = compat.DDPMScheduler()
    s.set_timesteps(10)
    x, out = torch.randn(SHAPE), torch.randn(SHAPE)
    a = s.step(out, s.timesteps[0], x, generator=mridpm.Generator(4)).prev_sample
    s.set_timesteps(10)
    b = s.step(out, s.timesteps[0], x, generator=mridpm.Generator(4)).prev_sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    s.set_timesteps(10)
    c = s.step(out, s.timesteps[0], x, generator=mridpm.Generator(5)).prev_sample
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("ours", "theirs", "pipeline", "kwargs"), [
    (compat.DDIMScheduler, diffusers.DDIMScheduler, diffusers.DDIMPipeline, {"eta": 0.0}),
    (compat.DDPMScheduler, diffusers.DDPMScheduler, diffusers.DDPMPipeline, {}),
    (compat.DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler, diffusers.DDPMPipeline, {}),
], ids=["ddim", "ddpm", "dpm-solver++"])
def test_diffusers_pipeline_runs_with_our_scheduler(ours, theirs, pipeline, kwargs):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    mine = ours()
    images = {}
    for name, scheduler in (("ours", mine), ("theirs", _float64(theirs(), mine))):
        pipe = pipeline(unet=unet, scheduler=theirs())
        pipe.scheduler = scheduler  # DDIMPipeline converts what it is given; assign to really swap
        assert pipe.scheduler is scheduler
        pipe.set_progress_bar_config(disable=True)
        images[name] = pipe(batch_size=2, num_inference_steps=10, output_type="np",
                            generator=torch.Generator().manual_seed(1), **kwargs).images
    assert abs(images["ours"] - images["theirs"]).max() < 1e-4


def test_monai_inferer_runs_with_our_scheduler():
    inferers = pytest.importorskip("monai.inferers")

    def model(x, timesteps, context=None):
        return 0.1 * x + timesteps.float().reshape(-1, 1, 1, 1) / 1000

    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    out = {}
    mine = compat.MonaiDDPMScheduler()
    for name, scheduler in (("ours", mine), ("theirs", _float64(monai_schedulers.DDPMScheduler(), mine))):
        scheduler.set_timesteps(1000)
        torch.manual_seed(3)  # both draw their noise from the global generator
        out[name] = inferers.DiffusionInferer(scheduler).sample(noise, model, scheduler=scheduler, verbose=False)
    torch.testing.assert_close(out["ours"], out["theirs"], rtol=1e-4, atol=1e-4)


BAD = [
    (ValueError, "beta_schedule", lambda: compat.DDPMScheduler(beta_schedule="quadratic")),
    (ValueError, "prediction_type", lambda: compat.DDIMScheduler(prediction_type="noise")),
    (ValueError, "variance_type", lambda: compat.DDPMScheduler(variance_type="learned")),
    (ValueError, "schedule", lambda: compat.MonaiDDPMScheduler(schedule="cosine_beta")),
    (ValueError, "training steps", lambda: compat.DDIMScheduler().set_timesteps(2000)),
    (ValueError, "rescale_betas_zero_snr", lambda: compat.DDIMScheduler(rescale_betas_zero_snr=True)),
    (ValueError, "dpmsolver", lambda: compat.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")),
    (ValueError, "solver_order", lambda: compat.DPMSolverMultistepScheduler(solver_order=4)),
    (ValueError, "final_sigmas_type", lambda: compat.DPMSolverMultistepScheduler(final_sigmas_type="one")),
    (ValueError, "final_sigmas_type", lambda: compat.EulerDiscreteScheduler(final_sigmas_type="one")),
    (ValueError, "training steps", lambda: compat.EulerDiscreteScheduler().set_timesteps(0)),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[b[1] for b in BAD])
def test_bad_configs(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_configs_with_unsupported_options_are_refused():
    for theirs, ours in ((diffusers.EulerDiscreteScheduler(use_exponential_sigmas=True),
                          compat.EulerDiscreteScheduler),
                         (diffusers.DDIMScheduler(rescale_betas_zero_snr=True), compat.DDIMScheduler),
                         (diffusers.DPMSolverMultistepScheduler(euler_at_final=True),
                          compat.DPMSolverMultistepScheduler)):
        with pytest.raises(ValueError, match="not supported"):
            ours.from_config(theirs.config)
    compat.EulerDiscreteScheduler.from_config(diffusers.EulerDiscreteScheduler().config)  # defaults pass


def test_unknown_timestep_is_reported():
    s = compat.DDIMScheduler()
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not among"):
        s.step(torch.randn(SHAPE), 7, torch.randn(SHAPE))
