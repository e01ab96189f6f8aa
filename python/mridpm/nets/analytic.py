"""Score models whose noised marginals are known in closed form, for testing samplers.

Data x0 ~ sum_k w_k N(mu_k, Sigma_k) noised as x_t = alpha x0 + sigma eps has the marginal
sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I), so its score (and every
parameterization of the ideal denoiser) is exact at every t, for any schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mridpm.dpm.parameterization import check_prediction, convert


class GaussianMixtureScore(torch.nn.Module):
    """The exact denoiser of a Gaussian mixture on flattened samples of D values.

    covs: (K, D, D) full or (K, D) diagonal covariances. Calling model(x, t) returns the
    prediction `prediction` for x of shape (B, ...) with prod(...) = D, at the schedule's
    (alpha, sigma) for t (one time per sample; a discrete index or a continuous time).
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
                 schedule: object, prediction: str = "eps") -> None:
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if mu.dim() != 2 or mu.shape[0] != w.numel():
            raise ValueError(f"means must be (K, D) with K = len(weights) = {w.numel()}, got {tuple(mu.shape)}")
        K, D = mu.shape
        if cov.shape == (K, D):
            cov = torch.diag_embed(cov)
        if cov.shape != (K, D, D):
            raise ValueError(f"covs must be (K, D, D) or (K, D) with K={K}, D={D}, got {tuple(cov.shape)}")
        if bool((w <= 0).any()) or not math.isclose(float(w.sum()), 1.0, rel_tol=1e-9):
            raise ValueError("weights must be positive and sum to 1")
        evals, evecs = torch.linalg.eigh(cov)
        if bool((evals <= 0).any()):
            raise ValueError("covariances must be positive definite")
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self.register_buffer("weights", w)
        self.register_buffer("means", mu)
        self.register_buffer("covs", cov)
        self.register_buffer("evals", evals)
        self.register_buffer("evecs", evecs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the data distribution (float64, shape (n, D))."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        scale = self.evecs * self.evals.sqrt().unsqueeze(1)  # Sigma_k^(1/2) = U diag(sqrt(l))
        return self.means[comp] + torch.einsum("nij,nj->ni", scale[comp], z)

    def score_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """grad log p_t(x) for x of shape (B, D) in float64, and the component responsibilities."""
        var = alpha * alpha * self.evals + sigma * sigma  # (K, D) in each eigenbasis
        y = x.unsqueeze(0) - alpha * self.means.unsqueeze(1)  # (K, B, D)
        z = torch.einsum("kbd,kde->kbe", y, self.evecs)  # coordinates in the eigenbases
        logp = self.weights.log().unsqueeze(1) - 0.5 * ((z * z) / var.unsqueeze(1)).sum(-1) \
            - 0.5 * var.log().sum(-1, keepdim=True)
        resp = torch.softmax(logp, dim=0)  # (K, B)
        scores = -torch.einsum("kbe,kde->kbd", z / var.unsqueeze(1), self.evecs)
        return (resp.unsqueeze(-1) * scores).sum(0), resp

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).double()
        if flat.shape[1] != self.dim:
            raise ValueError(f"samples hold {flat.shape[1]} values, the model {self.dim}")
        times = torch.as_tensor(t).reshape(-1).expand(x.shape[0]).cpu()
        out = torch.empty_like(flat)
        for value in times.unique().tolist():
            rows = times == value
            alpha, sigma = self.schedule.alpha_sigma(int(value) if not times.is_floating_point() else value)
            score, _ = self.score_at(flat[rows], alpha, sigma)
            out[rows] = convert(score, flat[rows], alpha, sigma, "score", self.prediction)
        return out.reshape(x.shape).to(x.dtype)


def gaussian_score(mean: torch.Tensor, cov: torch.Tensor, schedule: object, prediction: str = "eps"
                   ) -> GaussianMixtureScore:
    """The exact denoiser of one Gaussian N(mean, cov); cov full (D, D) or diagonal (D,)."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    return GaussianMixtureScore([1.0], mean.unsqueeze(0), cov.unsqueeze(0), schedule, prediction)
