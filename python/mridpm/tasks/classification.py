"""Classification with a diffusion autoencoder (Ijishakin et al. 2023): a semantic encoder, trained with
the diffusion decoder and a supervised contrastive term (mridpm.train.classification), maps a slice to a
unit-norm latent; its class is the nearer (by cosine) of the class prototypes, the mean latents of the
training slices. Counterfactuals explain a decision: the slice is DDIM-inverted with its own latent,
then decoded with the other class's prototype, and the difference shows what would change. Here the
classes are normal (0) and atrophied (1) MNI152 slices (mridpm.data.atrophy); the baseline is a CNN
of the encoder's architecture trained with cross-entropy on the same slices."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.diffae import DiffAE, Encoder


@dataclass
class Classifier:
    """A trained DiffAE, its training schedule and class prototypes (2, latent_dim), unit norm."""

    model: DiffAE
    schedule: DiscreteSchedule
    prototypes: torch.Tensor


def prototypes(model: DiffAE, images: torch.Tensor, labels: torch.Tensor, classes: int = 2) -> torch.Tensor:
    """(classes, latent_dim): the normalised mean latent of each class's images (N, 1, H, W) in [0, 1]."""
    if any(not bool((labels == c).any()) for c in range(classes)):
        raise ValueError(f"prototypes need images of every class 0..{classes - 1}")
    with torch.no_grad():
        z = torch.cat([model.encode(x) for x in images.split(256)])
    return F.normalize(torch.stack([z[labels == c].mean(0) for c in range(classes)]), dim=1)


def load_classifier(run: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """The EMA weights of a classification run's latest checkpoint (`mridpm train configs/classify64.toml`),
    with prototypes from its training slices."""
    from mridpm.train.classification import classification_data
    from mridpm.train.run import load_task_model, phantom_slices

    model, train_cfg = load_task_model(run, DiffAE, "classification", "configs/classify64.toml", device)
    schedule = DiscreteSchedule.from_name(train_cfg.get("schedule", "linear"),
                                          int(train_cfg.get("num_train_timesteps", 1000)))
    images, labels = classification_data(model.data, phantom_slices(model.data))
    return Classifier(model, schedule, prototypes(model, images.to(device), labels.to(device)))


def _unit_slices(images: torch.Tensor) -> torch.Tensor:
    """images (N, 1, H, W), checked finite, each slice scaled to peak 1 (as the training slices are)."""
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] == 0:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    if not bool(images.isfinite().all()):
        raise ValueError("images contain NaN or Inf")
    return images.float() / images.amax((2, 3), keepdim=True).clamp_min(1e-12)


def classify(model: DiffAE, images: torch.Tensor, protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N,), labels (N,)) of images (N, 1, H, W): score = cos(z, prototype 1) - cos(z, prototype 0)
    of each image's latent z, label 1 where it is positive."""
    x = _unit_slices(images).to(protos.device)
    with torch.no_grad():
        sims = model.encode(x) @ protos.T
    scores = sims[:, 1] - sims[:, 0]
    return scores, (scores > 0).long()


def counterfactual(clf: Classifier, images: torch.Tensor, target: torch.Tensor, *, steps: int = 20,
                   t_start: int = 400) -> torch.Tensor:
    """images (N, 1, H, W) as the target latent (latent_dim,) or (N, latent_dim) would have them: DDIM
    inversion to t_start with each image's own latent, then DDIM decoding with the target's; in [0, 1]."""
    from mridpm.dpm.discrete import invert_ddim, sample_ddim
    from mridpm.tasks._common import timesteps_from

    x = _unit_slices(images).to(target.device)
    ts = timesteps_from(clf.schedule, t_start, steps)
    net = clf.model

    def eps(latent: torch.Tensor) -> Any:
        return lambda x_t, t: net(x_t, t, latent=latent)[0]

    with torch.no_grad():
        x_t = invert_ddim(eps(net.encode(x)), x * 2 - 1, clf.schedule, timesteps=ts)
        out = sample_ddim(eps(target.expand(x.shape[0], -1)), x_t, clf.schedule, timesteps=ts, clip=(-1.0, 1.0))
    return ((out + 1) / 2).clamp(0, 1)


def train_cnn(images: torch.Tensor, labels: torch.Tensor, *, steps: int = 300, batch_size: int = 32,
              lr: float = 1e-3, seed: int = 0) -> Encoder:
    """The CNN baseline: an Encoder with one output (the logit of class 1) trained by Adam on binary
    cross-entropy over images (N, 1, H, W) in [0, 1] with labels (N,), seeded."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cnn = Encoder(1)
    opt = torch.optim.Adam(cnn.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        loss = F.binary_cross_entropy_with_logits(cnn(images[idx])[:, 0], labels[idx].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cnn.eval()


def evaluate_classification(clf: Classifier, zs: list[int], *, seed: int = 0, cnn_steps: int = 300,
                            cf_steps: int = 20, t_start: int = 400) -> tuple[list[dict[str, Any]], list]:
    """Rows {method, auroc, accuracy, seconds} of the DiffAE and the CNN baseline (trained here on the
    run's training slices) on normal and atrophied slices at held-out zs (new contrast, strength and
    deformation draws), and counterfactual panels of the first draw of each slice."""
    from mridpm.tasks.anomaly import auroc
    from mridpm.train.classification import classification_data
    from mridpm.train.run import phantom_slices

    data = clf.model.data
    x, y = classification_data({**data, "flip": False}, zs, seed=1000 + seed)
    start = time.perf_counter()
    scores, pred = classify(clf.model, x, clf.prototypes)
    rows = [{"method": "DiffAE (cosine to class prototypes)", "scores": scores, "pred": pred,
             "seconds": time.perf_counter() - start}]
    start = time.perf_counter()
    cnn = train_cnn(*classification_data(data, phantom_slices(data)), steps=cnn_steps, seed=seed)
    with torch.no_grad():
        logits = cnn(x)[:, 0]
    rows.append({"method": f"CNN baseline (cross-entropy, {cnn_steps} steps)", "scores": logits,
                 "pred": (logits > 0).long(), "seconds": time.perf_counter() - start})
    out = [{"task": "classification", "method": r["method"], "slices": len(y), "auroc": auroc(r["scores"], y.bool()),
            "accuracy": float((r["pred"] == y).float().mean()), "seconds": r["seconds"]} for r in rows]
    n = len(zs)
    normal, atrophied = x[:n], x[n:2 * n]  # the first contrast draw: normal slices, then atrophied ones
    kw = {"steps": cf_steps, "t_start": t_start}
    to_atrophy = counterfactual(clf, normal, clf.prototypes[1], **kw)
    to_normal = counterfactual(clf, atrophied, clf.prototypes[0], **kw)
    panels = [("normal", normal[:, 0]), ("as atrophied", to_atrophy[:, 0]), ("change", (to_atrophy - normal)[:, 0]),
              ("atrophied", atrophied[:, 0]), ("as normal", to_normal[:, 0]),
              ("change ", (to_normal - atrophied)[:, 0])]
    return out, panels
