"""Model parameterizations and exact conversions between them.

With x_t = alpha x0 + sigma eps, a model may predict eps, x0, v = alpha eps - sigma x0 or the
score -eps / sigma. Each of x0, eps and the score is linear in (x_t, output); samplers use
those coefficients to fold the conversion into their one fused step.
"""

from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v", "score")


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; choose one of {PREDICTIONS}")
    return kind


def x0_coeffs(kind: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with x0 = a * x_t + b * output."""
    check_prediction(kind)
    if kind == "eps":
        return 1 / alpha, -sigma / alpha
    if kind == "x0":
        return 0.0, 1.0
    if kind == "v":
        n = alpha * alpha + sigma * sigma
        return alpha / n, -sigma / n
    return 1 / alpha, sigma * sigma / alpha


def eps_coeffs(kind: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with eps = a * x_t + b * output."""
    check_prediction(kind)
    if kind == "eps":
        return 0.0, 1.0
    if kind == "x0":
        return 1 / sigma, -alpha / sigma
    if kind == "v":
        n = alpha * alpha + sigma * sigma
        return sigma / n, alpha / n
    return 0.0, -sigma


def score_coeffs(kind: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with score = grad log p_t(x_t) = a * x_t + b * output."""
    a, b = eps_coeffs(kind, alpha, sigma)
    return -a / sigma, -b / sigma


def convert(output: torch.Tensor, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor,
            source: str, target: str) -> torch.Tensor:
    """Converts a model output from one parameterization to another (alpha, sigma broadcast)."""
    check_prediction(source)
    check_prediction(target)
    if source == target:
        return output
    if source == "eps":
        eps = output
        x0 = (x - sigma * eps) / alpha
    elif source == "x0":
        x0 = output
        eps = (x - alpha * x0) / sigma
    elif source == "v":
        n = alpha * alpha + sigma * sigma
        x0, eps = (alpha * x - sigma * output) / n, (sigma * x + alpha * output) / n
    else:
        eps = -sigma * output
        x0 = (x - sigma * eps) / alpha
    return {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}[target]
