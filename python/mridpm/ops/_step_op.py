"""The fused step registered with torch.library, so torch.compile(fullgraph=True) keeps it in one graph."""

from __future__ import annotations

import torch

from mridpm.ops._contract import WRITE_X0
from mridpm.ops._step_launch import launch


@torch.library.custom_op("mridpm::fused_step", mutates_args=())
def fused_step_op(inputs: list[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
                  backend: str, rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op: returns (out, x0); x0 is empty unless flags ask to write it."""
    out = torch.empty_like(inputs[0], memory_format=torch.contiguous_format)
    x0 = torch.empty_like(out) if flags & WRITE_X0 else out.new_empty(0)
    launch(backend, inputs, params, out, x0 if flags & WRITE_X0 else None, seed, offset, flags, rng)
    return out, x0


@fused_step_op.register_fake
def _(inputs: list[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
      backend: str, rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty_like(inputs[0], memory_format=torch.contiguous_format)
    return out, (torch.empty_like(out) if flags & WRITE_X0 else out.new_empty(0))
