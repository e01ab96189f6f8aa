"""Self-supervised denoising of a series of noisy volumes of one anatomy (DWI directions, repetitions)
after DDM2 (Xiang et al. 2023), trained on the noisy series only: Stage I, a J-invariant UNet that
predicts volume v from its K nearest other volumes (noise independent between volumes, so it learns
E[M_v | others]; for magnitude images E[M_v^2 | others] = A^2 + 2 sigma^2, whose root after taking off
2 sigma^2 is free of the Rician bias that E[M_v | others] keeps in dark regions). Both networks are told
which volume they work on (a class label: each volume has its own contrast). Stage II, each volume's
noise std from its Stage I residual and the diffusion timestep t* of that level; Stage III, a
conditional DPM trained on the Stage I outputs, run by DDIM from x_t* = sqrt(abar) X_v to 0 (X_v with
its Rician bias taken off, so that its noise is zero-mean as x_t*'s)."""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as nnf
from tqdm.auto import tqdm

from mridpm.dpm.losses import diffusion_loss
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.priors import Prior
from mridpm.nets.unet import UNet, UNetConfig
from mridpm.tasks._common import ddim, timesteps_from
from mridpm.tasks.enhancement import matching_timestep
from mridpm.train.checkpoint import flatten_optimizer, read_checkpoint, restore_training, save_checkpoint
from mridpm.train.ema import EMA

SAVE_EVERY = 100  # training steps between checkpoints (with a work_dir)


@dataclass
class DDM2Config:
    """Training and sampling settings; the step counts suit 64x64 series on two CPU cores (minutes)."""

    neighbours: int = 7
    stage1_steps: int = 600
    stage3_steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    sample_steps: int = 10
    seed: int = 0
    ema_decay: float = 0.995
    noise: str = "rician"  # magnitude images; "gaussian": real-valued noise (Stage I regresses M, not M^2)


@dataclass
class DDM2Result:
    """denoised and stage1 (V, S, H, W) in [0, 1]; per volume the noise std sigma (V,) and timestep t_star (V,)."""

    denoised: torch.Tensor
    stage1: torch.Tensor
    sigma: torch.Tensor
    t_star: torch.Tensor


def normalise_series(series: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(series / its 99.9th percentile clipped to [0, 1], that percentile): the range ddm2_denoise takes."""
    x = check_series(series, unit=False)
    flat = x.flatten()
    scale = float(flat.kthvalue(max(1, math.ceil(0.999 * flat.numel()))).values)
    scale = scale if scale > 0 else float(flat.max())
    return (x / scale).clamp(0, 1), scale


def check_series(series: object, unit: bool = True) -> torch.Tensor:
    """series as a float32 (V, S, H, W) tensor, V >= 2, finite, not all zero (and in [0, 1] when unit)."""
    if not isinstance(series, torch.Tensor) or series.is_complex() or not series.is_floating_point():
        got = getattr(series, "dtype", type(series).__name__)
        raise ValueError(f"the series must be a real floating-point tensor, got {got}")
    if series.dim() != 4 or series.shape[0] < 2 or min(series.shape[2:]) < 4 or series.shape[1] < 1:
        raise ValueError(f"the series must be (V >= 2 volumes, S slices, H >= 4, W >= 4), got {tuple(series.shape)}")
    if not bool(torch.isfinite(series).all()):
        raise ValueError("the series contains NaN or Inf")
    if not bool((series != 0).any()):
        raise ValueError("the series is all zero")
    if unit and (float(series.min()) < 0 or float(series.max()) > 1):
        raise ValueError(f"the series must lie in [0, 1] (see normalise_series), got values in "
                         f"[{float(series.min()):.3g}, {float(series.max()):.3g}]")
    return series.detach().float().cpu()


def neighbours(volumes: int, v: int, k: int) -> list[int]:
    """The k volume indices nearest v, v excluded (ties: the lower one first)."""
    return sorted((i for i in range(volumes) if i != v), key=lambda i: (abs(i - v), i))[:k]


def _draw(x: torch.Tensor, k: int, batch: int, g: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of (target volume v of slice s (B, 1, H, W), v's k neighbours of s (B, k, H, W), v (B,)): the
    same volumes in the same channels as at prediction, so the index tells the network what each channel holds."""
    v_count, s_count = x.shape[:2]
    v = torch.randint(0, v_count, (batch,), generator=g)
    s = torch.randint(0, s_count, (batch,), generator=g)
    table = torch.tensor([neighbours(v_count, i, k) for i in range(v_count)])
    return x[v, s][:, None], x[table[v], s[:, None]], v


def _data_key(x: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] + f"-{tuple(x.shape)}"


def _train(model: UNet, loss: Callable[[torch.Generator], torch.Tensor], steps: int, config: DDM2Config,
           run_dir: str | None, key: str, desc: str, progress: bool) -> EMA:
    """Trains model with AdamW for `steps` steps of loss(generator), with an EMA; with run_dir, resumes
    from its checkpoint (the same data only) and saves one every SAVE_EVERY steps and at the end."""
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    ema, start = EMA(model, config.ema_decay), 0
    if run_dir is not None and (found := read_checkpoint(run_dir, keys=("config", "optim", "data"),
                                                         groups=("model", "ema", "rng"))) is not None:
        if found.meta["data"] != key:
            raise ValueError(f"{run_dir} holds a run on another series ({found.meta['data']}); choose another work_dir")
        start = restore_training(found, model, ema, opt)
        g.set_state(found.tensors["rng"]["state"])
    model.train()
    for step in tqdm(range(start, steps), desc=desc, initial=start, total=steps, disable=not progress, leave=False):
        opt.zero_grad(set_to_none=True)
        loss(g).backward()
        opt.step()
        ema.update(model)
        if run_dir is not None and ((step + 1) % SAVE_EVERY == 0 or step + 1 == steps):
            optim, rest = flatten_optimizer(opt.state_dict())
            tensors = {"model": model.state_dict(), "ema": ema.state_dict(), "optim": optim,
                       "rng": {"state": g.get_state()}}
            meta = {"config": asdict(config), "optim": rest, "data": key}
            # a fresh context: written at once even inside all_or_none(), so a killed run resumes from it
            contextvars.Context().run(save_checkpoint, run_dir, step + 1, tensors, meta)
    model.eval()
    return ema


def _pad(x: torch.Tensor) -> torch.Tensor:
    """x (..., H, W) reflect-padded at the bottom and right to multiples of 4 (the UNets' downsampling)."""
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    return nnf.pad(flat, (0, -w % 4, 0, -h % 4), mode="reflect").reshape(*x.shape[:-2], h + -h % 4, w + -w % 4)


def stage1_net(k: int, volumes: int) -> UNet:
    """The small J-invariant UNet of Stage I: k other volumes and the missing one's index in, it out."""
    return UNet(UNetConfig(dims=2, in_channels=k, out_channels=1, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                           attention_levels=(), groups=8, num_classes=volumes))


def stage3_net(k: int, volumes: int) -> UNet:
    """The conditional eps-prediction UNet of Stage III, conditioned on k other noisy volumes and the index."""
    return UNet(UNetConfig(dims=2, in_channels=1, cond_channels=k, channels=32, channel_mult=(1, 2, 2),
                           num_res_blocks=1, attention_levels=(), groups=8, num_classes=volumes))


def _seeded(make: Callable[[int, int], UNet], k: int, volumes: int, seed: int) -> UNet:
    """make(k, volumes) with its initial weights drawn from seed, the global RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make(k, volumes)


@torch.no_grad()
def _predict(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, k: int
             ) -> torch.Tensor:
    """fn(volume v of every slice (S, 1, H, W), its k nearest other volumes (S, k, H, W), v (S,)) ->
    (S, 1, H, W), stacked over v."""
    s = x.shape[1]
    return torch.stack([fn(x[v][:, None], x[neighbours(x.shape[0], v, k)].transpose(0, 1),
                           torch.full((s,), v))[:, 0] for v in range(x.shape[0])])


def noise_sigma(series: torch.Tensor, stage1: torch.Tensor, floor: torch.Tensor | float = 0.1) -> torch.Tensor:
    """Per-volume noise std (V,) of series - stage1: 1.4826 MAD over the foreground (stage1 > floor, one
    floor or one per volume), or over every voxel where the foreground has fewer than 16."""
    out = []
    for x, d, f in zip(series, stage1, torch.as_tensor(floor).expand(len(series)), strict=True):
        r = (x - d)[d > f] if int((d > f).sum()) >= 16 else (x - d).flatten()
        out.append(1.4826 * (r - r.median()).abs().median())
    return torch.stack(out)


def amplitude(power: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The magnitude A (V, S, H, W) from E[M^2] = A^2 + 2 sigma^2 of Rician magnitudes M, sigma (V,) per volume
    (the second-moment bias correction dipy's Rician NLM uses)."""
    return (power - 2 * sigma[:, None, None, None] ** 2).clamp_min(0).sqrt()


def rician_sigma(series: torch.Tensor, power: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Per-volume noise std (V,) of a Rician magnitude series M given Stage I's E[M^2 | others]: the MAD of
    M - A over the voxels where A > 3 sigma (nearly Gaussian there), refined from the MAD over A > 0.1."""
    sigma = noise_sigma(series, power.clamp_min(0).sqrt())
    for _ in range(iterations):
        sigma = noise_sigma(series, amplitude(power, sigma), 3 * sigma)
    return sigma


def ddm2_denoise(series: torch.Tensor, config: DDM2Config | None = None, work_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> DDM2Result:
    """Denoises a noisy series (V, S, H, W) in [0, 1] by DDM2's three stages, trained on it alone; with
    work_dir, each stage's training is checkpointed there (stage1/, stage3/) and resumed when rerun."""
    cfg = config or DDM2Config()
    x = check_series(series)
    if cfg.neighbours < 1 or cfg.stage1_steps < 0 or cfg.stage3_steps < 0 or cfg.batch_size < 1 or cfg.sample_steps < 1:
        raise ValueError(f"neighbours, batch_size and sample_steps must be positive, step counts >= 0: {cfg}")
    if cfg.noise not in ("rician", "gaussian"):
        raise ValueError(f"noise must be 'rician' or 'gaussian', got {cfg.noise!r}")
    power = 2 if cfg.noise == "rician" else 1
    h, w = x.shape[-2:]
    xp, k, key = _pad(x), min(x.shape[0] - 1, cfg.neighbours), f"{_data_key(x)}-{cfg.noise}"
    run = (lambda name: None) if work_dir is None else (lambda name: os.path.join(os.fspath(work_dir), name))
    volumes = x.shape[0]
    net1 = _seeded(stage1_net, k, volumes, cfg.seed)

    def loss1(g: torch.Generator) -> torch.Tensor:
        target, others, v = _draw(xp, k, cfg.batch_size, g)
        return nnf.mse_loss(net1(others, torch.zeros(others.shape[0]), class_labels=v), target**power)

    _train(net1, loss1, cfg.stage1_steps, cfg, run("stage1"), key, "DDM2 stage I", progress).copy_to(net1)
    s1 = _predict(lambda _, c, v: net1(c, torch.zeros(c.shape[0]), class_labels=v), xp, k)
    if power == 2:  # s1 is E[M^2 | others]
        sigma = rician_sigma(x, s1[..., :h, :w])
        s1 = amplitude(s1, sigma)
    else:
        sigma = noise_sigma(x, s1[..., :h, :w])
    net3 = _seeded(stage3_net, k, volumes, cfg.seed + 1)
    prior = Prior(net3, DiscreteSchedule.from_name("linear", 1000), "eps", {"data_range": [-1.0, 1.0]})
    t_star = torch.tensor([matching_timestep(prior, 2 * float(s)) for s in sigma])
    # (V, S, 2, H, W): the Stage I outputs as the DPM's clean data, the noisy volumes as its conditions
    pairs = torch.stack([s1.clamp(0, 1), xp], 2) * 2 - 1

    def loss3(g: torch.Generator) -> torch.Tensor:
        i, others, v = _draw(pairs, k, cfg.batch_size, g)
        t = torch.randint(0, int(t_star.max()) + 1, (i.shape[0],), generator=g)
        return diffusion_loss(net3, i[:, 0, :1], prior.schedule, generator=g, t=t,
                              model_kwargs={"cond": others[:, :, 1], "class_labels": v})

    key3 = f"{key}-stage1:{cfg.stage1_steps}"  # Stage III's data: the Stage I outputs of that many steps
    ema = _train(net3, loss3, cfg.stage3_steps, cfg, run("stage3"), key3, "DDM2 stage III", progress)
    ema.copy_to(net3)

    def sample(noisy: torch.Tensor, cond: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t, i = int(t_star[int(v[0])]), int(v[0])
        if power == 2:  # x_t* needs zero-mean noise: take off the Rician bias E[M | A] - A ~ sqrt(A^2 + pi/2 s^2) - A
            a = s1[i][:, None]
            noisy = noisy - ((a.square() + math.pi / 2 * float(sigma[i]) ** 2).sqrt() - a)
        start = (noisy * 2 - 1) * math.sqrt(prior.schedule.alpha_bar(t))
        return ddim(prior, start, timesteps_from(prior.schedule, t, cfg.sample_steps), cond=cond * 2 - 1,
                    class_labels=v)

    out = (_predict(sample, xp, k) + 1) / 2
    return DDM2Result(out[..., :h, :w].clamp(0, 1), s1[..., :h, :w].clamp(0, 1), sigma, t_star)
