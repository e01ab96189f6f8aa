"""Generation: unconditional 2D and 3D, label-map synthesis, slice-by-slice volumes, latent diffusion."""

import pytest
import torch

from mridpm.data.phantom import brain_slices, tissue_labels
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.autoencoder import AutoencoderConfig, KLAutoencoder
from mridpm.nets.priors import Prior, load_prior
from mridpm.nets.unet import UNet, UNetConfig
from mridpm.tasks import generation as gen
from mridpm.train.autoencoder import train_autoencoder
from mridpm.train.trainer import TrainConfig, train

SIZE = (32, 32)  # the tiny models of conftest.py


def _untrained(dims: int = 2, **kw) -> Prior:
    torch.manual_seed(0)
    model = UNet(UNetConfig(dims=dims, channels=8, channel_mult=(1, 2), attention_levels=(1,), **kw)).eval()
    return Prior(model, DiscreteSchedule.from_name("linear", 1000), "eps", {"data_range": [-1.0, 1.0]})


def test_unconditional_2d_with_the_bundled_prior_is_seeded_and_in_range():
    a = gen.generate("brain64", 2, steps=5, seed=3)
    b = gen.generate(load_prior("brain64"), 2, steps=5, seed=3)
    assert a.shape == (2, 1, 64, 64) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a[0], a[1])
    assert not torch.equal(a, gen.generate("brain64", 2, steps=5, seed=4))


def test_unconditional_3d():
    x = gen.generate(_untrained(dims=3), 2, shape=(4, 8, 8), steps=3)
    assert x.shape == (2, 1, 4, 8, 8) and bool(torch.isfinite(x).all()) and x.abs().max() <= 1


def test_synthesis_follows_the_label_map_where_it_changes(synth_prior):
    labels = tissue_labels([85], SIZE)
    changed = labels.clone()
    region = (slice(None), slice(10, 20), slice(6, 16))
    changed[region] = torch.where(labels[region] == 3, 1, labels[region])  # white matter -> CSF
    where = changed != labels
    assert where.sum() > 10
    a = gen.synthesize(synth_prior, labels, steps=10, seed=0)
    b = gen.synthesize(synth_prior, changed, steps=10, seed=0)
    assert a.shape == (1, 1, *SIZE)
    diff = (a - b).abs()[:, 0]
    assert diff[where].mean() > 5 * diff[~where].mean()
    assert (b - a)[:, 0][where].mean() < -0.3  # CSF is darker than white matter on T1


def test_slice_by_slice_volumes_stay_consistent(volume_prior):
    first = brain_slices("T1", [80], SIZE)[:, None] * 2 - 1
    vol = gen.generate_volume(volume_prior, 4, first=first, steps=10, seed=0)
    assert vol.shape == (1, 1, 4, *SIZE)
    neighbours = (vol[:, :, 1:] - vol[:, :, :-1]).abs().mean()
    independent = gen.generate_volume(volume_prior, 2, steps=10, seed=5)  # null condition: unrelated slices
    other = (independent[:, :, 0] - vol[:, :, 0]).abs().mean()
    assert neighbours < 0.5 * other
    assert (vol[:, :, 0] - first).abs().mean() < 0.15  # the first slice continues `first`


def test_latent_diffusion_with_covariates_cross_attended(tmp_path):
    z = list(range(50, 120, 3))
    images = brain_slices("T1", z, (16, 16))[:, None] * 2 - 1
    cov = gen.phantom_covariates(z, (16, 16))
    assert cov.shape == (len(z), 2) and cov[:, 0].min() < 0 < cov[:, 0].max()
    torch.manual_seed(0)
    ae = KLAutoencoder(AutoencoderConfig(channels=8, channel_mult=(1, 2), latent_channels=2))
    losses = train_autoencoder(ae, images, steps=60, batch_size=8, lr=3e-3, progress=False)
    assert losses[-1] < losses[0] and ae.config.scale_factor > 0
    with torch.no_grad():
        latents = ae.to_latent(images)
    assert latents.shape == (len(z), 2, 8, 8) and abs(float(latents.std()) - 1) < 0.05
    unet = UNet(UNetConfig(in_channels=2, channels=8, channel_mult=(1, 2), attention_levels=(0, 1), context_dim=2))
    train(unet, latents, TrainConfig(steps=40, batch_size=8, lr=2e-3, out_dir=str(tmp_path), checkpoint_every=10**6),
          context=cov, progress=False, resume=False)
    prior = Prior(unet.eval(), DiscreteSchedule.from_name("linear", 1000), "eps",
                  {"data_range": [-1e9, 1e9], "image_size": [8, 8]})
    ldm = gen.LatentDiffusion(ae.eval(), prior)
    a = ldm.generate(cov[:2], steps=5, seed=0)
    b = ldm.generate(-cov[:2], steps=5, seed=0)
    assert a.shape == (2, 1, 16, 16) and bool(torch.isfinite(a).all())
    assert (a - b).abs().max() > 1e-4  # the covariates reach the output through cross-attention
    with pytest.raises(ValueError, match="covariates"):
        ldm.generate(cov[:2, :1])


def test_bad_inputs(synth_prior):
    with pytest.raises(ValueError, match="positive integer"):
        gen.generate("brain64", 0)
    with pytest.raises(ValueError, match="conditioning channels"):
        gen.generate("brain64", 1, cond=torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="conditioning channels"):
        gen.generate(synth_prior, 1)
    with pytest.raises(ValueError, match="cond must be"):
        gen.generate(synth_prior, 2, cond=torch.zeros(1, 4, *SIZE))
    with pytest.raises(ValueError, match="NaN"):
        gen.generate(synth_prior, 1, cond=torch.full((1, 4, *SIZE), float("nan")))
    with pytest.raises(ValueError, match="labels must be integers"):
        gen.synthesize(synth_prior, torch.full((1, *SIZE), 7))
    with pytest.raises(ValueError, match="guidance needs"):
        gen.generate("brain64", 1, guidance_scale=2.0)
    with pytest.raises(ValueError, match="previous slice"):
        gen.generate_volume("brain64", 3)
    with pytest.raises(ValueError, match="context"):
        gen.generate("brain64", 1, context=torch.zeros(1, 2))
