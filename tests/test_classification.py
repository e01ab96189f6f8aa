"""Diffusion-autoencoder classification: simulated atrophy, the AUROC, the supervised contrastive
loss, DiffAE training, classification by prototypes and counterfactuals, and the CLI's one-line errors."""

import itertools

import pytest
import torch

from mridpm.data.atrophy import atrophy, atrophy_field
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.diffae import DiffAE
from mridpm.nets.unet import UNetConfig
from mridpm.tasks.anomaly import auroc
from mridpm.tasks.classification import Classifier, classify, counterfactual, prototypes, train_cnn
from mridpm.train.classification import JointLoss, labelled_tensor, supcon_loss

TINY = UNetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(), groups=4,
                  extra={"latent_dim": 8, "encoder_channels": 8, "encoder_levels": 3})


@pytest.fixture(scope="module")
def slices():
    pytest.importorskip("nilearn")
    from mridpm.data.phantom import brain_slices, tissue_labels

    zs = [70, 85]
    return brain_slices("T1", zs, (64, 64))[:, None], tissue_labels(zs, (64, 64))


def test_atrophy_enlarges_the_ventricles_and_strength_zero_is_identity(slices):
    image, labels = slices
    assert torch.allclose(atrophy(image, labels, 0.0), image, atol=1e-5)
    assert atrophy_field(labels, 0.0).abs().max() == 0
    h, w = labels.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centre = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2).sqrt() < h / 5  # the ventricles lie near the centre
    csf = (labels == 1).float()[:, None]
    areas = torch.stack([(atrophy(csf, labels, s)[:, 0] * centre).sum((1, 2)) for s in (0.0, 0.25, 0.5, 0.75, 1.0)])
    assert bool((areas.diff(dim=0) > 0).all()), areas
    grey = (labels == 2).float()[:, None]
    assert bool((atrophy(grey, labels, 1.0).sum((1, 2, 3)) < grey.sum((1, 2, 3))).all())  # thinner cortex


def test_atrophy_refuses_bad_strength(slices):
    with pytest.raises(ValueError, match="strength"):
        atrophy_field(slices[1], 1.5)


def test_auroc_matches_a_pair_count():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40,), generator=g).float()  # many ties
    truth = torch.rand(40, generator=g) < 0.4
    pos, neg = scores[truth].tolist(), scores[~truth].tolist()
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert auroc(scores, truth) == pytest.approx(brute / (len(pos) * len(neg)))


def test_supcon_is_lower_for_separated_latents():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    mixed = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=1)
    apart = torch.nn.functional.normalize(torch.eye(4)[labels * 2] + 0.05 * torch.randn(6, 4, generator=g), dim=1)
    assert supcon_loss(apart, labels) < supcon_loss(mixed, labels)
    assert supcon_loss(mixed, torch.arange(6)) == 0  # no positives


def test_tiny_diffae_trains():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 16, 16, generator=g)
    labels = torch.tensor([0, 1] * 4)
    images[labels == 1] *= 0.3
    data = labelled_tensor(images, labels)
    net = DiffAE(TINY)
    loss_fn = JointLoss(DiscreteSchedule.from_name("linear", 1000))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    t, noise = torch.randint(0, 1000, (8,), generator=g), torch.randn(8, 2, 16, 16, generator=g)
    losses = []
    for _ in range(20):
        loss = loss_fn(net, data, t, noise, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_diffae_refuses_other_conditioning_and_two_inputs():
    with pytest.raises(ValueError, match="DiffAE decoder"):
        DiffAE(UNetConfig(cond_channels=1))
    net = DiffAE(TINY)
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="one of them"):
        net(x, 0, image=x, latent=torch.zeros(2, 8))


def test_prototypes_of_separated_latents_classify_correctly():
    net = DiffAE(TINY)
    protos = torch.eye(8)[:2]
    net.encode = lambda x: torch.nn.functional.normalize(  # type: ignore[method-assign]
        torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1) @ protos.flip(0), dim=1)
    images = torch.rand(6, 1, 16, 16)
    images[:3] *= 0.2  # dim images: latent near prototype 0
    images[:3, :, 0, 0] = 1.0  # (each slice is scaled to its peak)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    p = prototypes(net, images, labels)
    scores, pred = classify(net, images, p)
    assert scores.shape == pred.shape == (6,)
    assert pred.tolist() == labels.tolist()


def test_counterfactual_keeps_shape_and_is_finite():
    torch.manual_seed(0)
    net = DiffAE(TINY).eval()
    clf = Classifier(net, DiscreteSchedule.from_name("linear", 1000), torch.nn.functional.normalize(torch.randn(2, 8)))
    x = torch.rand(3, 1, 16, 16)
    out = counterfactual(clf, x, clf.prototypes[1], steps=4, t_start=200)
    assert out.shape == x.shape and bool(out.isfinite().all()) and 0 <= float(out.min()) <= float(out.max()) <= 1


def test_cnn_baseline_learns_a_separable_toy_set():
    images = torch.rand(32, 1, 16, 16)
    labels = torch.arange(32) % 2
    images[labels == 1, :, 4:12, 4:12] = 0.0  # a dark centre: the "enlarged ventricle"
    cnn = train_cnn(images, labels, steps=40, batch_size=16, lr=3e-3)
    with torch.no_grad():
        assert auroc(cnn(images)[:, 0], labels.bool()) > 0.9


def test_classify_cli_one_line_errors(tmp_path, capsys):
    from mridpm import cli

    assert cli.main(["classify", "x.nii.gz", "--model", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "must name a JSON file" in capsys.readouterr().err
