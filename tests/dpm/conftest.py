"""The 16-dimensional Gaussian target the sampler and likelihood tests share."""

import pytest
import torch

D = 16


@pytest.fixture(scope="module")
def target():
    """(mean, covariance) in float64, eigenvalues spread from 0.1 to 2."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64, generator=g))
    cov = q @ torch.diag(torch.linspace(0.1, 2.0, D, dtype=torch.float64)) @ q.T
    return torch.randn(D, dtype=torch.float64, generator=g), cov
