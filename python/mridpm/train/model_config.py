"""The [model] table of a run configuration or a prior's card as a checked UNetConfig: what building
the network needs, refused with one line naming the key (shared by `mridpm train` and load_prior)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mridpm.nets.unet import UNetConfig
from mridpm.train.trainer import check_choice, check_integer, check_real


def check_model_config(cfg: UNetConfig, where: str = "[model]") -> None:
    """Refuses a UNetConfig that cannot be built, or would be built other than it says, naming the key."""
    check_choice(where, "dims", cfg.dims, (2, 3))  # type: ignore[arg-type]
    for key, low in (("in_channels", 1), ("channels", 1), ("num_res_blocks", 0), ("heads", 1), ("groups", 1),
                     ("cond_channels", 0), ("num_classes", 0), ("context_dim", 0)):
        check_integer(where, key, getattr(cfg, key), low)
    if cfg.out_channels is not None:
        check_integer(where, "out_channels", cfg.out_channels, 1)
    mult, levels = cfg.channel_mult, len(cfg.channel_mult)
    if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
        raise ValueError(f"{where} channel_mult must be a non-empty list of integers >= 1, got {list(mult)}")
    if any(isinstance(lv, bool) or not isinstance(lv, int) or not 0 <= lv < levels for lv in cfg.attention_levels):
        raise ValueError(f"{where} attention_levels must be levels in [0, {levels - 1}] (one per channel_mult "
                         f"entry), got {list(cfg.attention_levels)}")
    widths = sorted({cfg.channels} | {cfg.channels * m for m in mult})
    if bad := [w for w in widths if w % cfg.groups]:
        raise ValueError(f"{where} groups = {cfg.groups} must divide every channel width (channels * channel_mult "
                         f"= {widths}); it does not divide {bad[0]}")
    attended = sorted({cfg.channels * mult[lv] for lv in (*cfg.attention_levels, levels - 1)})
    if bad := [w for w in attended if w % cfg.heads]:
        raise ValueError(f"{where} heads = {cfg.heads} must divide the widths with attention ({attended}); "
                         f"it does not divide {bad[0]}")
    check_real(where, "dropout", cfg.dropout, 0.0, 1.0, open_high=True)
    check_choice(where, "embedding", cfg.embedding, ("sinusoidal", "fourier"))
    if cfg.embedding == "fourier" and cfg.channels % 2:
        raise ValueError(f"{where} channels must be even with embedding = 'fourier', got {cfg.channels}")
    check_real(where, "time_scale", cfg.time_scale, 0.0, open_low=True)


def model_config(table: dict[str, Any], where: str = "[model]") -> UNetConfig:
    """The checked UNetConfig of a [model] table (or a prior's model entry)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of UNetConfig fields, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(UNetConfig)}
    if unknown := set(table) - names:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    try:
        cfg = UNetConfig.from_dict(table)
    except TypeError as err:  # e.g. channel_mult = 2
        raise ValueError(f"{where}: {err}") from None
    check_model_config(cfg, where)
    return cfg
