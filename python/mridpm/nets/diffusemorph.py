"""The DiffuseMorph network (Kim et al. 2022): a conditional diffusion UNet that denoises the fixed
image given (moving, fixed), and a small deformation UNet that turns its last decoder features, eps
output and the pair into a displacement field (mridpm.tasks.registration registers with it,
mridpm.train.registration trains it)."""

from __future__ import annotations

import torch
from torch import nn

from mridpm.nets.unet import UNet, UNetConfig


class DiffuseMorph(nn.Module):
    """model(x_t, t, moving, fixed) -> (eps, field): config is the diffusion UNet's (in_channels 1,
    cond_channels 2: moving and fixed); config.extra may set the deformation UNet's deform_channels (16)
    and deform_mult ([1, 2, 2]). data: the [data] table it was trained with (set by load_registration)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.in_channels != 1 or config.cond_channels != 2 or config.out_channels not in (None, 1):
            raise ValueError("a DiffuseMorph diffusion UNet has in_channels = 1, cond_channels = 2 (moving, fixed) "
                             f"and one output channel; got {config.in_channels}, {config.cond_channels}, "
                             f"{config.out_channels}")
        self.config, self.data = config, {}
        self.diffusion = UNet(config)
        width = config.channels * config.channel_mult[0]
        extra = config.extra
        self.deform = UNet(UNetConfig(dims=config.dims, in_channels=width + 3, out_channels=config.dims,
                                      channels=int(extra.get("deform_channels", 16)),
                                      channel_mult=tuple(extra.get("deform_mult", (1, 2, 2))), num_res_blocks=1,
                                      attention_levels=(), groups=config.groups))
        self._features: list[torch.Tensor] = []
        self.diffusion.out.register_forward_pre_hook(lambda _, args: self._features.append(args[0]))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, moving: torch.Tensor, fixed: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self._features.clear()
        eps = self.diffusion(x_t, t, cond=torch.cat([moving, fixed], 1))
        field = self.deform(torch.cat([self._features.pop(), eps, moving, fixed], 1), torch.zeros(x_t.shape[0]))
        return eps, field
