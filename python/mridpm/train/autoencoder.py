"""Training the KL autoencoder of a latent diffusion model: L1 reconstruction plus a small KL term
(Rombach et al. 2022), then the latent scale factor that brings the latents to unit variance."""

from __future__ import annotations

import torch

from mridpm.nets.autoencoder import KLAutoencoder


def train_autoencoder(model: KLAutoencoder, images: torch.Tensor, *, steps: int = 500, batch_size: int = 16,
                      lr: float = 1e-3, kl_weight: float = 1e-6, seed: int = 0, progress: bool = True) -> list[float]:
    """Fits model to images (N, C, *spatial), sets its scale_factor to 1 / std of the latent means, and
    returns the per-step losses. Every draw of step s comes from a generator seeded by (seed, s)."""
    from tqdm.auto import tqdm

    if images.dim() != model.config.dims + 2 or images.shape[1] != model.config.in_channels:
        raise ValueError(f"images must be (N, {model.config.in_channels}, *{model.config.dims} spatial), "
                         f"got {tuple(images.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for step in tqdm(range(steps), desc="autoencoder", disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        batch = images[torch.randint(0, images.shape[0], (batch_size,), generator=g)].to(device)
        loss, _ = model.loss(batch, kl_weight, generator=g if device.type == "cpu" else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        z = torch.cat([model.encode(images[i:i + 64].to(device))[0] for i in range(0, images.shape[0], 64)])
    model.config.scale_factor = float(1.0 / z.std().clamp_min(1e-6))
    return torch.stack(losses).tolist()
