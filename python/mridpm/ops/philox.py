"""Reference Philox4x32-10 normals in plain PyTorch: the ground truth for every backend's noise.

Element i uses counter (lo32(offset+i), hi32(offset+i), 0, 0) and key (lo32(seed), hi32(seed));
the first two words become a normal by Box-Muller, exactly as Triton's tl.randn computes it.
32-bit words live in int64 tensors; products are split so that nothing overflows.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of the 64-bit product of 32-bit words a and constant b."""
    lo_part = (a & 0xFFFF) * b  # < 2**48
    hi_part = (a >> 16) * b  # < 2**48
    low = (((hi_part & 0xFFFF) << 16) + lo_part) & _M32
    high = ((hi_part + (lo_part >> 16)) >> 16) & _M32
    return high, low


def philox4x32(c: tuple[torch.Tensor, ...], key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 (Salmon et al. 2011) on four 32-bit counter words and a two-word key."""
    c0, c1, c2, c3 = c
    k0, k1 = key
    for _ in range(10):
        hi_b, lo_b = _mulhilo(c2, _ROUND_B)
        hi_a, lo_a = _mulhilo(c0, _ROUND_A)
        c0, c2, c1, c3 = hi_b ^ c1 ^ k0, hi_a ^ c3 ^ k1, lo_b, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def philox_words(seed: int | torch.Tensor, counters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First two output words for int64 counters in [0, 2**63), as tl.randint4x makes them."""
    zero = torch.zeros_like(counters)
    words = philox4x32((counters & _M32, (counters >> 32) & _M32, zero, zero), (seed & _M32, (seed >> 32) & _M32))
    return words[0], words[1]


def uniform_from_words(w: torch.Tensor) -> torch.Tensor:
    """Triton's uint_to_uniform_float: a 32-bit word read as int32, folded to [0, 2**31), scaled."""
    folded = torch.where(w >= 1 << 31, _M32 - w, w)
    return folded.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)


def philox_randn(seed: int, offset: int, shape: tuple[int, ...], device: torch.device | str = "cpu",
                 state: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 normals for counters offset .. offset + numel - 1, laid out in shape. state, an int64
    (seed, base offset) tensor, replaces seed and adds to offset without reading it back to the host."""
    n = 1
    for s in shape:
        n *= s
    counters = offset + torch.arange(n, dtype=torch.int64, device=device)
    key: int | torch.Tensor = seed % (1 << 64)
    if state is not None:
        key, counters = state[0], counters + state[1]  # int64 bits: the words below are the same
    w0, w1 = philox_words(key, counters)
    u1 = torch.clamp_min(uniform_from_words(w0), 1.0e-7)
    th = torch.tensor(6.283185307179586, dtype=torch.float32) * uniform_from_words(w1)
    # log and cos in float64, rounded once: the float32 answer every backend approximates
    # to about an ulp. (torch 2.13's float32 log is sometimes 100x less accurate on its
    # first call in a process, which made this reference flaky.)
    log_u1 = torch.log(u1.double()).float()
    cos_th = torch.cos(th.double()).float()
    return (torch.sqrt(-2.0 * log_u1) * cos_th).reshape(shape)
