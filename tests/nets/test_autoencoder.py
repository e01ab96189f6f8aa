"""The KL autoencoder: shapes in 2D and 3D, and it learns to reconstruct."""

import pytest
import torch

from mridpm.nets.autoencoder import AutoencoderConfig, KLAutoencoder


def test_shapes_and_latent_scaling():
    ae = KLAutoencoder(dims=3, channels=8, channel_mult=(1, 2), latent_channels=2, groups=4, scale_factor=0.5)
    x = torch.randn(2, 1, 8, 4, 6)
    mean, logvar = ae.encode(x)
    assert mean.shape == logvar.shape == (2, 2, 4, 2, 3)
    assert ae.decode(mean).shape == x.shape
    torch.testing.assert_close(ae.to_latent(x), 0.5 * mean)
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.randn(1, 1, 5, 4, 4))
    assert AutoencoderConfig.from_dict(ae.config.to_dict()) == ae.config


def test_learns_to_reconstruct_smooth_images():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centers = torch.rand(8, 2, generator=g) - 0.5
    data = torch.stack([torch.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 0.1) for c in centers])[:, None]
    ae = KLAutoencoder(channels=8, channel_mult=(1, 2), latent_channels=2, num_res_blocks=1, groups=4)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    first = float(ae.loss(data, generator=torch.Generator().manual_seed(1))[0].detach())
    for step in range(120):
        loss, _ = ae.loss(data, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = (ae.decode(ae.encode(data)[0]) - data).abs().mean()
    assert float(err) < 0.25 * first and float(err) < 0.05
