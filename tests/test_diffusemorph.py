"""Registration: the warp and its field conventions, the losses and metrics, DiffuseMorph training and
registering, the `mridpm register` command, and the SimpleITK demons baseline."""

import pytest
import torch

from mridpm import cli
from mridpm.data.nifti import read_nifti, write_nifti
from mridpm.nets.diffusemorph import DiffuseMorph
from mridpm.nets.unet import UNetConfig
from mridpm.tasks import warps as W  # noqa: N812
from mridpm.tasks.registration import eval_pairs, register
from mridpm.train.registration import JointLoss
from mridpm.train.trainer import TrainConfig, train

TINY = UNetConfig(dims=2, in_channels=1, cond_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_levels=(), heads=2, groups=4, extra={"deform_channels": 8, "deform_mult": [1, 2]})


def _images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 5, 1, 2)
    return (x - x.amin()) / (x.amax() - x.amin())


def test_constant_shift_is_a_roll_and_zero_is_identity():
    x = _images()
    field = torch.zeros(2, 2, 32, 32)
    field[:, 0], field[:, 1] = 2.0, -3.0  # warp(x)(p) = x(p + u): row + 2, column - 3
    torch.testing.assert_close(W.warp(x, field)[..., 4:-4, 4:-4], torch.roll(x, (-2, 3), (2, 3))[..., 4:-4, 4:-4])
    torch.testing.assert_close(W.warp(x, torch.zeros_like(field)), x, atol=1e-5, rtol=0)
    labels = (x[:, 0] * 4).long().clamp(max=3)
    assert torch.equal(W.warp_labels(labels, torch.zeros_like(field)), labels)


def test_3d_warp_shift():
    x = torch.rand(1, 1, 8, 8, 8)
    field = torch.zeros(1, 3, 8, 8, 8)
    field[:, 0] = 1.0
    torch.testing.assert_close(W.warp(x, field)[:, :, :-1], x[:, :, 1:])


def test_lncc_is_one_for_identical_images_and_drops_with_noise():
    x = _images()
    g = torch.Generator().manual_seed(1)
    noisy = [x + s * torch.randn(x.shape, generator=g) for s in (0.05, 0.2)]
    scores = [float(W.lncc(x, x)), *(float(W.lncc(x, n)) for n in noisy)]
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[0] > scores[1] > scores[2]


def test_jacobian_smoothness_and_folding():
    zero = torch.zeros(1, 2, 16, 16)
    torch.testing.assert_close(W.jacobian_det(zero), torch.ones(1, 16, 16))
    assert W.folding_fraction(zero) == 0 and float(W.smoothness(zero)) == 0
    rows = torch.arange(16.0)
    fold = torch.zeros(1, 2, 16, 16)
    fold[0, 0] = (-2 * rows)[:, None]  # p + u(p) = -p along rows: a reflection
    assert W.folding_fraction(fold) == 1.0
    linear = torch.zeros(1, 2, 16, 16)
    linear[0, 1] = 0.5 * rows  # x -> 1.5 x: det 1.5
    torch.testing.assert_close(W.jacobian_det(linear), torch.full((1, 16, 16), 1.5))


def test_dice_and_endpoint_error():
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    assert W.mean_dice(labels, labels) == 1.0 and W.mean_dice(labels, (labels + 1) % 4) < 0.5
    u = torch.zeros(1, 2, 4, 4)
    v = u.clone()
    v[:, 0], v[:, 1] = 3.0, 4.0
    assert W.endpoint_error(u, v) == pytest.approx(5.0)


def test_random_smooth_field_magnitude_and_no_folding():
    g = torch.Generator().manual_seed(0)
    u = W.random_smooth_field((64, 64), 3.0, 8.0, g, batch=8)
    assert u.shape == (8, 2, 64, 64)
    torch.testing.assert_close(u.norm(dim=1).amax(dim=(1, 2)), torch.full((8,), 3.0))
    assert W.folding_fraction(u) == 0 and float(W.jacobian_det(u).min()) > 0.3
    assert W.random_smooth_field((8, 8, 8), 1.0, 3.0, g).shape == (1, 3, 8, 8, 8)


def test_true_field_direction():
    """Registering moving to fixed = warp(moving, u) must find u: the true field warps moving onto fixed."""
    pairs = eval_pairs([70, 90], (64, 64), seed=0)
    truth = W.warp_labels(pairs["moving_labels"], pairs["field"])
    assert W.mean_dice(truth, pairs["fixed_labels"]) == 1.0
    assert W.mean_dice(pairs["moving_labels"], pairs["fixed_labels"]) < 0.9


def test_tiny_model_trains_and_registers(tmp_path):
    from mridpm.dpm.schedules import DiscreteSchedule
    from mridpm.train.registration import registration_data
    from mridpm.train.run import phantom_slices

    torch.manual_seed(0)
    model = DiffuseMorph(TINY)
    data = {"size": [32, 32], "z": [60, 100], "holdout_every": 4, "copies": 2}
    x = registration_data(data, phantom_slices(data))
    loss = JointLoss(DiscreteSchedule.from_name("linear", 1000))
    moving, fixed = loss.pair(x[:4], torch.Generator().manual_seed(0))
    before = -float(W.lncc(moving, fixed))
    cfg = TrainConfig(steps=20, batch_size=4, lr=3e-3, ema_decay=0.0, out_dir=str(tmp_path / "run"))
    state = train(model, x, cfg, progress=False, loss_fn=loss)
    assert state.step == 20 and all(map(torch.isfinite, map(torch.tensor, state.losses)))
    model.eval()
    res = register(model, moving, fixed, steps=5)
    assert res.field.shape == (4, 2, 32, 32) and res.intermediates.shape == (5, 4, 1, 32, 32)
    torch.testing.assert_close(res.intermediates[0], moving, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.intermediates[-1], res.warped)
    assert -float(W.lncc(res.warped, fixed)) < before - 0.02  # the registration loss went down
    from mridpm.tasks.registration import load_registration

    loaded = load_registration(tmp_path / "run")
    torch.testing.assert_close(register(loaded, moving, fixed).field, res.field)  # EMA decay 0: the weights


@pytest.mark.parametrize("similarity", ["mse", "lncc"])
def test_refinement_lowers_its_loss_and_zero_keeps_the_networks_field(similarity):
    from mridpm.tasks.registration import REFINE_STEPS, refine_field

    torch.manual_seed(0)
    model = DiffuseMorph(TINY).eval()
    pairs = eval_pairs([70, 90], (32, 32), seed=0)
    moving, fixed = pairs["moving"], pairs["fixed"]
    with torch.no_grad():
        raw = model(fixed * 2 - 1, torch.zeros(2), moving, fixed)[1]
    torch.testing.assert_close(register(model, moving, fixed, refine=0).field, raw)
    opts = {"similarity": similarity, "smooth_weight": 0.02 if similarity == "mse" else 0.5, "window": 5}

    def loss(u):
        warped = W.warp(moving, u)
        d = (warped - fixed).square().mean() if similarity == "mse" else -W.lncc(warped, fixed, 5)
        return float(d + opts["smooth_weight"] * W.smoothness(u))

    refined = register(model, moving, fixed, refine=30, **opts).field
    torch.testing.assert_close(refined, refine_field(moving, fixed, raw, 30, **opts))
    assert loss(refined) < 0.9 * loss(raw) and W.folding_fraction(refined) < 0.01
    # each pair's refinement is its own: alone it gives the same field as in the batch
    torch.testing.assert_close(refine_field(moving[:1], fixed[:1], raw[:1], 30, **opts), refined[:1], atol=1e-4,
                               rtol=0)
    with pytest.raises(ValueError, match="refine must be at least 0"):
        register(model, moving, fixed, refine=-1)
    with pytest.raises(ValueError, match="similarity must be one of"):
        refine_field(moving, fixed, raw, 1, similarity="ssd")
    assert cli._parser().parse_args(["register", "m", "f", "--model", "r", "--out", "o"]).refine == REFINE_STEPS


def test_register_checks_input():
    model = DiffuseMorph(TINY).eval()
    x = _images()
    with pytest.raises(ValueError, match="same"):
        register(model, x, x[:1])
    with pytest.raises(ValueError, match="divisible"):
        register(model, x[..., :31], x[..., :31])
    with pytest.raises(ValueError, match="in_channels = 1, cond_channels = 2"):
        DiffuseMorph(UNetConfig(cond_channels=1))


def test_3d_model_registers_volumes():
    import dataclasses

    model = DiffuseMorph(dataclasses.replace(TINY, dims=3)).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    res = register(model, x, x.flip(-1), steps=3)
    assert res.field.shape == (1, 3, 8, 8, 8) and res.intermediates.shape == (3, 1, 1, 8, 8, 8)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("reg") / "run"
    x = _images(4, 32).repeat(1, 2, 1, 1)
    from mridpm.dpm.schedules import DiscreteSchedule

    torch.manual_seed(0)
    train(DiffuseMorph(TINY), x, TrainConfig(steps=2, batch_size=2, out_dir=str(run)), progress=False,
          loss_fn=JointLoss(DiscreteSchedule.from_name("linear", 1000)))
    return run


def _nifti(path, images):
    write_nifti(path, images[:, 0].permute(1, 2, 0).contiguous())
    return str(path)


def test_cli_writes_warped_field_intermediates_and_png(trained_run, tmp_path, capsys):
    x = _images(2, 32)
    moving, fixed = _nifti(tmp_path / "m.nii.gz", x), _nifti(tmp_path / "f.nii.gz", x.flip(-1))
    out = tmp_path / "w.nii.gz"
    assert cli.main(["register", moving, fixed, "--model", str(trained_run), "--steps", "3", "--refine", "2",
                     "--out", str(out)]) == 0
    assert read_nifti(out)[0].shape == (32, 32, 2)
    assert read_nifti(tmp_path / "w_field.nii.gz")[0].shape == (32, 32, 2, 2)
    assert read_nifti(tmp_path / "w_intermediates.nii.gz")[0].shape == (32, 32, 2, 3)
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG" and "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("shape", "differ in shape"), ("missing", "no NIfTI file"), ("model", "no registration model"),
])
def test_cli_one_line_errors(trained_run, tmp_path, capsys, case, message):
    moving = _nifti(tmp_path / "m.nii", _images(1, 32))
    fixed = {"shape": _nifti(tmp_path / "f.nii", _images(1, 16)), "missing": str(tmp_path / "none.nii"),
             "model": moving}[case]
    model = str(tmp_path / "nowhere") if case == "model" else str(trained_run)
    assert cli.main(["register", moving, fixed, "--model", model, "--out", str(tmp_path / "o.nii")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mridpm register: error: ") and message in lines[0], lines
    assert not (tmp_path / "o.nii").exists()


def test_demons_beats_no_registration():
    pytest.importorskip("SimpleITK")
    pairs = eval_pairs([70, 90], (64, 64), seed=0)
    field = W.demons(pairs["moving"], pairs["fixed"], iterations=50)
    assert field.shape == pairs["field"].shape
    identity = W.mean_dice(pairs["moving_labels"], pairs["fixed_labels"])
    assert W.mean_dice(W.warp_labels(pairs["moving_labels"], field), pairs["fixed_labels"]) > identity + 0.1
    assert W.endpoint_error(field, pairs["field"]) < W.endpoint_error(torch.zeros_like(field), pairs["field"])
