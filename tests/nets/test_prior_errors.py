"""Loading a prior (bundled name or run directory) checks what it reads: a one-line ValueError for a bad
description, unreadable or mismatching weights, and paths leading outside the prior's directory."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from mridpm.nets import priors
from mridpm.nets.unet import UNet, UNetConfig
from mridpm.train import save_checkpoint

CONFIG = UNetConfig(channels=8, channel_mult=(1, 2), attention_levels=(), heads=2, groups=4)


def _tiny(directory, name="tiny", **changes):
    """Writes a tiny prior name.{safetensors,json} into directory; its description, with changes applied."""
    torch.manual_seed(0)
    weights = directory / f"{name}.safetensors"
    save_file(UNet(CONFIG).state_dict(), str(weights))
    info = {"model": CONFIG.to_dict(), "image_size": [8, 8], "data_range": [-1.0, 1.0], "schedule": "linear",
            "prediction": "eps", "num_train_timesteps": 50, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    info.update(changes)
    (directory / f"{name}.json").write_text(json.dumps(info))
    return info


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    d = tmp_path / "priors"
    d.mkdir()
    monkeypatch.setattr(priors, "_dir", lambda: d)
    return d


def _refused(name, message):
    with pytest.raises(ValueError) as err:
        priors.load_prior(name)
    assert type(err.value) is ValueError and str(err.value) == message


def test_a_good_tiny_prior_loads(bundle):
    _tiny(bundle)
    prior = priors.load_prior("tiny")
    torch.manual_seed(0)
    for k, v in UNet(CONFIG).state_dict().items():
        assert torch.equal(prior.model.state_dict()[k], v), k
    assert prior.schedule.num_train_timesteps == 50 and not prior.model.training


def test_a_bad_description_is_refused(bundle):
    _tiny(bundle)
    (bundle / "tiny.json").write_text("[1, 2]")
    _refused("tiny", f"prior description {bundle / 'tiny.json'} is corrupt: expected a JSON object, got list")
    info = _tiny(bundle)
    del info["schedule"]
    (bundle / "tiny.json").write_text(json.dumps(info))
    _refused("tiny", f"prior description {bundle / 'tiny.json'} is corrupt: it has no 'schedule' entry")
    (bundle / "tiny.json").write_text("{")
    with pytest.raises(ValueError, match=r"tiny.json is missing or not readable JSON: "):
        priors.load_prior("tiny")
    _tiny(bundle, model={**CONFIG.to_dict(), "channels": -1})
    _refused("tiny", f"{bundle / 'tiny.json'} model channels must be an integer >= 1, got -1")


def test_unparsable_weights_with_a_matching_sha_are_a_value_error(bundle):
    _tiny(bundle)
    weights = bundle / "tiny.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    info = json.loads((bundle / "tiny.json").read_text())
    info["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (bundle / "tiny.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"tiny.safetensors is not a readable safetensors file: ") as err:
        priors.load_prior("tiny")
    assert type(err.value) is ValueError and "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_name_the_key_and_both_shapes(bundle):
    _tiny(bundle, model={**CONFIG.to_dict(), "channels": 16})
    _refused("tiny", f"the weights of {bundle / 'tiny.json'} do not fit its model config: 'time_mlp.0.weight' has "
                     f"shape (32, 8) in the file but (64, 16) in the model (0 missing, 0 unexpected, "
                     f"153 mismatched shapes)")
    info = _tiny(bundle)
    state = UNet(CONFIG).state_dict()
    del state["out.2.bias"]
    save_file(state, str(bundle / "tiny.safetensors"))
    info["sha256"] = hashlib.sha256((bundle / "tiny.safetensors").read_bytes()).hexdigest()
    (bundle / "tiny.json").write_text(json.dumps(info))
    _refused("tiny", f"the weights of {bundle / 'tiny.json'} do not fit its model config: 'out.2.bias' (shape (1,) "
                     f"in the model) is missing from the file (1 missing, 0 unexpected, 0 mismatched shapes)")


def test_paths_outside_the_prior_directory_are_refused(bundle, tmp_path):
    _tiny(bundle)
    shutil.copy(bundle / "tiny.safetensors", tmp_path / "outside.safetensors")
    for entry in ("../outside.safetensors", str(tmp_path / "outside.safetensors")):
        _tiny(bundle, weights=entry)
        _refused("tiny", f"{bundle / 'tiny.json'} names weights {entry!r}: refusing to load files outside the prior "
                         f"directory {bundle}")
    _tiny(bundle, weights="tiny.safetensors")  # a plain name in the directory is fine
    assert priors.load_prior("tiny").info["weights"] == "tiny.safetensors"
    _refused("../tiny", "'../tiny' is neither a training run directory, an exported prior's .json nor a bundled "
                        "prior; available: ['tiny']")


def test_a_run_checkpoint_without_its_config_is_a_value_error(tmp_path):
    torch.manual_seed(0)
    ema = UNet(CONFIG).state_dict()
    meta = {"config": {"schedule": "linear", "prediction": "eps", "num_train_timesteps": 50,
                       "extra": {"data": {"size": [8, 8]}}},
            "model": {"class": "UNet", "config": CONFIG.to_dict()}}
    save_checkpoint(tmp_path, 1, {"ema": ema}, meta)
    assert priors.load_prior(tmp_path).info["image_size"] == [8, 8]
    save_checkpoint(tmp_path, 2, {"ema": ema}, {"model": meta["model"]})
    _refused(tmp_path, f"checkpoint {tmp_path / 'step-00000002.json'} is corrupt: it has no 'config' entry")
    save_checkpoint(tmp_path, 3, {"ema": ema}, {**meta, "config": {"schedule": "linear"}})
    _refused(tmp_path, f"checkpoint {tmp_path / 'step-00000003.json'} is corrupt: its 'config' has no 'prediction' "
                       f"entry")
    save_checkpoint(tmp_path, 4, {"model": ema}, meta)
    _refused(tmp_path, f"checkpoint {tmp_path / 'step-00000004.safetensors'} is corrupt: it holds no 'ema' tensors")


def test_export_records_its_weights_file_and_loads_back(tmp_path, bundle):
    torch.manual_seed(0)
    ema = UNet(CONFIG).state_dict()
    meta = {"config": {"schedule": "linear", "prediction": "eps", "num_train_timesteps": 50,
                       "extra": {"data": {"size": [8, 8]}}},
            "model": {"class": "UNet", "config": CONFIG.to_dict()}}
    save_checkpoint(tmp_path / "run", 5, {"ema": ema}, meta)
    assert priors.export(tmp_path / "run", "mine", bundle) == bundle / "mine.safetensors"
    assert json.loads((bundle / "mine.json").read_text())["weights"] == "mine.safetensors"
    prior = priors.load_prior("mine")
    assert prior.info["step"] == 5
    for k, v in ema.items():
        assert torch.equal(prior.model.state_dict()[k], v.half().float()), k


def test_an_exported_prior_loads_from_its_json_anywhere(tmp_path, bundle):
    """An exported prior on disk (python -m mridpm.nets.priors export RUN NAME OUT_DIR) loads by the path of
    its .json, with the same checks as a bundled one: its weights beside it, their SHA-256."""
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    _tiny(elsewhere, "snap")
    prior = priors.load_prior(elsewhere / "snap.json")
    assert prior.info["image_size"] == [8, 8] and "snap" not in priors.available()
    blob = bytearray((elsewhere / "snap.safetensors").read_bytes())
    blob[-1] ^= 1
    (elsewhere / "snap.safetensors").write_bytes(bytes(blob))
    _refused(str(elsewhere / "snap.json"), "the weights of prior 'snap' do not match their recorded SHA-256")


def test_sampler_options_of_the_card_are_reconstruction_defaults(tmp_path, bundle, monkeypatch):
    """export(..., sampler_options=) records the options tuned for a prior; reconstruct_prior takes them
    as defaults that the caller's own options override; a card whose options are not objects is refused."""
    import subprocess
    import sys

    from mridpm.tasks import reconstruction

    torch.manual_seed(0)
    meta = {"config": {"schedule": "linear", "prediction": "eps", "num_train_timesteps": 50,
                       "extra": {"data": {"size": [8, 8]}}},
            "model": {"class": "UNet", "config": CONFIG.to_dict()}}
    save_checkpoint(tmp_path / "run", 5, {"ema": UNet(CONFIG).state_dict()}, meta)
    out = subprocess.run([sys.executable, "-m", "mridpm.nets.priors", "export", str(tmp_path / "run"), "mine",
                          str(bundle), "--sampler-options", '{"dds": {"cg_iters": 2}}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    prior = priors.load_prior("mine")
    assert prior.info["sampler_options"] == {"dds": {"cg_iters": 2}}
    seen = []

    def record(y, *args, **kwargs):
        seen.append(kwargs)
        return reconstruction.Reconstruction(y, y, y[None], 0, 0.0)

    monkeypatch.setattr(reconstruction, "reconstruct", record)
    from mridpm.mri.operators import SingleCoil

    op, y = SingleCoil(torch.ones(8, 8)), torch.ones(1, 8, 8, dtype=torch.complex64)
    for method, extra, want in (("dds", {}, 2), ("dds", {"cg_iters": 7}, 7), ("projection", {}, None)):
        reconstruction.reconstruct_prior(y, op, prior, method=method, scale=1.0, **extra)
        assert seen[-1].get("cg_iters") == want
    for bad, message in (("{not json", "Expecting property name"), ('{"dds": 2}', "must map method names")):
        out = subprocess.run([sys.executable, "-m", "mridpm.nets.priors", "export", str(tmp_path / "run"), "other",
                              str(bundle), "--sampler-options", bad], capture_output=True, text=True)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and message in lines[-1] and "Traceback" not in out.stderr, out.stderr
        assert not list(bundle.glob("other*"))
    with pytest.raises(ValueError, match="must map method names"):
        priors.export(tmp_path / "run", "other", bundle, sampler_options={"dds": [1]})
    assert not list(bundle.glob("other*"))
    _tiny(bundle, "bad", sampler_options={"dds": 2})
    _refused("bad", f"{bundle / 'bad.json'}: sampler_options must map method names to objects of options")
