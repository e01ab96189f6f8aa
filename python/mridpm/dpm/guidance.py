"""Guidance: wrappers that turn a conditional model into a guided one with the same call.

classifier_free mixes conditional and unconditional outputs from one batched model call
(Ho & Salimans 2022); classifier_guidance adds scale times the gradient of a classifier's
log-probability to the score (Dhariwal & Nichol 2021), in whatever parameterization the
model predicts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mridpm.dpm import parameterization as param
from mridpm.ops.step import fused_step

Model = Callable[..., torch.Tensor]


def classifier_free(model: Model, scale: float, null: dict[str, torch.Tensor]) -> Model:
    """out_u + scale (out_c - out_u): model(x, t, **cond) sees the batch twice, once with cond and
    once with null (same keys, broadcastable to cond's values, e.g. the null class)."""

    def guided(x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        if set(cond) != set(null):
            raise ValueError(f"conditioning keys {sorted(cond)} differ from the null keys {sorted(null)}")
        both = {k: torch.cat([v, null[k].to(v.device).expand_as(v)]) for k, v in cond.items()}
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both)
        out_c, out_u = out.chunk(2)
        return fused_step([out_u, out_c], [1.0 - scale, scale])

    return guided


def classifier_guidance(model: Model, classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        scale: float, schedule: object, prediction: str = "eps",
                        pass_labels: bool = False) -> Model:
    """score(x_t) + scale * grad log p(y | x_t): guided(x, t, y=labels, **cond) differentiates
    the classifier's log-softmax at the labels y; the model also gets y when pass_labels."""
    param.check_prediction(prediction)

    def guided(x: torch.Tensor, t: torch.Tensor, *, y: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        out = model(x, t, **cond, **({"y": y} if pass_labels else {}))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = torch.log_softmax(classifier(xg, t), dim=-1).gather(1, y.reshape(-1, 1)).sum()
            grad = torch.autograd.grad(logp, xg)[0]
        times = t.detach().cpu().tolist()  # per-sample (alpha, sigma) on the host
        slope = [param.score_coeffs(prediction, *schedule.alpha_sigma(v))[1] for v in times]
        per_sample = torch.tensor([scale / b for b in slope], dtype=torch.float64)
        return fused_step([out, grad.to(out.dtype)], [1.0, per_sample])  # d(out) = d(score) / b

    return guided
