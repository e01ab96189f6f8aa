"""The full-size evaluation of a head prior (tasks.recon_heads_eval): its data, masks and rows."""

import pytest
import torch

pytest.importorskip("nilearn")
pytest.importorskip("dipy")

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.priors import Prior
from mridpm.nets.unet import UNet, UNetConfig
from mridpm.tasks import recon_heads_eval as ev


def _prior() -> Prior:
    torch.manual_seed(0)
    net = UNet(UNetConfig(dims=2, in_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=(), heads=1, groups=4)).eval()
    info = {"data_range": [-1.0, 1.0], "image_size": [32, 32], "train": {"extra": {"data": {"source": "heads"}}}}
    return Prior(net, DiscreteSchedule.from_name("linear", 1000), "eps", info)


def test_masks_and_acquisition():
    lines = ev.sampling_mask("lines", 4.0, (30, 34), seed=0)
    assert lines.shape == (1, 1, 1, 34) and 0.2 < float(lines.mean()) < 0.35
    plane = ev.sampling_mask("poisson", 8.0, (30, 34), seed=0)
    assert plane.shape == (1, 1, 30, 34) and 0.09 < float(plane.mean()) < 0.2
    assert plane[0, 0, 14:16, 16:18].all()  # the calibration square: round(0.08 * 30) = 2 wide
    x = torch.randn(2, 30, 34, dtype=torch.complex64)
    maps, k, std = ev.acquire(x, 4, 0.0, seed=1)
    assert maps.shape == (1, 4, 30, 34) and k.shape == (2, 4, 30, 34) and float(std.abs().max()) == 0


def test_images_held_out_and_tuning_apart():
    held, tune = ev.images("T2", 2, (32, 32), 0), ev.images("T2", 2, (32, 32), 0, heldout=False)
    assert held.shape == tune.shape == (2, 32, 32) and not torch.equal(held, tune)
    real = ev.images("dipy-T1", 1, (32, 32), 0)
    assert real.shape == (1, 256, 256) and real.is_complex()
    assert ev.images("dipy-T1", 1, (32, 32), 0, heldout=False).shape == (1, 256, 256)


def test_rows_per_data_sampling_and_method():
    p = _prior()
    assert ev.is_heads_prior(p) and not ev.is_heads_prior(Prior(p.model, p.schedule, "eps", {}))
    rows = ev.evaluate_heads(p, ("dds",), data=("T1",), samplings=(("lines", 4.0), ("poisson", 8.0)),
                             size=(30, 34), slices=1, progress=False, options={"dds": {"steps": 2}})
    keys = {(r["data"], r["sampling"], r["method"]) for r in rows}
    assert keys == {("T1", s, m) for s in ("lines 4x", "poisson 8x")
                    for m in ("zero-filled", "CG-SENSE", "L1-wavelet", "dds")}
    for r in rows:
        assert r["size"] == [30, 34] and r["slices"] == 1 and torch.isfinite(torch.tensor(r["psnr"]))
    assert {r["evals"] for r in rows if r["method"] == "dds"} == {2}
    assert {r.get("samples") for r in rows} == {None, 1}  # the posterior samples averaged, on the prior's rows
    assert {r.get("cg_iters") for r in rows if r["method"] == "dds"} <= set(ev.PRIOR_GRID["dds"]["cg_iters"])


def test_summary_gives_each_case_its_margin_over_the_best_baseline():
    rows = [{"data": "T1", "sampling": "lines 4x", "method": m, "psnr": v}
            for m, v in (("zero-filled", 20.0), ("CG-SENSE", 22.0), ("L1-wavelet", 24.5), ("dds", 27.0))]
    rows += [{"data": "T2", "sampling": "lines 8x", "method": m, "psnr": v}
             for m, v in (("zero-filled", 21.0), ("CG-SENSE", 20.0), ("L1-wavelet", 19.0))]  # no dds: left out
    (s,) = ev.summary(rows)
    assert (s["data"], s["sampling"]) == ("T1", "lines 4x")
    assert (s["CG-SENSE"], s["L1-wavelet"], s["prior"]) == (22.0, 24.5, 27.0)
    assert s["margin"] == pytest.approx(2.5)


def test_prior_settings_tuned_on_the_tuning_slices_unless_given(monkeypatch):
    p = _prior()
    x = ev.images("T1", 2, (30, 34), 1000, heldout=False)
    maps, k, sigma = ev.acquire(x, 4, 0.002, seed=1)
    mask = ev.sampling_mask("lines", 4.0, (30, 34), seed=0)
    op = ev.Sense(maps, mask)
    seen = []
    real = ev.reconstruct_prior

    def spy(*args, **kwargs):
        seen.append(kwargs["cg_iters"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "reconstruct_prior", spy)
    got = ev.tune_prior(p, "dds", x, k * mask, op, sigma, 0, {"steps": 2})
    assert seen == [1, 1, 2, 2]  # every grid value on both tuning slices
    psnr = {c: sum(ev.image_metrics(x[i], real(k[i : i + 1] * mask, op, p, method="dds", samples=1, steps=2,
                                               noise_std=float(sigma[i]), generator=ev.Generator(i),
                                               cg_iters=c).mean[0])["psnr"] for i in range(2)) for c in (1, 2)}
    assert got == {"steps": 2, "cg_iters": max(psnr, key=psnr.__getitem__)}
    seen.clear()
    assert ev.tune_prior(p, "dds", x, k * mask, op, sigma, 0, {"cg_iters": 3}) == {"cg_iters": 3} and not seen
    assert ev.tune_prior(p, "pc", x, k * mask, op, sigma, 0, {}) == {} and not seen  # nothing to tune
