"""Drop-in DPM-Solver++ scheduler: diffusers' DPMSolverMultistepScheduler, rule for rule.

DPM-Solver++ (Lu et al. 2022b) 1S/2M/3M, ODE ("dpmsolver++") or SDE ("sde-dpmsolver++"), midpoint
or Heun second-order terms, with diffusers' timestep spacings (and lambda_min_clipped), Karras,
exponential, beta or Lu-lambda sigma grids, its warm-up and lower-order final steps, its step
counter and its data-prediction history. Every step is one fused update of the sample, the model
output and the earlier data predictions, with coefficients computed in float64 from the float32
sigmas diffusers keeps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mridpm.compat._base import Scheduler, SchedulerOutput, arguments, check_choice, limits, refuse, vp
from mridpm.compat._tables import SPACINGS, diffusers_table, f32, sigma_grid, sigma_kind, sigma_to_t
from mridpm.random import Generator

_ALGORITHMS = {"dpmsolver++": "dpmsolver++", "sde-dpmsolver++": "sde-dpmsolver++", "deis": "dpmsolver++"}
_SOLVER_TYPES = {"midpoint": "midpoint", "heun": "heun", "logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}


def _dpm_spacing(spacing: str, T: int, last: int, n: object, offset: int) -> np.ndarray:
    """diffusers' DPM-Solver grid: n + 1 points up to `last` (lambda_min_clipped), the final one dropped."""
    if not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be an integer in [1, {T}] (the training steps), got {n!r}")
    if spacing == "linspace":
        return np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    if spacing == "leading":
        return (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1] + offset
    if spacing == "trailing":
        return np.arange(last, 0, -T / n).round() - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {SPACINGS}")


def _terms(order: int, sde: bool, heun: bool, h: float, alpha_t: float) -> tuple[float, list[float], float]:
    """diffusers' update x_t = c_x (sigma_t / sigma_s) x + sum_k c_k D_k + c_z sigma_t z as (c_x, [c_D0..c_D2], c_z)."""
    if sde:  # e2 = 1 - exp(-2h)
        e2 = -math.expm1(-2 * h) if math.isfinite(h) else 1.0
        d1 = alpha_t * (e2 / (-2 * h) + 1.0) if heun or order == 3 else 0.5 * alpha_t * e2
        d2 = alpha_t * ((e2 - 2 * h) / (2 * h) ** 2 - 0.5) if order == 3 else 0.0
        return math.exp(-h), [alpha_t * e2, d1, d2], math.sqrt(e2)
    em = math.expm1(-h) if math.isfinite(h) else -1.0  # exp(-h) - 1
    d1 = alpha_t * (em / h + 1.0) if heun or order == 3 else -0.5 * alpha_t * em
    d2 = -alpha_t * ((em + h) / h**2 - 0.5) if order == 3 else 0.0
    return 1.0, [-alpha_t * em, d1, d2], 0.0


def _weights(order: int, d: list[float], r0: float, r1: float) -> list[float]:
    """The D terms as weights of the data predictions m0 (newest), m1, m2."""
    if order == 1:
        return [d[0]]
    d1_0 = np.array([1.0, -1.0, 0.0]) / r0
    if order == 2:
        return [float(v) for v in (d[0] * np.array([1.0, 0.0, 0.0]) + d[1] * d1_0)[:2]]
    d1_1 = np.array([0.0, 1.0, -1.0]) / r1
    w = d[0] * np.array([1.0, 0.0, 0.0]) + d[1] * (d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)) \
        + d[2] * (d1_0 - d1_1) / (r0 + r1)
    return [float(v) for v in w]


class DPMSolverMultistepScheduler(Scheduler):
    """diffusers' DPMSolverMultistepScheduler: same arguments, timesteps, sigmas, orders and update.

    Not implemented (refused): the deprecated noise-prediction algorithms "dpmsolver" and
    "sde-dpmsolver", flow sigmas and dynamic shifting, and solver_order above 3. Where diffusers'
    first timestep repeats (Karras or other sigma grids on a cosine schedule) it starts from the
    second copy and raises IndexError at the last step; we start from the first and finish.
    Beyond diffusers: clip_sample / clip_sample_range limit the data prediction.
    """

    counts_steps = True
    missing_is_last = True

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint", lower_order_final: bool = True,
                 euler_at_final: bool = False, use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False,
                 use_beta_sigmas: bool = False, use_lu_lambdas: bool = False, use_flow_sigmas: bool = False,
                 flow_shift: float = 1.0, final_sigmas_type: str = "zero", lambda_min_clipped: float = -float("inf"),
                 variance_type: str | None = None, timestep_spacing: str = "linspace", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, use_dynamic_shifting: bool = False,
                 time_shift_type: str = "exponential", clip_sample: bool = False,
                 clip_sample_range: float = 1.0) -> None:
        config = arguments(locals())
        if algorithm_type in ("dpmsolver", "sde-dpmsolver"):
            raise ValueError(f"algorithm_type {algorithm_type!r} (noise prediction, deprecated in diffusers) is not "
                             f"supported; use 'dpmsolver++' or 'sde-dpmsolver++'")
        check_choice("algorithm_type", algorithm_type, _ALGORITHMS)
        check_choice("solver_type", solver_type, _SOLVER_TYPES)
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
        for name, value, supported in (("use_flow_sigmas", use_flow_sigmas, False),
                                       ("use_dynamic_shifting", use_dynamic_shifting, False)):
            refuse(name, value, supported)
        config.update(algorithm_type=_ALGORITHMS[algorithm_type], solver_type=_SOLVER_TYPES[solver_type])
        kind = sigma_kind(config)  # diffusers' precedence: Karras, then Lu lambdas, then the others
        self.sigma_kind = "lu" if use_lu_lambdas and kind != "karras" else kind
        table = diffusers_table(config, sigma_scale=True)
        super().__init__(config, table, prediction_type, *limits(config))
        self._train_sigmas = table.sigmas()
        self.sigmas_list: list[float] = []
        self.sigmas = torch.tensor(f32(self._train_sigmas), dtype=torch.float32)
        self._reset()
        self.num_inference_steps = None

    def _reset(self) -> None:
        self._history: list[torch.Tensor] = []  # earlier data predictions, newest first
        self.lower_order_nums = 0

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      mu: float | None = None, timesteps: list[int] | None = None) -> None:
        """Timesteps and sigmas as diffusers makes them: spaced (up to lambda_min_clipped) or custom and
        interpolated, or a Karras, exponential, beta or Lu-lambda grid at its (rounded) timesteps."""
        cfg, T = self.config, self.num_train_timesteps
        refuse("mu (dynamic shifting)", mu, None)
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        if timesteps is not None and self.sigma_kind is not None:
            raise ValueError(f"custom timesteps cannot be combined with the {self.sigma_kind} sigma grid")
        log_train = np.log(self._train_sigmas)
        if self.sigma_kind is None:
            if timesteps is None:
                lambdas = np.flip(-log_train)  # log(alpha / sigma), from t = T - 1 down
                last = T - int(np.searchsorted(lambdas, cfg.lambda_min_clipped))
                ts = _dpm_spacing(cfg.timestep_spacing, T, last, num_inference_steps, cfg.steps_offset)
            else:
                ts = np.asarray(timesteps, dtype=np.int64)
            grid = np.interp(ts, np.arange(T), self._train_sigmas)
        else:
            lo, hi = float(self._train_sigmas[0]), float(self._train_sigmas[-1])
            if self.sigma_kind == "lu":  # uniform in log sigma over the whole range
                grid = np.exp(np.linspace(math.log(hi), math.log(lo), num_inference_steps))  # type: ignore[arg-type]
            else:
                grid = sigma_grid(self.sigma_kind, lo, hi, num_inference_steps)  # type: ignore[arg-type]
            ts = sigma_to_t(grid, log_train)
            if self.sigma_kind in ("karras", "lu") and cfg.beta_schedule != "squaredcos_cap_v2":
                ts = ts.round()
        last_sigma = 0.0 if cfg.final_sigmas_type == "zero" else float(self._train_sigmas[0])
        self.sigmas_list = f32([*grid, last_sigma])
        self.sigmas = torch.tensor(self.sigmas_list, dtype=torch.float32)
        self._set_list([int(t) for t in ts], torch.long, device)
        self._lambdas = [-math.log(s) if s > 0 else math.inf for s in self.sigmas_list]
        self._reset()

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | Generator | None = None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One DPM-Solver++ step; the SDE variant draws its noise on every step, as diffusers does."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        i = self._advance(timestep)[1]
        assert i is not None
        cfg, n = self.config, len(self._list)
        final = i == n - 1 and (cfg.euler_at_final or (cfg.lower_order_final and n < 15)
                                or cfg.final_sigmas_type == "zero")
        second = i == n - 2 and cfg.lower_order_final and n < 15
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or final:
            order = 1
        else:
            order = 2 if cfg.solver_order == 2 or self.lower_order_nums < 2 or second else 3
        if cfg.variance_type in ("learned", "learned_range") and self.prediction == "eps":
            model_output = model_output[:, :3]
        alpha_s, sigma_s = vp(self.sigmas_list[i])
        alpha_t, sigma_t = vp(self.sigmas_list[i + 1])
        lam = self._lambdas
        h = lam[i + 1] - lam[i]
        sde = cfg.algorithm_type == "sde-dpmsolver++"
        if h == 0:  # equal sigmas (a sigma_min end): no move, as diffusers' midpoint rule; its Heun and
            # third-order terms divide 0 by 0 there and return NaN
            order, c_x, w, c_z = 1, 1.0, [0.0], 0.0
        else:
            r0 = (lam[i] - lam[i - 1]) / h if order > 1 else 1.0
            r1 = (lam[i - 1] - lam[i - 2]) / h if order > 2 else 1.0
            c_x, d, c_z = _terms(order, sde, cfg.solver_type == "heun", h, alpha_t)
            w = _weights(order, d, r0, r1)
        inputs, x0c = self._x0_inputs(sample, model_output.to(sample.dtype), alpha_s, sigma_s)
        history = self._history[: order - 1]
        inputs += history
        coeffs = [c_x * sigma_t / sigma_s, *[0.0] * (len(inputs) - 1 - len(history)), *w[1:]]
        result = self._update(inputs, coeffs, x0c, w[0], sigma_t * c_z, generator, variance_noise, draw=sde)
        self._history = [result.pred_original_sample, *self._history][:2]
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        return result
