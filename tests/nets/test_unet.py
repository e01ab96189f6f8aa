"""UNet: shapes in 2D and 3D, every conditioning path reaches the output, gradients reach every weight."""

import pytest
import torch

from mridpm.nets.unet import UNet, UNetConfig, channels_to_complex, complex_to_channels

G = torch.Generator().manual_seed(0)


def _randomize(model):
    """Replaces the zero initialisation of residual branches so that every path carries signal."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().any():
                p.normal_(0, 0.05, generator=G)
    return model


def test_shapes_2d_and_3d():
    m2 = UNet(dims=2, in_channels=2, out_channels=3, channels=16, channel_mult=(1, 2, 2), attention_levels=(1, 2))
    assert m2(torch.randn(2, 2, 16, 24), torch.tensor([3.0, 500.0])).shape == (2, 3, 16, 24)
    m3 = UNet(dims=3, in_channels=1, channels=16, channel_mult=(1, 2), attention_levels=(1,))
    assert m3(torch.randn(2, 1, 8, 4, 6), 7).shape == (2, 1, 8, 4, 6)
    assert not m2(torch.randn(1, 2, 16, 24), 1.0).abs().any()  # the output layer starts at zero


def test_every_conditioning_path_changes_the_output():
    m = _randomize(UNet(dims=2, in_channels=1, channels=16, channel_mult=(1, 2), attention_levels=(1,),
                        cond_channels=2, num_classes=3, context_dim=4, embedding="fourier", time_scale=1.0))
    x, cond = torch.randn(2, 1, 8, 8, generator=G), torch.randn(2, 2, 8, 8, generator=G)
    labels, ctx = torch.tensor([0, 2]), torch.randn(2, 4, generator=G)
    base = m(x, torch.tensor([0.1, 0.5]), cond=cond, class_labels=labels, context=ctx)
    for changed in [
        m(x, torch.tensor([0.2, 0.5]), cond=cond, class_labels=labels, context=ctx),
        m(x, torch.tensor([0.1, 0.5]), cond=cond + 1, class_labels=labels, context=ctx),
        m(x, torch.tensor([0.1, 0.5]), cond=cond, class_labels=torch.tensor([1, 2]), context=ctx),
        m(x, torch.tensor([0.1, 0.5]), cond=cond, class_labels=None, context=ctx),  # the null class
        m(x, torch.tensor([0.1, 0.5]), cond=cond, class_labels=labels, context=ctx + 1),
    ]:
        assert not torch.allclose(changed[0], base[0], atol=1e-6)
    # the samples are independent: changing sample 0's inputs leaves sample 1 alone
    other = m(x, torch.tensor([0.1, 0.5]), cond=cond, class_labels=torch.tensor([1, 2]), context=ctx)
    torch.testing.assert_close(other[1], base[1])
    tokens = m(x, 0.3, cond=cond, class_labels=labels, context=torch.randn(2, 5, 4, generator=G))
    assert tokens.shape == base.shape


def test_gradients_reach_every_parameter():
    m = _randomize(UNet(dims=3, in_channels=2, channels=8, channel_mult=(1, 2), attention_levels=(1,),
                        num_classes=2, groups=4))
    x = torch.randn(2, 2, 4, 4, 4, generator=G)
    m(x, torch.tensor([1.0, 2.0]), class_labels=torch.tensor([0, 1])).square().mean().backward()
    for name, p in m.named_parameters():
        if name.startswith("class_emb"):  # only the rows of the labels used get gradients
            continue
        assert p.grad is not None and bool(p.grad.abs().sum() > 0) and bool(torch.isfinite(p.grad).all()), name


def test_complex_images_as_two_channels():
    z = torch.randn(2, 3, 4, 5, dtype=torch.complex64, generator=G)
    two = complex_to_channels(z)
    assert two.shape == (2, 6, 4, 5) and not two.is_complex()
    torch.testing.assert_close(channels_to_complex(two), z)


def test_config_round_trip_and_bad_input():
    cfg = UNetConfig(dims=3, channels=8, channel_mult=(1, 2), attention_levels=())
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    m = UNet(cfg)
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 1, 5, 4, 4), 1.0)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(1, 2, 4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="conditioning"):
        m(torch.randn(1, 1, 4, 4, 4), 1.0, cond=torch.randn(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="class"):
        m(torch.randn(1, 1, 4, 4, 4), 1.0, class_labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="one value per sample"):
        m(torch.randn(2, 1, 4, 4, 4), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="dims"):
        UNet(dims=4)
