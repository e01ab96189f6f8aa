"""What every drop-in shares: the config, the float64 tables, timestep bookkeeping, the noise as the
peers draw it, and the one fused step that applies an update.

Timesteps: diffusers' DDPM and DDIM and MONAI's schedulers compute a step from the timestep's value
alone; diffusers' Euler and DPM-Solver count steps from the first one they see. We read a timestep
given on the host (a number or a CPU tensor: free); one given on a device is read once, on the first
step, and counted after that, since reading it every step would synchronise with the device.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from mridpm.compat._tables import Table
from mridpm.dpm import parameterization as param
from mridpm.ops.step import fused_step, randn
from mridpm.random import Generator

PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
PREV_TIMESTEP = ("peer", "list")


class SchedulerOutput(NamedTuple):
    """(prev_sample, pred_original_sample): diffusers callers read .prev_sample or [0], MONAI callers unpack."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class Config(dict):
    """A read-only-by-convention dict with attribute access, like diffusers' FrozenDict."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments from its locals(), for the config (**kwargs flattened in)."""
    args = {k: v for k, v in frame_locals.items() if k not in ("self", "__class__", "schedule_args")}
    return {**args, **frame_locals.get("schedule_args", {})}


def refuse(name: str, value: Any, supported: Any) -> None:
    """A peer option we do not implement: refused unless it has the value we assume."""
    if value != supported:
        raise ValueError(f"the option {name}={value!r} is not supported (only {supported!r})")


def check_choice(name: str, value: Any, choices: tuple | dict) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")


def limits(config: dict[str, Any]) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(clip, threshold) of a diffusers-style config: dynamic thresholding wins over clip_sample, as there."""
    if config.get("thresholding"):
        return None, (config["dynamic_thresholding_ratio"], config["sample_max_value"])
    if config.get("clip_sample"):
        return (-config["clip_sample_range"], config["clip_sample_range"]), None
    return None, None


def randn_like_peer(like: torch.Tensor, generator: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normal noise shaped like `like`, drawn as diffusers' randn_tensor draws it: on a CPU generator's
    device and then moved, one draw per sample for a list of generators, the global generator for None."""
    dtype = dtype or like.dtype
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    device = like.device
    if first is not None and first.device.type == "cpu":
        device = torch.device("cpu")
    if isinstance(generator, (list, tuple)):
        draws = [torch.randn((1, *like.shape[1:]), generator=g, device=device, dtype=dtype) for g in generator]
        return torch.cat(draws).to(like.device)
    return torch.randn(like.shape, generator=generator, device=device, dtype=dtype).to(like.device)


class Scheduler:
    """Shared state: the config, the float64 table, the timestep list and the step counter."""

    order = 1
    init_noise_sigma = 1.0
    counts_steps = False  # True: the step counter decides which step runs (diffusers' Euler, DPM-Solver)
    missing_is_last = False  # True: an unknown first timestep starts the last step (diffusers' DPM-Solver)

    def __init__(self, config: dict[str, Any], table: Table, prediction_type: str,
                 clip: tuple[float, float] | None = None, threshold: tuple[float, float] | None = None) -> None:
        """config: the subclass constructor's arguments; table: its float64 schedule."""
        check_choice("prediction_type", prediction_type, PREDICTIONS)
        self.config = Config(config)
        self.schedule = table
        self.prediction = PREDICTIONS[prediction_type]
        self.clip, self.threshold = clip, threshold
        self.betas, self.alphas_cumprod = table.betas, table.alphas_cumprod
        self.alphas, self.one = 1.0 - table.betas, torch.tensor(1.0, dtype=torch.float64)
        self.num_train_timesteps = table.num_train_timesteps
        self.num_inference_steps: int | None = None
        self._set_list(list(range(self.num_train_timesteps - 1, -1, -1)), torch.long, None)
        self.num_inference_steps = None
        self._begin_index: int | None = None
        self._device_abar: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: dict | None = None, **kwargs: Any) -> Scheduler:
        """An instance from a diffusers-style config; keys the constructor does not take are ignored,
        as diffusers ignores them (_class_name, another scheduler's options)."""
        merged = {k: v for k, v in {**(config or {}), **kwargs}.items() if not k.startswith("_")}
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            merged = {k: v for k, v in merged.items() if k in params}
        return cls(**merged)

    def __len__(self) -> int:
        return self.num_train_timesteps

    # -- the timestep list and which step runs ------------------------------------------------------

    def _set_list(self, ts: list, dtype: torch.dtype, device: str | torch.device | None) -> None:
        self._list = ts
        self._first_index: dict[float, int] | None = None  # built on the first lookup
        self.num_inference_steps = len(ts)
        self.timesteps = torch.tensor(ts, dtype=dtype, device=device)
        self._step_index: int | None = None
        self._begin_index = None

    def _integer_list(self, spaced: Sequence[float] | None, custom: Sequence[int] | None) -> list[int]:
        """A spaced grid (which steps_offset may push past the last training step) or a custom list, checked."""
        T = self.num_train_timesteps
        ts = [int(t) for t in (custom if custom is not None else spaced)]  # type: ignore[union-attr]
        if custom is not None and (not ts or any(b >= a for a, b in itertools.pairwise(ts)) or ts[-1] < 0):
            raise ValueError(f"timesteps must strictly decrease within [0, {T - 1}], got {ts}")
        if ts[0] >= T:
            raise ValueError(f"timesteps {ts[0]} runs past the last training step {T - 1} (steps_offset "
                             f"{self.config.get('steps_offset', 0)})")
        return ts

    @property
    def step_index(self) -> int | None:
        """The index of the next step in the timestep list (None before the first step)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Where the first step starts (image-to-image pipelines call this), instead of a lookup."""
        self._begin_index = begin_index

    @property
    def _first(self) -> dict[float, int]:
        """Each timestep value's first index in the list."""
        if self._first_index is None:
            self._first_index = {}
            for i, v in enumerate(self._list):
                self._first_index.setdefault(v, i)
        return self._first_index

    def _lookup(self, value: float) -> int:
        """Index of a timestep value: the first match; for the counting schedulers diffusers' rule, the
        second match where the value repeats (for image-to-image), except at the start of the list, where
        diffusers' choice starts one step late and fails at the end."""
        if value not in self._first:
            if self.missing_is_last:
                return len(self._list) - 1
            raise ValueError(f"timestep {value:g} is not among the scheduler's timesteps; call set_timesteps first")
        first = self._first[value]
        repeats = self.counts_steps and first + 1 < len(self._list) and self._list[first + 1] == value
        return first + 1 if repeats and first != 0 else first

    def _start(self, timestep: Any) -> int:
        if self._begin_index is not None:
            return self._begin_index
        return self._lookup(float(timestep))  # a device tensor is read here, once

    def _advance(self, timestep: Any) -> tuple[float, int | None]:
        """The value of this step's timestep and its index in the list (None when it is not on it)."""
        host = not isinstance(timestep, torch.Tensor) or timestep.device.type == "cpu"
        if self.counts_steps or not host:
            if self._step_index is None or self._step_index >= len(self._list):
                self._step_index = self._start(timestep)
            index: int | None = self._step_index
            value = self._list[index]
        else:
            value = float(timestep)
            counted = self._step_index
            if counted is not None and counted < len(self._list) and self._list[counted] == value:
                index = counted
            else:
                index = self._first.get(value)
        self._step_index = None if index is None else index + 1
        return value, index

    @staticmethod
    def _past_the_end(t: float, sample: torch.Tensor) -> SchedulerOutput | None:
        """At t = -1 the sample is already clean: returned as it is. diffusers' trailing grid ends at -1
        for some step counts (61 of 1000: float steps overshoot), and its DDPM and DDIM then read
        abar[-1] = abar_{T-1} and wreck the last step."""
        return SchedulerOutput(sample, sample) if t < 0 else None

    # -- the update -------------------------------------------------------------------------------------

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sample

    def _x0_inputs(self, sample: torch.Tensor, out: torch.Tensor, alpha: float,
                   sigma: float) -> tuple[list[torch.Tensor], list[float]]:
        """[sample, out] and the coefficients of x0 = a sample + b out. Where alpha = 0 (zero terminal
        SNR) an eps model's x0 = (x - eps) / 0 is the peers' infinity, made here as they make it."""
        if alpha == 0 and self.prediction == "eps":
            return [sample, out, (sample - sigma * out) / torch.zeros((), dtype=sample.dtype)], [0.0, 0.0, 1.0]
        return [sample, out], list(param.x0_coeffs(self.prediction, alpha, sigma))

    def _noise(self, like: torch.Tensor, generator: Any, variance_noise: torch.Tensor | None,
               as_tensor: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """The given noise, or noise drawn as the peers draw it; for a mridpm.Generator None (the kernel
        makes it) unless as_tensor asks for its Philox draw."""
        if variance_noise is not None:
            return variance_noise.to(like.device, like.dtype)
        if isinstance(generator, Generator):
            return randn(tuple(like.shape), generator=generator, dtype=like.dtype, device=like.device) \
                if as_tensor else None
        return randn_like_peer(like, generator, dtype).to(like.dtype)

    def _update(self, inputs: list[torch.Tensor], coeffs: list[float], x0_coeffs: list[float], x0_weight: float,
                noise_std: float = 0.0, generator: Any = None, variance_noise: torch.Tensor | None = None,
                draw: bool = False) -> SchedulerOutput:
        """prev = sum coeffs * inputs + x0_weight * limit(x0) (+ noise_std * z), x0 = sum x0_coeffs * inputs,
        in one fused step. draw: the peer draws noise on this step even when noise_std is 0, which
        keeps a shared generator's stream in step with the peer's."""
        inputs = list(inputs)
        k = len(inputs)
        coeffs, x0c = [*coeffs, *[0.0] * (k - len(coeffs))], [*x0_coeffs, *[0.0] * (k - len(x0_coeffs))]
        noise_scale = None
        if noise_std > 0 or draw:
            z = self._noise(inputs[0], generator, variance_noise)
            if z is None:
                noise_scale = noise_std if noise_std > 0 else None
            else:
                inputs, coeffs, x0c = [*inputs, z], [*coeffs, noise_std], [*x0c, 0.0]
        if len(inputs) > 4:  # the kernel takes four inputs: fold the last two (both outside x0) first
            inputs[-2:] = [fused_step(inputs[-2:], coeffs[-2:])]
            coeffs[-2:], x0c[-2:] = [1.0], [0.0]
        prev, x0 = fused_step(inputs, coeffs, noise_scale, generator=generator if noise_scale else None,
                              x0_coeffs=x0c, x0_weight=x0_weight, clamp=self.clip, threshold=self.threshold,
                              return_x0=True)
        return SchedulerOutput(prev, x0)

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


def vp(sigma: float) -> tuple[float, float]:
    """(alpha, sigma) of the variance-preserving process at variance-exploding noise level sigma."""
    alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return alpha, sigma * alpha
