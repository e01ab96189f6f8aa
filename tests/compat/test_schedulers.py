"""The drop-in schedulers against diffusers' and MONAI's own, step by step and in their loops."""

import pytest
import torch
from peer_check import SHAPE, float64_tables, max_step_difference, relative, step_scale

import mridpm
from mridpm import compat

diffusers = pytest.importorskip("diffusers")
monai_schedulers = pytest.importorskip("monai.networks.schedulers")



def _float64(theirs, ours):
    """The peer with our float64 schedule in place of its float32 one (see peer_check)."""
    return float64_tables(theirs, ours)


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
    ({"num_train_timesteps": 100}, 100),  # every step (a short schedule keeps the test fast)
    ({"num_train_timesteps": 100, "variance_type": "fixed_large", "clip_sample": False}, 100),
    ({"prediction_type": "v_prediction", "thresholding": True}, 50),
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
    """diffusers' DDIM takes t - T // n as the previous step; with prev_timestep="list" we take the next
    entry of the list, and agree wherever the two are the same step."""
    def disagree(i, ts):
        return i + 1 < len(ts) and ts[i] - 1000 // len(ts) != ts[i + 1]

    _compare_steps(compat.DDIMScheduler(timestep_spacing="trailing", prev_timestep="list"),
                   diffusers.DDIMScheduler(timestep_spacing="trailing"), 30, skip=disagree)


def test_monai_ddpm_matches_with_every_step():
    _compare_steps(compat.MonaiDDPMScheduler(num_train_timesteps=100),
                   monai_schedulers.DDPMScheduler(num_train_timesteps=100), 100)
    _compare_steps(compat.MonaiDDPMScheduler(100, prediction_type="v_prediction", clip_sample=False),
                   monai_schedulers.DDPMScheduler(100, prediction_type="v_prediction", clip_sample=False), 100)


def test_monai_ddim_matches_where_its_previous_step_is_on_its_list():
    def disagree(i, ts):
        return i + 1 < len(ts) and ts[i] - 1000 // len(ts) != ts[i + 1]

    _compare_steps(compat.MonaiDDIMScheduler(prev_timestep="list"), monai_schedulers.DDIMScheduler(), 50,
                   {"eta": 0.5}, skip=disagree)
    _compare_steps(compat.MonaiDDIMScheduler(100, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195),
                   monai_schedulers.DDIMScheduler(100, schedule="scaled_linear_beta", beta_start=0.0015,
                                                  beta_end=0.0195), 100)


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
        scheduler.set_timesteps(100)  # MONAI's own rule with skipped steps (t to t - 1)
        torch.manual_seed(3)  # both draw their noise from the global generator
        out[name] = inferers.DiffusionInferer(scheduler).sample(noise, model, scheduler=scheduler, verbose=False)
    torch.testing.assert_close(out["ours"], out["theirs"], rtol=1e-4, atol=1e-4)


BAD = [
    (ValueError, "beta_schedule", lambda: compat.DDPMScheduler(beta_schedule="quadratic")),
    (ValueError, "prediction_type", lambda: compat.DDIMScheduler(prediction_type="noise")),
    (ValueError, "variance_type", lambda: compat.DDPMScheduler(variance_type="fixed_medium")),
    (ValueError, "schedule", lambda: compat.MonaiDDPMScheduler(schedule="cosine_beta")),
    (ValueError, "training steps", lambda: compat.DDIMScheduler().set_timesteps(2000)),
    (ValueError, "rescale_betas_zero_snr",
     lambda: compat.DDIMScheduler(num_train_timesteps=1, rescale_betas_zero_snr=True)),
    (ValueError, "dpmsolver", lambda: compat.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver")),
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
    dpm = diffusers.DPMSolverMultistepScheduler
    for theirs, ours in ((dpm(use_flow_sigmas=True), compat.DPMSolverMultistepScheduler),
                         (dpm(algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
                          compat.DPMSolverMultistepScheduler),
                         (dpm(use_dynamic_shifting=True), compat.DPMSolverMultistepScheduler)):
        with pytest.raises(ValueError, match="not supported"):
            ours.from_config(theirs.config)
    compat.EulerDiscreteScheduler.from_config(diffusers.EulerDiscreteScheduler().config)  # defaults pass


def test_unknown_timestep_is_reported():
    s = compat.DDIMScheduler(prev_timestep="list")
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not among"):
        s.step(torch.randn(SHAPE), 7, torch.randn(SHAPE))


# ---------------------------------------------------------------------------------------------------
# The issue's configs, the prev_timestep option, and where the peers crash or return NaN


def _loop(scheduler, steps, **step_kwargs):
    """A whole sampling loop with a toy model and a shared generator, as a pipeline runs it."""
    scheduler.set_timesteps(steps)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * getattr(scheduler, "init_noise_sigma", 1.0)
    g = torch.Generator().manual_seed(1)
    for t in scheduler.timesteps:
        out = 0.9 * scheduler.scale_model_input(x, t) + 0.001 * float(t)
        x = scheduler.step(out, t, x, generator=g, **step_kwargs)[0]
    return x


@pytest.mark.parametrize(("config", "steps"), [
    ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing",
      "prediction_type": "v_prediction"}, 37),
    ({"timestep_spacing": "linspace", "prediction_type": "sample", "clip_sample": True}, 23),
], ids=["trailing-v-37", "linspace-sample-clip-23"])
def test_issue_configs_give_diffusers_images_and_the_list_rule_differs(config, steps):
    """The issue's two DDIM configs: by default the same images as diffusers' (to float32 rounding even with
    diffusers' own float32 tables); prev_timestep="list" is the textbook rule and visibly another image."""
    theirs = _loop(diffusers.DDIMScheduler(**config), steps)
    assert relative(_loop(compat.DDIMScheduler(**config), steps), theirs) < 1e-5
    assert relative(_loop(compat.DDIMScheduler(**config, prev_timestep="list"), steps), theirs) > 1e-4


def test_monai_ddpm_list_rule_is_diffusers_rule_on_monai_timesteps():
    """MONAI's DDPM steps from t to t - 1 whatever the timesteps; prev_timestep="list" steps along the list
    with beta_t = 1 - abar_t / abar_prev, which is diffusers' DDPM given the same timesteps."""
    ours = compat.MonaiDDPMScheduler(prev_timestep="list")
    theirs = float64_tables(diffusers.DDPMScheduler(), ours)
    ours.set_timesteps(20)
    theirs.set_timesteps(timesteps=ours.timesteps.tolist())
    g = torch.Generator().manual_seed(0)
    for t in ours.timesteps:
        x, out = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(int(t)))
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(int(t)))
        assert relative(a.prev_sample, b.prev_sample, step_scale(ours, {}, 0, t)) < 1e-5
    peer_rule = _loop(compat.MonaiDDPMScheduler(), 20)
    assert relative(_loop(compat.MonaiDDPMScheduler(prev_timestep="list"), 20), peer_rule) > 1e-2


@pytest.mark.parametrize(("cls", "timesteps"), [
    ("DDPMScheduler", {"timesteps": [900, 640, 333, 120, 7, 0]}),
    ("EulerDiscreteScheduler", {"timesteps": [999.0, 711.5, 402.0, 97.25, 3.0]}),
    ("EulerDiscreteScheduler", {"sigmas": [14.0, 6.5, 2.0, 0.4, 0.05, 0.0]}),
    ("DPMSolverMultistepScheduler", {"timesteps": [981, 800, 555, 301, 120, 40, 5]}),
], ids=["ddpm", "euler-timesteps", "euler-sigmas", "dpm-solver"])
def test_custom_timesteps_and_sigmas_match_diffusers(cls, timesteps):
    diff = max_step_difference(getattr(compat, cls)(), getattr(diffusers, cls)(), {}, timesteps)
    assert diff < 1e-5


def test_list_of_generators_draws_as_diffusers():
    """diffusers draws one sample per generator when given a list (per-sample seeds)."""
    config = {"timestep_spacing": "trailing", "clip_sample": False}
    ours, theirs = compat.DDPMScheduler(**config), diffusers.DDPMScheduler(**config)
    theirs = float64_tables(theirs, ours)
    for s in (ours, theirs):
        s.set_timesteps(10)
    x, out = torch.randn(SHAPE), torch.randn(SHAPE)
    a, b = (s.step(out, s.timesteps[3], x, generator=[torch.Generator().manual_seed(k) for k in (5, 6)])
            for s in (ours, theirs))
    assert relative(a.prev_sample, b.prev_sample) < 1e-5


@pytest.mark.parametrize(("cls", "config", "step_kwargs"), [
    ("DDIMScheduler", {}, {"eta": 0.8}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, {}),
], ids=["ddim", "sde-dpm-solver"])
def test_given_variance_noise_is_used_as_diffusers_uses_it(cls, config, step_kwargs):
    ours, theirs = getattr(compat, cls)(**config), getattr(diffusers, cls)(**config)
    theirs = float64_tables(theirs, ours)
    for s in (ours, theirs):
        s.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(theirs.timesteps):
        x, out, z = (torch.randn(SHAPE, generator=g) for _ in range(3))
        a, b = (s.step(out, t, x, variance_noise=z, **step_kwargs) for s in (ours, theirs))
        assert relative(a.prev_sample, b.prev_sample, step_scale(ours, config, i, t)) < 1e-5


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDPMScheduler"])
def test_zero_snr_with_an_eps_model_clips_the_peers_infinity(cls):
    """rescale_betas_zero_snr makes abar = 0 at t = 999: an eps model's x0 is (x - eps) / 0, which the
    peer clips to +-1; ours makes the same infinity and clips it the same way."""
    config = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "clip_sample": True}
    diff = max_step_difference(getattr(compat, cls)(**config), getattr(diffusers, cls)(**config), config, 8)
    assert diff < 1e-5


PEER_CRASHES = [
    # diffusers' DPM-Solver++ 3M with Karras sigmas on a cosine schedule at 13 steps: its first timestep
    # repeats (998 six times), its lookup starts from the second copy, and its last step indexes past
    # the sigmas (IndexError).
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True,
                                     "beta_schedule": "squaredcos_cap_v2"}, 13),
    # The same lookup in diffusers' Euler: a Karras sigma_max above the largest training sigma maps
    # several sigmas to t = 999, and the loop fails at its last step.
    ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                "use_karras_sigmas": True, "sigma_max": 50.0}, 10),
]


@pytest.mark.parametrize(("cls", "config", "steps"), PEER_CRASHES)
def test_peer_crash_ours_runs(cls, config, steps):
    """Where diffusers raises IndexError, ours starts from the first copy of the repeated timestep,
    runs and stays finite, and matches diffusers told where to start (set_begin_index(0)) step by step."""
    with pytest.raises(IndexError):
        _loop(getattr(diffusers, cls)(**config), steps)
    assert torch.isfinite(_loop(getattr(compat, cls)(**config), steps)).all()
    diff = max_step_difference(getattr(compat, cls)(**config), getattr(diffusers, cls)(**config), config, steps,
                               peer_begin=0)
    assert diff < 1e-5


@pytest.mark.parametrize("config", [{"solver_order": 3}, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                                    {"solver_type": "heun"}], ids=["3m", "sde-3m", "2m-heun"])
def test_dpm_solver_many_steps_differs_only_by_the_peers_float32_coefficients(config):
    """At many steps (small h) diffusers computes DPM-Solver's third-order and Heun coefficients in float32,
    where exp(-h) - 1 + h ~ h^2 / 2 cancels; ours are float64. Given float64 sigmas the peer computes them
    in float64 too and matches ours; with its float32 ones it is further off, by its own rounding."""
    cls, peer = compat.DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler
    assert max_step_difference(cls(**config), peer(**config), config, 137, float64_sigmas=True) < 1e-5
    assert max_step_difference(cls(**config), peer(**config), config, 137) < 1e-3


def test_peer_nan_dpm_solver_equal_last_sigmas():
    """With Karras sigmas and final_sigmas_type="sigma_min" the last two sigmas are equal (h = 0), and
    diffusers' third-order (and Heun) terms divide 0 by 0: NaN. Ours stays put there, as its midpoint
    rule does, and matches every earlier step."""
    config = {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "solver_order": 3,
              "lower_order_final": False}
    with pytest.raises(AssertionError, match="NaN"):
        max_step_difference(compat.DPMSolverMultistepScheduler(**config),
                            diffusers.DPMSolverMultistepScheduler(**config), config, 20)
    ours = compat.DPMSolverMultistepScheduler(**config)
    assert max_step_difference(ours, diffusers.DPMSolverMultistepScheduler(**config), config, 20, upto=19) < 1e-5
    x = torch.randn(SHAPE)
    assert torch.equal(ours.step(torch.randn(SHAPE), ours.timesteps[19], x).prev_sample, x)


def test_peer_nan_ddpm_fixed_large_log_is_fixed_large_here():
    """diffusers' DDPM with variance_type="fixed_large_log" takes the square root of log(beta) < 0: NaN
    at every noisy step. Ours samples it as fixed_large, which it matches."""
    with pytest.raises(AssertionError, match="NaN"):
        max_step_difference(compat.DDPMScheduler(variance_type="fixed_large_log"),
                            diffusers.DDPMScheduler(variance_type="fixed_large_log"), {}, 10)
    diff = max_step_difference(compat.DDPMScheduler(variance_type="fixed_large_log"),
                               diffusers.DDPMScheduler(variance_type="fixed_large"), {}, 10)
    assert diff < 1e-5


def test_peer_nan_ddim_eta_above_one():
    """With eta > 1, 1 - abar_prev - std^2 can be negative and diffusers' DDIM returns NaN; ours takes the
    direction term as 0 there and stays finite."""
    with pytest.raises(AssertionError, match="NaN"):
        max_step_difference(compat.DDIMScheduler(), diffusers.DDIMScheduler(), {}, 10, {"eta": 2.0})
    assert torch.isfinite(_loop(compat.DDIMScheduler(), 10, eta=2.0)).all()


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDPMScheduler"])
def test_peer_trailing_grid_ending_at_minus_one(cls):
    """diffusers' trailing grid for 61 of 1000 steps ends at t = -1 (float steps overshoot); there its DDIM
    and DDPM read abar[-1] = abar_999 and wreck the finished sample. Ours matches every other step and
    returns the sample unchanged at t = -1."""
    config = {"timestep_spacing": "trailing"}
    ours, theirs = getattr(compat, cls)(**config), getattr(diffusers, cls)(**config)
    assert max_step_difference(ours, theirs, config, 61, upto=61) < 1e-5
    assert ours.timesteps[-1] == -1
    x = torch.randn(SHAPE)
    assert torch.equal(ours.step(torch.randn(SHAPE), -1, x).prev_sample, x)
    assert relative(theirs.step(torch.randn(SHAPE), -1, x).prev_sample, x) > 0.1


@pytest.mark.parametrize("cls", ["DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
                                 "DPMSolverMultistepScheduler"])
def test_device_timesteps_are_counted_not_read(cls):
    """A timestep on a device is never read inside the loop (a host sync each step): after the first step
    (here set_begin_index) the steps are counted. Meta tensors stand in for device tensors: reading one
    fails. The loop gives what the same loop with host timesteps gives."""
    finals = []
    for device in ("cpu", "meta"):
        s = getattr(compat, cls)()
        s.set_timesteps(8)
        s.set_begin_index(0)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
        for t in s.timesteps.to(device):
            x = s.step(0.5 * s.scale_model_input(x, t), t, x, generator=torch.Generator().manual_seed(1))[0]
        finals.append(x)
    assert torch.equal(finals[0], finals[1])


def test_monai_reversed_step_matches_monai():
    """MONAI's DDIM inversion step (to t + T // n), used to encode an image into noise."""
    ours = compat.MonaiDDIMScheduler(clip_sample=False)
    theirs = _float64(monai_schedulers.DDIMScheduler(clip_sample=False), ours)
    for s in (ours, theirs):
        s.set_timesteps(20)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in theirs.timesteps.flip(0)[:-1]:
        out = 0.3 * x
        a, b = ours.reversed_step(out, t, x), theirs.reversed_step(out, t, x)
        assert relative(a[0], b[0]) < 1e-5 and relative(a[1], b[1], step_scale(ours, {}, 0, t)) < 1e-5
        x = b[0]
