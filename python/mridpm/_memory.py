"""Memory estimates made before the work starts, so an option that would need 24 GB is refused
with the number instead of growing until the kernel kills the process."""

from __future__ import annotations

import os
from typing import Any

import torch

_LIVE = 8  # activations of one level alive at once in a no-grad UNet pass (input, skip, block temporaries, norms)


def available(device: str | torch.device = "cpu") -> int:
    """Bytes that can still be allocated on device (CPU: the kernel's MemAvailable)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def unet_bytes(config: Any, batch: int, size: tuple[int, ...]) -> int:
    """Bytes of one no-grad float32 pass of a UNet with config on (batch, C, *size), an upper bound:
    at every level the skip connections kept for the decoder plus the activations alive at once,
    and the attention matrices of the attention levels."""
    pixels = 1
    for n in size:
        pixels *= int(n)
    total = 0
    for level, mult in enumerate(config.channel_mult):
        at = pixels // (2 ** len(size)) ** level
        total += config.channels * mult * at * (config.num_res_blocks + 1 + _LIVE)
        if level in tuple(config.attention_levels):
            total += config.heads * at * at
    return 4 * batch * total


def require(nbytes: int, what: str, device: str | torch.device = "cpu") -> None:
    """Refuses (ValueError naming both numbers) work that would need more than the free memory."""
    free = available(device)
    if nbytes > free:
        raise ValueError(f"{what} would need about {nbytes / 2**30:.1f} GiB of memory, more than the "
                         f"{free / 2**30:.1f} GiB available; ask for less")
