"""Drop-in DDPM and DDIM schedulers with the diffusers and MONAI interfaces.

`step` runs one fused kernel. It returns SchedulerOutput(prev_sample, pred_original_sample),
a NamedTuple that serves diffusers callers (`.prev_sample`, `[0]`) and MONAI callers
(`prev, x0 = scheduler.step(...)`). Noise: a torch.Generator (or None) draws torch.randn as
diffusers and MONAI do, so the same seed gives the same images; a mridpm.Generator makes
the noise inside the kernel instead. Schedules stay in float64.

Deliberate differences: the previous timestep always comes from the timestep list (diffusers'
DDIM computes t - T // n, and MONAI's DDPM uses abar[t - 1], which are wrong when steps are
skipped with other spacings), so outputs match theirs wherever theirs are right.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import discrete_timesteps
from mridpm.dpm.discrete import ddim_coeffs, ddpm_coeffs
from mridpm.dpm.dpm_solver import multistep_order, multistep_update
from mridpm.dpm.schedules import DiscreteSchedule, karras_sigmas, make_betas
from mridpm.ops import fused_step, randn
from mridpm.random import Generator

_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}


# diffusers options these schedulers do not implement, with the value they assume: a config that
# sets one otherwise is refused instead of silently sampling differently
_ASSUMED: dict[str, Any] = {
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "use_lu_lambdas": False, "use_flow_sigmas": False, "rescale_betas_zero_snr": False, "euler_at_final": False,
    "interpolation_type": "linear", "timestep_type": "discrete", "sigma_min": None, "sigma_max": None,
    "variance_type": None, "lambda_min_clipped": -float("inf"),
}


class SchedulerOutput(NamedTuple):
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class Config(dict):
    """A read-only-by-convention dict with attribute access, like diffusers' FrozenDict."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _DiscreteScheduler:
    """Shared state: the float64 schedule, the timestep list and the step counter."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, **config: Any) -> None:
        """Shared by the diffusers-style subclasses: config holds their constructor's arguments."""
        prediction_type = config["prediction_type"]
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {sorted(_PREDICTIONS)}")
        self.config = Config(config)
        self.schedule = _schedule(config["num_train_timesteps"], config["beta_start"], config["beta_end"],
                                  config["beta_schedule"], config["trained_betas"])
        self.prediction = _PREDICTIONS[prediction_type]
        self.clip, self.threshold = None, None
        if config["thresholding"]:
            self.threshold = (config["dynamic_thresholding_ratio"], config["sample_max_value"])
        elif config["clip_sample"]:
            self.clip = (-config["clip_sample_range"], config["clip_sample_range"])
        self.spacing, self.steps_offset = config["timestep_spacing"], config["steps_offset"]
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self.num_inference_steps: int | None = None
        self._list = list(range(self.schedule.num_train_timesteps - 1, -1, -1))
        self.timesteps = torch.tensor(self._list, dtype=torch.long)
        self._step_index: int | None = None
        self._device_abar: dict[torch.device, torch.Tensor] = {}
        abar = self.alphas_cumprod.numpy()
        self._train_sigmas = np.sqrt((1 - abar) / abar)  # the variance-exploding scale, ascending in t

    @classmethod
    def from_config(cls, config: dict | None = None, **kwargs: Any) -> _DiscreteScheduler:
        """An instance from a diffusers-style config (unknown keys such as _class_name are ignored)."""
        merged = {**(config or {}), **kwargs}
        names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        for key, default in _ASSUMED.items():
            if key not in names and merged.get(key, default) != default:
                raise ValueError(f"{cls.__name__}: the config option {key}={merged[key]!r} is not supported")
        return cls(**{k: v for k, v in merged.items() if k in names})

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """Chooses the sampling timesteps: num_inference_steps spaced by timestep_spacing, or a custom list."""
        ts = discrete_timesteps(self.schedule, timesteps, num_inference_steps, self.spacing, self.steps_offset)
        self._set_list(ts, torch.long, device)

    def _set_list(self, ts: list, dtype: torch.dtype, device: str | torch.device | None) -> None:
        self._list = ts
        self.num_inference_steps = len(ts)
        self.timesteps = torch.tensor(ts, dtype=dtype, device=device)
        self._step_index = None

    def _karras(self, steps: object, sigma_min: float, sigma_max: float) -> tuple[list[float], np.ndarray]:
        """Karras et al. (2022) sigmas for `steps` steps and their fractional training timesteps
        (linear in log sigma between neighbouring training steps, as diffusers maps them)."""
        self._check_steps(steps)
        sigmas = karras_sigmas(steps, sigma_min, sigma_max)  # type: ignore[arg-type]
        log_train = np.log(self._train_sigmas)
        ts = np.interp(np.log(np.maximum(sigmas, 1e-10)), log_train, np.arange(len(log_train), dtype=np.float64))
        return sigmas, ts

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def _check_steps(self, n: object) -> None:
        """For subclasses that space timesteps with their peer's own formula."""
        T = self.schedule.num_train_timesteps
        if not isinstance(n, int) or not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}] (the training steps), got {n!r}")

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """sqrt(abar_t) x0 + sqrt(1 - abar_t) noise with one timestep per sample, on the device."""
        device = original_samples.device
        if device not in self._device_abar:
            self._device_abar[device] = self.alphas_cumprod.to(device)
        abar = self._device_abar[device][torch.as_tensor(timesteps, device=device).long()]
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        a = abar.sqrt().to(original_samples.real.dtype).reshape(shape)
        s = (1 - abar).sqrt().to(original_samples.real.dtype).reshape(shape)
        return a * original_samples + s * noise

    def _index(self, timestep: Any) -> int:
        """Index of timestep in the list: looked up on the first step (one read), then counted."""
        if self._step_index is None or self._step_index >= len(self._list):
            t = float(timestep)
            matches = [i for i, v in enumerate(self._list) if abs(v - t) < 1e-3]
            if not matches:
                raise ValueError(f"timestep {t:g} is not among the scheduler's timesteps; call set_timesteps first")
            self._step_index = matches[0]
        index = self._step_index
        self._step_index += 1
        return index

    @staticmethod
    def _noise(sample: torch.Tensor, generator: Any, variance_noise: torch.Tensor | None,
               in_kernel: bool = True) -> torch.Tensor | None:
        """Explicit noise as diffusers draws it; for a mridpm.Generator, None (the kernel makes it)
        or, when the update needs the noise as a tensor, its Philox draw."""
        if variance_noise is not None:
            return variance_noise.to(sample.device, sample.dtype)
        if isinstance(generator, Generator):
            return None if in_kernel else randn(tuple(sample.shape), generator=generator, dtype=sample.dtype,
                                                device=sample.device)
        device = generator.device if isinstance(generator, torch.Generator) else sample.device
        return torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=device).to(sample.device)

    def _fused(self, sample: torch.Tensor, model_output: torch.Tensor, coeffs: list[float], std: float,
               x0_coeffs: tuple[float, float], x0_weight: float, generator: Any,
               variance_noise: torch.Tensor | None) -> SchedulerOutput:
        inputs, x0c = [sample, model_output.to(sample.dtype)], list(x0_coeffs)
        noise_scale = None
        if std > 0:
            noise = self._noise(sample, generator, variance_noise)
            if noise is None:
                noise_scale = std
            else:
                inputs.append(noise)
                coeffs, x0c = [*coeffs, std], [*x0c, 0.0]
        prev, x0 = fused_step(inputs, coeffs, noise_scale, generator=generator if noise_scale else None,
                              x0_coeffs=x0c, x0_weight=x0_weight, clamp=self.clip, threshold=self.threshold,
                              return_x0=True)
        return SchedulerOutput(prev, x0)


def _vp_coefficients(sigma: float) -> tuple[float, float]:
    """(alpha, sigma) of the variance-preserving process at variance-exploding noise level sigma."""
    alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return alpha, sigma * alpha


def _schedule(num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str,
              trained_betas: Any) -> DiscreteSchedule:
    if trained_betas is not None:
        return DiscreteSchedule(torch.as_tensor(trained_betas, dtype=torch.float64))
    if beta_schedule not in _BETAS:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {sorted(_BETAS)}")
    return DiscreteSchedule(make_betas(_BETAS[beta_schedule], num_train_timesteps, beta_start, beta_end))


def _arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments from its locals(), for the config."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}


class DDPMScheduler(_DiscreteScheduler):
    """diffusers' DDPMScheduler interface (variance_type fixed_small or fixed_large)."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading", steps_offset: int = 0) -> None:
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"variance_type {variance_type!r} is not supported; use 'fixed_small' or 'fixed_large'")
        super().__init__(**_arguments(locals()))
        self.variance = "beta_tilde" if variance_type == "fixed_small" else "beta"

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | Generator | None = None, return_dict: bool = True) -> SchedulerOutput:
        """One ancestral step from timestep to the previous one in the list; noise only while t > 0."""
        i = self._index(timestep)
        t = self._list[i]
        t_prev = self._list[i + 1] if i + 1 < len(self._list) else -1
        abar, abar_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_prev)
        c_xt, x0w, var = ddpm_coeffs(abar, abar_prev, self.variance)
        std = math.sqrt(max(var, 1e-20)) if t > 0 else 0.0
        x0c = param.x0_coeffs(self.prediction, math.sqrt(abar), math.sqrt(1.0 - abar))
        return self._fused(sample, model_output, [c_xt, 0.0], std, x0c, x0w, generator, None)


class DDIMScheduler(_DiscreteScheduler):
    """diffusers' DDIMScheduler interface."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0,
                 timestep_spacing: str = "leading", rescale_betas_zero_snr: bool = False) -> None:
        if rescale_betas_zero_snr:
            raise ValueError("rescale_betas_zero_snr is not supported")
        super().__init__(**_arguments(locals()))
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else self.schedule.alpha_bar(0)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> SchedulerOutput:
        """One DDIM step from timestep to the previous one in the list."""
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        i = self._index(timestep)
        t = self._list[i]
        abar = self.schedule.alpha_bar(t)
        abar_prev = self.schedule.alpha_bar(self._list[i + 1]) if i + 1 < len(self._list) else self.final_alpha_cumprod
        coeffs, std, x0c, x0w = ddim_coeffs(self.prediction, abar, abar_prev, eta)
        if use_clipped_model_output:  # eps re-derived from the clipped x0, as in GLIDE
            direction = math.sqrt(max(1.0 - abar_prev - std * std, 0.0))
            s = math.sqrt(1.0 - abar)
            coeffs, x0w = [direction / s, 0.0], x0w - direction * math.sqrt(abar) / s
        return self._fused(sample, model_output, coeffs, std, x0c, x0w, generator, variance_noise)


class DPMSolverMultistepScheduler(_DiscreteScheduler):
    """diffusers' DPMSolverMultistepScheduler interface: DPM-Solver++ (2M or 3M, midpoint), its
    timestep spacings or Karras sigmas, lower_order_final and final_sigmas_type "zero" or "sigma_min".
    Each step's coefficients come from its sigma, so Karras steps use their exact noise level."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint", lower_order_final: bool = True,
                 final_sigmas_type: str = "zero", timestep_spacing: str = "linspace", steps_offset: int = 0,
                 clip_sample: bool = False, clip_sample_range: float = 1.0, use_karras_sigmas: bool = False) -> None:
        if algorithm_type != "dpmsolver++" or solver_type != "midpoint":
            raise ValueError(f"only algorithm_type 'dpmsolver++' with solver_type 'midpoint' is supported, got "
                             f"{algorithm_type!r}, {solver_type!r}")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
        if final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final_sigmas_type!r}")
        super().__init__(**_arguments(locals()))
        self._history: list[torch.Tensor] = []
        self._hs: list[float] = []

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """num_inference_steps spaced as diffusers' DPM-Solver spaces them (n + 1 points, the last dropped),
        or Karras sigmas over the whole training range at their rounded timesteps (repeats possible)."""
        T = self.schedule.num_train_timesteps
        if self.config.use_karras_sigmas:
            if timesteps is not None:
                raise ValueError("custom timesteps cannot be combined with use_karras_sigmas=True")
            sigmas, ts = self._karras(num_inference_steps, float(self._train_sigmas[0]), float(self._train_sigmas[-1]))
            if self.config.beta_schedule != "squaredcos_cap_v2":
                ts = ts.round()
            self._set_list([int(t) for t in ts], torch.long, device)
        else:
            if timesteps is None:
                n = num_inference_steps
                self._check_steps(n)
                if self.spacing == "linspace":
                    ts = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
                elif self.spacing == "leading":
                    ts = (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1] + self.steps_offset
                elif self.spacing == "trailing":
                    ts = np.arange(T, 0, -T / n).round() - 1
                else:
                    raise ValueError(f"unknown timestep_spacing {self.spacing!r}")
                timesteps = [int(t) for t in ts]
            super().set_timesteps(None, device, timesteps)
            sigmas = [float(self._train_sigmas[t]) for t in self._list]
        self.sigmas_list = [*sigmas, 0.0 if self.config.final_sigmas_type == "zero" else float(self._train_sigmas[0])]
        self.sigmas = torch.tensor(self.sigmas_list, dtype=torch.float32)
        self._history, self._hs = [], []

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | Generator | None = None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One DPM-Solver++ step; deterministic (generator and variance_noise are accepted and unused)."""
        i = self._index(timestep)
        n = len(self._list)
        coef_s, coef_t = _vp_coefficients(self.sigmas_list[i]), _vp_coefficients(self.sigmas_list[i + 1])
        k = multistep_order(self.config.solver_order, len(self._history), i, n, self.config.lower_order_final,
                            coef_t[1])
        prev, x0 = multistep_update(sample, model_output.to(sample.dtype), self._history, self._hs, k,
                                    self.prediction, coef_s, coef_t, self.clip, self.threshold)
        self._history = [x0, *self._history][:2]
        lam = [math.log(a / s) if s > 0 else math.inf for a, s in (coef_s, coef_t)]
        self._hs = [*self._hs, lam[1] - lam[0]][-2:]  # the 3M update looks two steps back
        return SchedulerOutput(prev, x0)


class EulerDiscreteScheduler(_DiscreteScheduler):
    """diffusers' EulerDiscreteScheduler interface (Karras et al. 2022 Algorithm 2 with churn), on the
    sigma = sqrt((1 - abar) / abar) scale; linear interpolation of sigma at fractional timesteps."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str = "epsilon",
                 timestep_spacing: str = "linspace", steps_offset: int = 0, final_sigmas_type: str = "zero",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 sample_max_value: float = 1.0, clip_sample: bool = False, clip_sample_range: float = 1.0,
                 use_karras_sigmas: bool = False) -> None:
        if final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final_sigmas_type!r}")
        super().__init__(**_arguments(locals()))
        self.set_timesteps(self.schedule.num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[float] | None = None) -> None:
        """Float timesteps spaced as diffusers' Euler spaces them, and their sigmas (last one 0 or sigma_min);
        with use_karras_sigmas, Karras sigmas between the spaced ones' ends, at fractional timesteps."""
        T = self.schedule.num_train_timesteps
        if timesteps is not None and self.config.use_karras_sigmas:
            raise ValueError("custom timesteps cannot be combined with use_karras_sigmas=True")
        if timesteps is None:
            n = num_inference_steps
            self._check_steps(n)
            if self.spacing == "linspace":
                ts = np.linspace(0, T - 1, n, dtype=np.float32)[::-1]
            elif self.spacing == "leading":
                ts = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float32) + self.steps_offset
            elif self.spacing == "trailing":
                ts = np.arange(T, 0, -T / n).round().astype(np.float32) - 1
            else:
                raise ValueError(f"unknown timestep_spacing {self.spacing!r}")
            timesteps = [float(t) for t in ts]
        if any(not 0 <= t <= T - 1 for t in timesteps) or any(b >= a for a, b in itertools.pairwise(timesteps)):
            raise ValueError(f"timesteps must strictly decrease within [0, {T - 1}]")
        sigmas = np.interp(timesteps, np.arange(T), self._train_sigmas).tolist()
        if self.config.use_karras_sigmas:
            sigmas, karras_ts = self._karras(len(sigmas), sigmas[-1], sigmas[0])
            timesteps = [float(t) for t in np.float32(karras_ts)]
        last = 0.0 if self.config.final_sigmas_type == "zero" else float(self._train_sigmas[0])
        self.sigmas_list = [*sigmas, last]
        self._set_list(list(timesteps), torch.float32, device)
        self.sigmas = torch.tensor(self.sigmas_list, dtype=torch.float32)

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        top = max(self.sigmas_list)
        return top if self.spacing in ("linspace", "trailing") else math.sqrt(top * top + 1)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """sample / sqrt(sigma^2 + 1): the model sees the variance-preserving scale."""
        index = self._step_index if self._step_index is not None else self._lookup(timestep)
        return sample / math.sqrt(self.sigmas_list[index] ** 2 + 1)

    def _lookup(self, timestep: Any) -> int:
        index = self._index(timestep)
        self._step_index = index  # scale_model_input does not advance the step
        return index

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x0 + sigma_t noise on the Euler (variance-exploding) scale."""
        sig = [self.sigmas_list[min(range(len(self._list)), key=lambda i, v=v: abs(self._list[i] - v))]
               for v in torch.as_tensor(timesteps).reshape(-1).tolist()]
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        scale = torch.tensor(sig, dtype=original_samples.real.dtype, device=original_samples.device).reshape(shape)
        return original_samples + scale * noise

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | Generator | None = None, return_dict: bool = True) -> SchedulerOutput:
        """prev = sample_hat + (sample_hat - x0) / sigma_hat * (sigma_next - sigma_hat), sample_hat with churn."""
        i = self._index(timestep)
        sigma, sigma_next = self.sigmas_list[i], self.sigmas_list[i + 1]
        gamma = min(s_churn / (len(self.sigmas_list) - 1), math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if self.prediction == "eps":  # as diffusers: eps uses sigma_hat, v and x0 use sigma
            c1, c2 = 1.0, -sigma_hat
        else:
            alpha_vp = 1 / math.sqrt(sigma * sigma + 1)
            c1, c2 = param.x0_coeffs(self.prediction, alpha_vp, sigma * alpha_vp)
            c1 *= alpha_vp
        dt = sigma_next - sigma_hat
        inputs, coeffs, x0c = [sample, model_output.to(sample.dtype)], [1 + dt / sigma_hat, 0.0], [c1, c2]
        if gamma > 0:  # churn: sample_hat = sample + k z, drawn as diffusers draws it
            k = s_noise * math.sqrt(sigma_hat * sigma_hat - sigma * sigma)
            inputs.append(self._noise(sample, generator, None, in_kernel=False))
            coeffs.append((1 + dt / sigma_hat) * k)
            x0c.append(c1 * k)
        prev, x0 = fused_step(inputs, coeffs, x0_coeffs=x0c, x0_weight=-dt / sigma_hat, clamp=self.clip,
                              threshold=self.threshold, return_x0=True)
        return SchedulerOutput(prev, x0)


_MONAI_BETAS = {"linear_beta": "linear", "scaled_linear_beta": "scaled_linear", "sigmoid_beta": "sigmoid"}
_MONAI_PREDICTIONS = {"epsilon": "epsilon", "sample": "sample", "v_prediction": "v_prediction"}


def _monai_schedule(schedule: str, num_train_timesteps: int, schedule_args: dict) -> dict:
    if schedule not in _MONAI_BETAS:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(_MONAI_BETAS)}")
    name = {"linear": "linear", "scaled_linear": "scaled_linear", "sigmoid": "sigmoid"}[_MONAI_BETAS[schedule]]
    return {"beta_schedule": name, "beta_start": schedule_args.get("beta_start", 1e-4),
            "beta_end": schedule_args.get("beta_end", 2e-2), "num_train_timesteps": num_train_timesteps}


class MonaiDDPMScheduler(DDPMScheduler):
    """MONAI's DDPMScheduler interface (monai.networks.schedulers)."""

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta",
                 variance_type: str = "fixed_small", clip_sample: bool = True, prediction_type: str = "epsilon",
                 clip_sample_min: float = -1.0, clip_sample_max: float = 1.0, **schedule_args: float) -> None:
        super().__init__(variance_type=variance_type, clip_sample=False, prediction_type=prediction_type,
                         **_monai_schedule(schedule, num_train_timesteps, schedule_args))
        self.clip = (clip_sample_min, clip_sample_max) if clip_sample else None


class MonaiDDIMScheduler(DDIMScheduler):
    """MONAI's DDIMScheduler interface (monai.networks.schedulers)."""

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta", clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 clip_sample_min: float = -1.0, clip_sample_max: float = 1.0, **schedule_args: float) -> None:
        super().__init__(clip_sample=False, set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
                         prediction_type=prediction_type, **_monai_schedule(schedule, num_train_timesteps,
                                                                            schedule_args))
        self.clip = (clip_sample_min, clip_sample_max) if clip_sample else None

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """MONAI's spacing: linspace(T - 1 - steps_offset, 0, n), rounded, plus steps_offset."""
        if timesteps is None and num_inference_steps is not None:
            T, off = self.schedule.num_train_timesteps, self.steps_offset
            self._check_steps(num_inference_steps)
            ramp = torch.linspace(T - 1 - off, 0, num_inference_steps, dtype=torch.float32).round().long() + off
            timesteps = ramp.tolist()
        super().set_timesteps(num_inference_steps, device, timesteps)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | Generator | None = None) -> SchedulerOutput:
        return super().step(model_output, timestep, sample, eta=eta, generator=generator)
