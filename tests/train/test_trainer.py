"""Training: the loss falls, resume is bit-exact, corrupt checkpoints are refused, DDP equals a doubled batch."""

import itertools
import json
import os
import signal

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mridpm.nets.unet import UNet
from mridpm.train import TrainConfig, load_checkpoint, train
from mridpm.train.trainer import learning_rate


def _data(n=16, size=8):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 2, generator=g) - 0.5
    return torch.stack([torch.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 0.2) for a, b in c])[:, None] * 2 - 1


def _model(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return UNet(channels=8, channel_mult=(1, 2), attention_levels=(1,), heads=2, groups=4, dropout=dropout)


def _config(tmp_path, **kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, checkpoint_every=3, num_train_timesteps=100, out_dir=str(tmp_path))
    return TrainConfig(**{**base, **kw})


def test_a_tiny_run_reduces_the_loss(tmp_path):
    state = train(_model(), _data(), _config(tmp_path, steps=150, batch_size=8, lr=3e-3, checkpoint_every=1000),
                  progress=False)
    first, last = sum(state.losses[:20]) / 20, sum(state.losses[-20:]) / 20
    assert state.step == 150 and last < 0.6 * first


def test_the_cosine_learning_rate_holds_then_decays_to_zero():
    cfg = TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine", lr_decay_start=4)
    rates = [learning_rate(cfg, s) for s in range(11)]
    assert rates[:5] == [1e-3] * 5 and rates[7] == pytest.approx(5e-4) and rates[10] == 0.0
    assert all(a > b for a, b in itertools.pairwise(rates[4:]))
    assert learning_rate(TrainConfig(lr=1e-3), 10**6) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        train(_model(), _data(), TrainConfig(lr_schedule="step"), progress=False)


@pytest.mark.parametrize("kw", [{}, {"lr_schedule": "cosine", "lr_decay_start": 2}])
def test_kill_and_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, kw):
    data = _data()
    whole = _model()
    train(whole, data, _config(tmp_path / "whole", **kw), progress=False)
    parts = _model()
    first = train(parts, data, _config(tmp_path / "parts", **kw), progress=False, stop_after=4)
    assert first.step == 4
    resumed = _model(seed=123)  # a fresh process: its own initialisation is overwritten by the checkpoint
    second = train(resumed, data, _config(tmp_path / "parts", **kw), progress=False)
    assert second.step == 6 and len(second.losses) == 2
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ema_whole, _ = load_checkpoint(tmp_path / "whole")
    ema_parts, meta = load_checkpoint(tmp_path / "parts")
    for k, v in ema_whole["ema"].items():
        assert torch.equal(v, ema_parts["ema"][k]), k
    assert meta["model"]["class"] == "UNet" and meta["config"]["steps"] == 6


def _preempt_at(model, at):
    """Sends SIGTERM to this process during model's `at`-th call (a preempted job); the hook's handle."""
    calls = []

    def hook(module, args):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGTERM)

    return model.register_forward_pre_hook(hook)


def test_sigterm_checkpoints_the_finished_step_and_resume_is_exact(tmp_path):
    data = _data()
    whole = _model()
    train(whole, data, _config(tmp_path / "whole", checkpoint_every=100), progress=False)
    parts = _model()
    before = signal.getsignal(signal.SIGTERM)
    handle = _preempt_at(parts, 2)
    first = train(parts, data, _config(tmp_path / "parts", checkpoint_every=100), progress=False)
    handle.remove()
    assert first.step == 2 and signal.getsignal(signal.SIGTERM) == before  # stopped after step 2, handler back
    assert json.loads((tmp_path / "parts" / "latest.json").read_text())["step"] == 2  # not a periodic checkpoint
    resumed = _model(seed=123)
    assert train(resumed, data, _config(tmp_path / "parts", checkpoint_every=100), progress=False).step == 6
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_conditional_training_with_dropout_and_simplex_noise_resumes_bit_for_bit(tmp_path):
    data = _data()
    cond = data.flip(-1)  # any per-sample image condition
    kw = dict(cond_dropout=0.3, noise="simplex")

    def model(seed=0):
        torch.manual_seed(seed)
        return UNet(channels=8, channel_mult=(1, 2), attention_levels=(1,), heads=2, groups=4, cond_channels=1,
                    context_dim=3)

    context = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    whole = model()
    train(whole, data, _config(tmp_path / "whole", **kw), cond=cond, context=context, progress=False)
    parts = model()
    train(parts, data, _config(tmp_path / "parts", **kw), cond=cond, context=context, progress=False, stop_after=4)
    resumed = model(seed=7)
    train(resumed, data, _config(tmp_path / "parts", **kw), cond=cond, context=context, progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = model()
    train(other, data, _config(tmp_path / "gauss", cond_dropout=0.3), cond=cond, context=context, progress=False)
    assert not torch.equal(other.inp.weight, whole.inp.weight)  # the noise kind matters
    with pytest.raises(ValueError, match="but for its channels"):
        train(model(), data, _config(tmp_path / "x"), cond=cond[:5], progress=False)
    with pytest.raises(ValueError, match="context has 5 rows"):
        train(model(), data, _config(tmp_path / "x"), cond=cond, context=context[:5], progress=False)
    with pytest.raises(ValueError, match="simplex"):
        train(_model(), data, _config(tmp_path / "x", noise="pink"), progress=False)


def test_checkpoints_are_atomic_pruned_and_pickle_free_with_sample_figures(tmp_path):
    train(_model(), _data(), _config(tmp_path, steps=9, sample_every=9), progress=False)
    assert (tmp_path / "samples" / "step-00000009.png").read_bytes()[:4] == b"\x89PNG"
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["latest.json", "step-00000006.json", "step-00000006.safetensors", "step-00000009.json",
                     "step-00000009.safetensors"]
    assert json.loads((tmp_path / "latest.json").read_text())["name"] == "step-00000009"
    assert b"\x80\x04" not in (tmp_path / "step-00000009.safetensors").read_bytes()[:2]  # not a pickle


def test_a_corrupted_checkpoint_is_refused_and_the_previous_one_kept(tmp_path):
    train(_model(), _data(), _config(tmp_path), progress=False)
    latest = tmp_path / "step-00000006.safetensors"
    blob = bytearray(latest.read_bytes())
    blob[-10] ^= 0xFF
    latest.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"SHA-256.*step-00000003"):
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False)
    assert (tmp_path / "step-00000003.safetensors").is_file()
    groups, meta = load_checkpoint(tmp_path, "step-00000003")
    assert meta["step"] == 3 and "model" in groups
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path)


def _ddp_worker(rank, world, init_file, out_dir, result_file):
    torch.set_num_threads(1)
    os.environ["WORLD_SIZE"] = str(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = _model(dropout=0.0)  # dropout masks depend on how the batch is split
        train(model, _data(), TrainConfig(steps=3, batch_size=4, lr=1e-3, checkpoint_every=100, num_train_timesteps=100,
                                          out_dir=out_dir), progress=False)
        if rank == 0:
            torch.save(model.state_dict(), result_file)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ddp_matches_one_process_with_the_doubled_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp"), str(tmp_path / "ddp.pt")), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt")
    torch.set_num_threads(1)
    single = _model(dropout=0.0)
    train(single, _data(), TrainConfig(steps=3, batch_size=4, lr=1e-3, checkpoint_every=100, num_train_timesteps=100,
                                       out_dir=str(tmp_path / "single")), progress=False)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
