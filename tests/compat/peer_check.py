"""Test helpers: a peer scheduler given our float64 tables, so that it and ours differ only in their rules
and in how they round the data (the peers build their tables in float32: a float32 cumprod is off by
about 1e-7 * t relative, which in 1 - abar near t = 0 is up to 1e-3; see PITFALLS), and the step-by-step
comparison of a drop-in with its peer."""

import math

import torch

from mridpm import compat

SHAPE = (2, 3, 5, 7)


def float64_tables(theirs, ours):
    """theirs with ours' betas and cumulative alphas (and DPM-Solver's log-SNR tables) in float64."""
    betas, abar = ours.schedule.betas, ours.schedule.alphas_cumprod
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = betas, 1 - betas, abar
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(theirs, "final_alpha_cumprod"):
        theirs.final_alpha_cumprod = torch.tensor(ours.final_alpha_cumprod, dtype=torch.float64)
    if hasattr(theirs, "lambda_t"):
        theirs.alpha_t, theirs.sigma_t = abar.sqrt(), (1 - abar).sqrt()
        theirs.lambda_t = theirs.alpha_t.log() - theirs.sigma_t.log()
    return theirs


def relative(mine: torch.Tensor, peer: torch.Tensor, scale: float = 0.0) -> float:
    """max |mine - peer| / max(max |peer|, scale): the difference relative to the output's scale (or to
    the step's own scale where that is larger)."""
    return float((mine.double() - peer.double()).abs().max() / max(float(peer.double().abs().max()), scale, 1e-30))


def model_output(ours, config: dict, g: torch.Generator, shape: tuple = SHAPE) -> torch.Tensor:
    """A model output of the sample's shape, or with a predicted variance for learned variance types
    (DPM-Solver reads one only for eps prediction)."""
    out = torch.randn(shape, generator=g)
    kind = config.get("variance_type")
    if isinstance(ours, compat.DPMSolverMultistepScheduler) and config.get("prediction_type") != "epsilon":
        kind = None
    if kind == "learned":
        return torch.cat([out, torch.rand(shape, generator=g) * 0.02 + 1e-4], dim=1)
    if kind == "learned_range":
        return torch.cat([out, torch.rand(shape, generator=g) * 2 - 1], dim=1)
    return out


def max_step_difference(ours, theirs, config: dict, steps: int | dict, step_kwargs: dict | None = None,
                        upto: int | None = None, peer_begin: int | None = None,
                        float64_sigmas: bool = False) -> float:
    """The largest relative difference over every step of one config (prev_sample and x0 where the peer
    returns it; Euler's scaled model input too), or over the first `upto` steps. steps: a number of
    steps, or set_timesteps' keyword arguments (custom timesteps or sigmas); peer_begin tells the
    peer where to start; float64_sigmas has the peer compute its step coefficients in float64.
    Raises AssertionError on a timestep or sigma mismatch, or a non-finite peer output."""
    theirs = float64_tables(theirs, ours)
    timesteps = steps if isinstance(steps, dict) else {"num_inference_steps": steps}  # or custom ones
    ours.set_timesteps(**timesteps)
    theirs.set_timesteps(**timesteps)
    if peer_begin is not None:
        theirs.set_begin_index(peer_begin)
    if float64_sigmas:
        torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=1e-6, atol=0)
        theirs.sigmas = theirs.sigmas.double()
    step_kwargs = step_kwargs or {}
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    if hasattr(theirs, "sigmas"):
        torch.testing.assert_close(ours.sigmas, theirs.sigmas.float(), rtol=1e-6, atol=0)
    g = torch.Generator().manual_seed(len(ours.timesteps))
    worst = 0.0
    for i, t in enumerate(theirs.timesteps[:upto]):
        x, out = torch.randn(SHAPE, generator=g), model_output(ours, config, g)
        if hasattr(theirs, "is_scale_input_called"):
            worst = max(worst, relative(ours.scale_model_input(x, t), theirs.scale_model_input(x, t)))
        scale = step_scale(ours, config, i, t)
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(i), **step_kwargs)
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(i), **step_kwargs)
        pairs = [(a[0], b[0])] + ([(a[1], b[1])] if len(b) > 1 and b[1] is not None else [])
        for mine, peer in pairs:
            assert torch.isfinite(peer).all(), f"the peer returned NaN or Inf at step {i} (t = {float(t)})"
            worst = max(worst, relative(mine, peer, scale))
    return worst


def step_scale(ours, config: dict, i: int, t) -> float:
    """The scale of a step's inputs as the update sees them (unit-scale sample and model output): an eps
    model's x0 = (x - sigma eps) / alpha amplifies float32 rounding by 1 / alpha, and Euler's sample
    lives on the sigma scale; differences are relative to this or to the output, whichever is larger."""
    if isinstance(ours, compat.EulerDiscreteScheduler):
        return math.sqrt(1 + ours.sigmas_list[i] ** 2)
    if config.get("prediction_type", "epsilon") != "epsilon":
        return 1.0
    if isinstance(ours, compat.DPMSolverMultistepScheduler):
        return math.sqrt(1 + ours.sigmas_list[i] ** 2)
    abar = ours.schedule.alpha_bar(int(t))
    return abar**-0.5 if abar > 0 else 1.0  # at abar = 0 (zero SNR) x0 is the peers' clipped infinity
