"""Checkpoints are never lost or trusted blindly: resume without latest.json, resume_from, safe pruning,
refusal of corrupt or escaping entries, one-line ValueErrors."""

import json
import warnings

import pytest
import torch

from mridpm.nets.unet import UNet
from mridpm.train import TrainConfig, load_checkpoint, save_checkpoint, train


def _data(n=8, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _model(seed=0, channels=8):
    torch.manual_seed(seed)
    return UNet(channels=channels, channel_mult=(1, 2), attention_levels=(), heads=2, groups=4, dropout=0.0)


def _config(out, **kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, checkpoint_every=3, num_train_timesteps=50, out_dir=str(out))
    return TrainConfig(**{**base, **kw})


def _drop(meta, key):
    return {k: v for k, v in meta.items() if k != key}


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _corrupt_tensors(path):
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))


def _edit_json(path, fn):
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def test_missing_latest_resumes_from_the_newest_valid_checkpoint_bit_for_bit(tmp_path):
    whole = _model()
    train(whole, _data(), _config(tmp_path / "whole", steps=8), progress=False)
    run = tmp_path / "run"
    train(_model(), _data(), _config(run), progress=False)
    (run / "latest.json").unlink()
    _corrupt_tensors(run / "step-00000006.safetensors")  # the newest is not valid: step 3 is
    resumed = _model(seed=5)
    with pytest.warns(UserWarning, match="latest.json is missing; using the newest valid checkpoint step-00000003"):
        state = train(resumed, _data(), _config(run, steps=8), progress=False)
    assert state.step == 8 and len(state.losses) == 5  # steps 4..8, not a restart from 0
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert json.loads((run / "latest.json").read_text())["name"] == "step-00000008"


def test_missing_latest_and_no_valid_checkpoint_is_refused_and_nothing_is_touched(tmp_path):
    train(_model(), _data(), _config(tmp_path), progress=False)
    (tmp_path / "latest.json").unlink()
    _corrupt_tensors(tmp_path / "step-00000003.safetensors")
    _edit_json(tmp_path / "step-00000006.json", lambda m: _drop(m, "optim"))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"no latest.json and none of them is valid; refusing to start over") as err:
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False)
    assert "step-00000006.json is corrupt: it has no 'optim' entry" in str(err.value)
    assert "step-00000003.safetensors is missing or does not match its recorded SHA-256" in str(err.value)
    assert "\n" not in str(err.value) and _snapshot(tmp_path) == before


def test_resume_from_a_named_checkpoint_when_latest_is_corrupt(tmp_path):
    whole = _model()
    train(whole, _data(), _config(tmp_path / "whole", steps=7), progress=False)
    run = tmp_path / "run"
    train(_model(), _data(), _config(run), progress=False)
    _corrupt_tensors(run / "step-00000006.safetensors")
    with pytest.raises(ValueError, match=r"resume from one by name with resume_from / mridpm train --resume-from"):
        train(_model(), _data(), _config(run, steps=7), progress=False)
    resumed = _model(seed=9)
    state = train(resumed, _data(), _config(run, steps=7), progress=False, resume_from="step-00000003")
    assert state.step == 7 and len(state.losses) == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a path to the checkpoint's .json inside the run directory works too
    state = train(_model(), _data(), _config(run, steps=8), progress=False, resume_from=str(run / "step-00000007.json"))
    assert state.step == 8 and len(state.losses) == 1


def test_resume_from_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint step-00000400 in .*; there: none"):
        train(_model(), _data(), _config(tmp_path / "fresh"), progress=False, resume_from="step-00000400")
    assert not (tmp_path / "fresh").exists()
    train(_model(), _data(), _config(tmp_path), progress=False)
    before = _snapshot(tmp_path)
    for ref in ("../other/step-00000003", str(tmp_path.parent / "step-00000003.json")):
        with pytest.raises(ValueError, match="refusing to load files outside the run directory"):
            train(_model(), _data(), _config(tmp_path, steps=8), progress=False, resume_from=ref)
    with pytest.raises(ValueError, match="'latest' is not a checkpoint name; give one like step-00000400"):
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False, resume_from="latest")
    with pytest.raises(ValueError, match="resume_from needs resume=True"):
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False, resume=False, resume_from="step-00000003")
    with pytest.raises(ValueError, match=r"already holds checkpoints \(newest step-00000006\)"):
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False, resume=False)
    assert _snapshot(tmp_path) == before


def test_pruning_keeps_newer_checkpoints_and_files_the_run_did_not_write(tmp_path):
    t = {"model": {"w": torch.zeros(2)}}
    for step in (1, 2, 3, 5):
        save_checkpoint(tmp_path, step, t, {}, keep=0)
    others = ["step-final.json", "step-final.safetensors", "step-1.json", "step-00000001.bak.json", "notes.txt"]
    for name in others:
        (tmp_path / name).write_text("mine")
    save_checkpoint(tmp_path, 4, t, {}, keep=2)  # e.g. resumed from step 3 while step 5 exists
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = [f"step-0000000{s}.{x}" for s in (3, 4, 5) for x in ("json", "safetensors")]
    assert names == sorted(["latest.json", *others, *expected])
    assert json.loads((tmp_path / "latest.json").read_text())["name"] == "step-00000004"


@pytest.mark.parametrize(("latest", "message"), [
    ([1, 2], r"latest.json is corrupt: expected an object with a string 'name'"),
    ({"step": 3}, r"latest.json is corrupt: expected an object with a string 'name'"),
    ({"name": 3}, r"latest.json is corrupt: expected an object with a string 'name'"),
    ({"name": "../other/step-00000003"}, r"latest.json names '../other/step-00000003': refusing to load files "
                                         r"outside the run directory"),
    ({"name": "/etc/step-00000003"}, r"refusing to load files outside the run directory"),
])
def test_a_bad_latest_json_is_a_one_line_value_error(tmp_path, latest, message):
    train(_model(), _data(), _config(tmp_path), progress=False)
    (tmp_path / "latest.json").write_text(json.dumps(latest))
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: {**m, "tensors": "../x.safetensors"}, r"names tensors '../x.safetensors': refusing to load files "
                                                      "outside the run directory"),
    (lambda m: {**m, "tensors": "/tmp/x.safetensors"}, r"refusing to load files outside the run directory"),
    (lambda m: _drop(m, "config"), r"step-00000006.json is corrupt: it has no 'config' entry"),
    (lambda m: _drop(m, "sha256"), r"step-00000006.json is corrupt: it has no 'sha256' entry"),
    (lambda m: [m], r"step-00000006.json is corrupt: expected a JSON object, got list"),
])
def test_a_bad_checkpoint_json_is_refused_when_resuming(tmp_path, edit, message):
    train(_model(), _data(), _config(tmp_path), progress=False)
    _edit_json(tmp_path / "step-00000006.json", edit)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        train(_model(), _data(), _config(tmp_path, steps=8), progress=False)
    assert "\n" not in str(err.value) and _snapshot(tmp_path) == before


def test_a_checkpoint_of_another_model_is_refused_naming_the_key_and_shapes(tmp_path):
    train(_model(), _data(), _config(tmp_path), progress=False)
    with pytest.raises(ValueError) as err:
        train(_model(channels=16), _data(), _config(tmp_path, steps=8), progress=False)
    assert str(err.value).endswith("step-00000006.json (model weights) does not fit the model: 'time_mlp.0.weight' "
                                   "has shape (32, 8) in the file but (64, 16) in the model (0 missing, "
                                   "0 unexpected, 153 mismatched shapes)")


def test_a_readable_but_unparsable_tensor_file_is_a_value_error(tmp_path):
    import hashlib

    train(_model(), _data(), _config(tmp_path), progress=False)
    bad = tmp_path / "step-00000006.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    _edit_json(tmp_path / "step-00000006.json", lambda m: {**m, "sha256": hashlib.sha256(bad.read_bytes()).hexdigest()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"step-00000006.safetensors is not a readable safetensors file: "):
            load_checkpoint(tmp_path)
