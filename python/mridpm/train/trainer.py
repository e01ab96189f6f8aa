"""The training loop: discrete-time diffusion losses, AdamW, EMA, mixed precision, gradient
clipping, a progress bar, atomic checkpoints with exact resume, and data parallelism with
torch.distributed (DDP; launched by torchrun, gloo on CPUs, NCCL on GPUs).

Every random draw of step s (the batch's indices, timesteps and noise, and dropout) comes from
generators seeded by (seed, s), and each rank takes its share of one global batch: a resumed
run repeats the uninterrupted one exactly, and N ranks with batch B train as one process with
batch N * B."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from mridpm.data.phantom import simplex_noise
from mridpm.dpm.losses import diffusion_loss, drop_condition
from mridpm.dpm.schedules import BETA_SCHEDULES, DiscreteSchedule
from mridpm.train.checkpoint import (
    flatten_optimizer,
    restore_training,
    resume_checkpoint,
    save_checkpoint,
    state_mismatch,
)
from mridpm.train.ema import EMA


@dataclass
class TrainConfig:
    """What a run does; saved in every checkpoint."""

    steps: int = 1000
    batch_size: int = 16  # global: split over the ranks
    lr: float = 2e-4
    lr_schedule: str = "constant"  # or "cosine": lr to 0 along a half cosine from step lr_decay_start to steps
    lr_decay_start: int = 0
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    amp: str = "none"  # "none", "bf16" or "fp16" (fp16 with a gradient scaler, CUDA only)
    prediction: str = "eps"
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    seed: int = 0
    checkpoint_every: int = 100
    sample_every: int = 0  # > 0: a PNG grid of EMA samples in out_dir/samples every that many steps
    keep: int = 2
    noise: str = "gaussian"  # or "simplex" (2D): AnoDDPM's multi-octave simplex noise in the forward process
    cond_dropout: float = 0.0  # conditional models: the probability a sample's condition is replaced by 0
    out_dir: str = "runs/default"
    extra: dict = field(default_factory=dict)


@dataclass
class TrainState:
    step: int
    losses: list[float]


def check_integer(where: str, key: str, value: object, low: int) -> None:
    """Refuses value unless it is an integer (not a bool) >= low, naming the key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where} {key} must be an integer >= {low}, got {value!r}")


def check_real(where: str, key: str, value: object, low: float, high: float = math.inf, *,
               open_low: bool = False, open_high: bool = False) -> None:
    """Refuses value unless it is a finite number in the interval (open at either end as asked), naming the key."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)  # type: ignore[operator]
    if not ok:
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high or high == math.inf else ']'}"
        raise ValueError(f"{where} {key} must be a finite number in {bounds}, got {value!r}")


def check_choice(where: str, key: str, value: object, choices: tuple[str, ...]) -> None:
    """Refuses value unless it is one of choices, naming the key."""
    if value not in choices:
        raise ValueError(f"{where} {key} must be one of {list(choices)}, got {value!r}")


def check_train_config(config: TrainConfig) -> None:
    """Refuses a TrainConfig with a value out of range, naming its [train] key, before anything is written."""
    w = "[train]"
    for key, low in (("steps", 1), ("batch_size", 1), ("num_train_timesteps", 1), ("checkpoint_every", 1),
                     ("sample_every", 0), ("keep", 0), ("seed", 0)):
        check_integer(w, key, getattr(config, key), low)
    check_real(w, "lr", config.lr, 0.0, open_low=True)
    check_choice(w, "lr_schedule", config.lr_schedule, ("constant", "cosine"))
    check_integer(w, "lr_decay_start", config.lr_decay_start, 0)
    check_real(w, "weight_decay", config.weight_decay, 0.0)
    check_real(w, "ema_decay", config.ema_decay, 0.0, 1.0, open_high=True)
    check_real(w, "grad_clip", config.grad_clip, 0.0)
    check_real(w, "cond_dropout", config.cond_dropout, 0.0, 1.0)
    check_choice(w, "amp", config.amp, ("none", "bf16", "fp16"))
    check_choice(w, "noise", config.noise, ("gaussian", "simplex"))
    check_choice(w, "prediction", config.prediction, ("eps", "x0", "v"))
    check_choice(w, "schedule", config.schedule, BETA_SCHEDULES)
    if not isinstance(config.out_dir, str | os.PathLike) or not os.fspath(config.out_dir):
        raise ValueError(f"{w} out_dir must be a directory path, got {config.out_dir!r}")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of step (from 0): a function of the step alone, so a resumed run continues the decay."""
    if config.lr_schedule == "constant" or step < config.lr_decay_start:
        return config.lr
    span = max(1, config.steps - config.lr_decay_start)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.lr_decay_start) / span)))


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named, refused (ValueError) when unknown, absent on this machine or unable to train."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; use cpu or cuda (cuda:N)") from None
    if dev.type == "meta":
        raise ValueError("cannot train on the meta device (it holds no data); use cpu or cuda")
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    if backend is None or not hasattr(backend, "is_available"):
        raise ValueError(f"device {str(device)!r} cannot train models here; use cpu or cuda")
    if not backend.is_available():
        raise ValueError(f"device {str(device)!r} is not available on this machine")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device {str(device)!r} is not available on this machine ({count} {dev.type} devices)")
    return dev


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_seed(seed: int, step: int, salt: int) -> int:
    """The seed of step `step`'s draws: salt 0 for the batch, timesteps and noise, 1 + rank for dropout."""
    return (seed * 1_000_003 + step) * 7 + salt


def train(model: torch.nn.Module, data: torch.Tensor, config: TrainConfig, *, cond: torch.Tensor | None = None,
          context: torch.Tensor | None = None, device: str | torch.device = "cpu", progress: bool = True,
          resume: bool = True, stop_after: int | None = None,
          resume_from: str | os.PathLike | None = None, loss_fn: Callable[..., torch.Tensor] | None = None,
          init: tuple[dict[str, torch.Tensor], int] | None = None) -> TrainState:
    """Trains model (a denoiser model(x, t, **conditions)) on data (N, C, *spatial) and returns the final
    step and the losses of this call. Conditions, one per sample: cond (N, C', *spatial), concatenated
    channels, and context (N, [tokens,] dim), cross-attended; config.cond_dropout drops them to 0.
    Resumes from config.out_dir's latest checkpoint (or the newest valid one, or resume_from: a name like
    step-00000400 or the path of its .json there); stop_after ends the call after that many steps (to test
    resuming) with a checkpoint, as SIGTERM does. Refuses bad settings and checkpoints before writing anything.
    loss_fn(net, x0, t, noise, generator) replaces the diffusion loss (the step's generator for further draws).
    init = (weights, step) starts a run that has no checkpoint yet from those weights (model and EMA; a fresh
    optimizer) at that step, so a trained prior is continued or fine-tuned with new batches."""
    from tqdm.auto import tqdm

    check_train_config(config)
    device = check_device(device)
    rank, world = _rank_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world} ranks")
    if config.noise == "simplex" and data.dim() != 4:
        raise ValueError(f"noise must be 'gaussian' or, for 2D images, 'simplex'; got {config.noise!r}")
    if cond is not None and (cond.shape[0] != data.shape[0] or cond.shape[2:] != data.shape[2:]):
        raise ValueError(f"cond {tuple(cond.shape)} must match data {tuple(data.shape)} but for its channels")
    if context is not None and context.shape[0] != data.shape[0]:
        raise ValueError(f"context has {context.shape[0]} rows for {data.shape[0]} samples")
    conditions = {k: v for k, v in (("cond", cond), ("context", context)) if v is not None}
    found = resume_checkpoint(config.out_dir, resume, resume_from)
    model = model.to(device)
    schedule = DiscreteSchedule.from_name(config.schedule, config.num_train_timesteps)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay)
    if found is None and init is not None:
        if (problem := state_mismatch(model.state_dict(), init[0])) is not None:
            raise ValueError(f"the init weights do not fit the model: {problem}")
        model.load_state_dict(init[0])
        ema.load_state_dict(init[0])
    step = restore_training(found, model, ema, opt) if found is not None else 0 if init is None else init[1]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    scaler = torch.amp.GradScaler(enabled=config.amp == "fp16" and device.type == "cuda")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    local = config.batch_size // world
    losses: list[torch.Tensor] = []  # read back every 10 steps, not every step
    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    bar = tqdm(total=end, initial=step, desc="train", disable=not progress or rank != 0)
    stop = _StopFlag()
    while step < end and not stop:
        g = torch.Generator().manual_seed(_step_seed(config.seed, step, 0))
        idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=g)
        t = torch.randint(0, schedule.num_train_timesteps, (config.batch_size,), generator=g)
        if config.noise == "simplex":
            noise = simplex_noise((config.batch_size, *data.shape[1:]), generator=g).to(data.dtype)
        else:
            noise = torch.randn((config.batch_size, *data.shape[1:]), generator=g, dtype=data.dtype)
        share = slice(rank * local, (rank + 1) * local)
        torch.manual_seed(_step_seed(config.seed, step, 1 + rank))  # dropout
        x0 = data[idx[share]].to(device)
        kwargs = {}
        for name, values in conditions.items():
            c = values[idx] if config.cond_dropout <= 0 else drop_condition(values[idx], config.cond_dropout, 0.0, g)
            kwargs[name] = c[share].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if loss_fn is not None:
                loss = loss_fn(net, x0, t[share].to(device), noise[share].to(device), g)
            else:
                loss = diffusion_loss(net, x0, schedule, prediction=config.prediction, t=t[share], noise=noise[share],
                                      model_kwargs=kwargs)
        opt.zero_grad(set_to_none=True)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(opt)
        scaler.update()
        ema.update(model)
        step += 1
        losses.append(loss.detach())
        bar.update(1)
        if step % 10 == 0 or step == end:
            bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
        if stop:  # SIGTERM (a preempted job, a scheduler's time limit): keep this step, then stop
            bar.write(f"train: SIGTERM at step {step}; checkpointing and stopping (rerun to resume)")
        if rank == 0 and (step % config.checkpoint_every == 0 or step == end or stop):
            _save(config, step, model, ema, opt)
        if rank == 0 and config.sample_every > 0 and step % config.sample_every == 0:
            sample_figure(model, ema, schedule, config, tuple(data.shape[1:]), step,
                          {k: v[:8].to(device) for k, v in conditions.items()})
    bar.close()
    stop.restore()
    if world > 1:
        dist.barrier()
    return TrainState(step, torch.stack(losses).tolist() if losses else [])


class _StopFlag:
    """True once SIGTERM arrived during training (torchrun and batch schedulers send it to every process
    before killing a job): the loop then checkpoints the step just finished and returns, instead of
    losing everything since the last periodic checkpoint. restore() puts the previous handler back."""

    def __init__(self) -> None:
        self.raised, self.previous = False, None
        with contextlib.suppress(ValueError):  # not the main thread: no handler, never set
            self.previous = signal.signal(signal.SIGTERM, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.raised = True

    def __bool__(self) -> bool:
        return self.raised

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def sample_figure(model: torch.nn.Module, ema: EMA, schedule: DiscreteSchedule, config: TrainConfig,
                  shape: tuple[int, ...], step: int, conditions: dict[str, torch.Tensor] | None = None, n: int = 8,
                  steps: int = 25) -> None:
    """A grid of n DDIM samples from the EMA weights (channel 0; the middle slice of volumes), x0 clipped
    to [-1, 1], written to out_dir/samples/step-<step>.png; the training model is left untouched. A
    conditional model samples one image per given condition."""
    import copy
    from pathlib import Path

    from mridpm.dpm import sample_ddim
    from mridpm.figures import grid, write_png
    from mridpm.ops import randn
    from mridpm.random import Generator

    shadow = copy.deepcopy(model).eval()
    ema.copy_to(shadow)
    device = next(model.parameters()).device
    gen = Generator(config.seed)
    n = next(iter(conditions.values())).shape[0] if conditions else n
    with torch.no_grad():
        x = sample_ddim(shadow, randn((n, *shape), generator=gen, device=device), schedule, steps=steps,
                        generator=gen, prediction=config.prediction, clip=(-1.0, 1.0),
                        model_kwargs=conditions or None)
    images = x[:, 0]
    while images.dim() > 3:
        images = images.select(1, images.shape[1] // 2)
    write_png(Path(config.out_dir) / "samples" / f"step-{step:08d}.png", grid(images.clamp(-1, 1), columns=n))


def _save(config: TrainConfig, step: int, model: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> None:
    optim_tensors, optim_rest = flatten_optimizer(opt.state_dict())
    meta: dict[str, Any] = {"config": dataclasses.asdict(config), "optim": optim_rest}
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        meta["model"] = {"class": type(model).__name__, "config": model_config.to_dict()}
    save_checkpoint(config.out_dir, step, {"model": model.state_dict(), "ema": ema.state_dict(),
                                           "optim": optim_tensors}, meta, keep=config.keep)


def init_distributed() -> tuple[int, int]:
    """Joins the process group torchrun describes (gloo on CPUs, NCCL with GPUs); (rank, world)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()
