"""`mridpm train CONFIG`: TOML and YAML configurations, the phantom data source, clear errors: bad
[train] / [model] values, unusable devices and missing resume points refused with one line naming
the key before any file is written; resume from a named checkpoint."""

import pytest
import torch

from mridpm import cli
from mridpm.train import TrainConfig, load_checkpoint, train
from mridpm.train.run import load_config, run, training_images

pytest.importorskip("nilearn")

TOML = """
[model]
channels = 8
channel_mult = [1, 2]
attention_levels = []
groups = 4
heads = 2
[data]
source = "phantom"
contrast = "T2"
size = [16, 16]
z = [80, 84]
[train]
steps = 2
batch_size = 2
checkpoint_every = 1
num_train_timesteps = 50
"""


def test_cli_train_from_toml_writes_checkpoints(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML)
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    groups, meta = load_checkpoint(tmp_path / "out")
    assert meta["step"] == 2 and meta["model"]["config"]["channels"] == 8 and "ema" in groups
    # a run directory is a prior: its EMA weights, schedule and image size
    import torch

    from mridpm.nets.priors import load_prior

    prior = load_prior(tmp_path / "out")
    assert prior.info["image_size"] == [16, 16] and prior.schedule.num_train_timesteps == 50
    state = prior.model.state_dict()
    for k, v in groups["ema"].items():
        torch.testing.assert_close(state[k], v.float())


def test_yaml_and_data_and_errors(tmp_path, capsys):
    pytest.importorskip("yaml")
    y = tmp_path / "run.yaml"
    y.write_text("model:\n  channels: 8\ntrain:\n  steps: 1\n")
    assert load_config(y)["model"]["channels"] == 8
    imgs = training_images({"source": "phantom", "size": [16, 16], "z": [80, 83]})
    assert imgs.shape == (6, 1, 16, 16) and float(imgs.min()) >= -1 and float(imgs.max()) == pytest.approx(1.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("[modle]\nchannels = 8\n")
    with pytest.raises(ValueError, match="unknown sections"):
        load_config(bad)
    bad.write_text("[model]\nchanels = 8\n")
    assert cli.main(["train", str(bad)]) == 2  # a message, not a traceback
    assert "unknown keys ['chanels']" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")



def test_conditional_data_pairs_targets_with_conditions(tmp_path, capsys):
    import torch

    from mridpm.data.phantom import brain_slices, tissue_labels
    from mridpm.train.run import training_data

    data = {"source": "phantom", "size": [16, 16], "z": [80, 83], "target": "T1", "condition": ["labels", "previous"],
            "slice_step": 2}
    x, c = training_data(data)
    assert x.shape == (6, 1, 16, 16) and c.shape == (6, 5, 16, 16)  # three slices and their mirror images
    torch.testing.assert_close(x[:3, 0], brain_slices("T1", [80, 81, 82], (16, 16)) * 2 - 1)
    assert torch.equal(c[:3, :4].argmax(1), tissue_labels([80, 81, 82], (16, 16)))
    assert set(c[:, :4].unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(c[:3, 4], brain_slices("T1", [78, 79, 80], (16, 16)) * 2 - 1)  # 2 mm below
    assert torch.equal(x[3:], x[:3].flip(-1)) and torch.equal(c[3:], c[:3].flip(-1))
    for bad, message in (({"condition": "T1"}, "non-empty list"), ({"condition": ["T3"]}, "unknown image kind"),
                         ({"condition": ["T1"], "source": "fastmri"}, "phantom source")):
        with pytest.raises(ValueError, match=message):
            training_data({"size": [16, 16], "z": [80, 82], **bad})
    # the model must take the condition's channels
    cfg = tmp_path / "seg.toml"
    cfg.write_text(TOML.replace('contrast = "T2"', 'target = "labels"\ncondition = ["T1"]'))
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "cond_channels = 1" in capsys.readouterr().err
    cfg.write_text(cfg.read_text().replace("channels = 8", "channels = 8\nin_channels = 4\ncond_channels = 1"))
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "o"), "--device", "cpu"]) == 0
    from mridpm.nets.priors import load_prior

    prior = load_prior(tmp_path / "o")
    assert prior.model.config.cond_channels == 1 and prior.model.config.in_channels == 4


def _cfg(tmp_path, text=TOML):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def _refused(tmp_path, text, message, *, overrides=None, device="cpu", error=ValueError, resume_from=None):
    out = tmp_path / "out"
    with pytest.raises(error) as err:
        run(_cfg(tmp_path, text), {"out_dir": str(out), **(overrides or {})}, device, progress=False,
            **({} if resume_from is None else {"resume_from": resume_from}))
    assert str(err.value) == message
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize(("old", "new", "message"), [
    ("steps = 2", "steps = 0", "[train] steps must be an integer >= 1, got 0"),
    ("steps = 2", "steps = 1.5", "[train] steps must be an integer >= 1, got 1.5"),
    ("batch_size = 2", "batch_size = 0", "[train] batch_size must be an integer >= 1, got 0"),
    ("batch_size = 2", "batch_size = 2\nlr = 0.0", "[train] lr must be a finite number in (0.0, inf), got 0.0"),
    ("batch_size = 2", "batch_size = 2\nlr = -1e-3", "[train] lr must be a finite number in (0.0, inf), got -0.001"),
    ("batch_size = 2", "batch_size = 2\nlr = nan", "[train] lr must be a finite number in (0.0, inf), got nan"),
    ("batch_size = 2", "batch_size = 2\nema_decay = 1.0",
     "[train] ema_decay must be a finite number in [0.0, 1.0), got 1.0"),
    ("batch_size = 2", "batch_size = 2\nkeep = -1", "[train] keep must be an integer >= 0, got -1"),
    ("checkpoint_every = 1", "checkpoint_every = 0", "[train] checkpoint_every must be an integer >= 1, got 0"),
    ("batch_size = 2", 'batch_size = 2\namp = "fp8"', "[train] amp must be one of ['none', 'bf16', 'fp16'], got 'fp8'"),
    ("channels = 8", "channels = -1", "[model] channels must be an integer >= 1, got -1"),
    ("channels = 8", "channels = 0", "[model] channels must be an integer >= 1, got 0"),
    ("channel_mult = [1, 2]", "channel_mult = []",
     "[model] channel_mult must be a non-empty list of integers >= 1, got []"),
    ("channel_mult = [1, 2]", "channel_mult = 2", "[model]: 'int' object is not iterable"),
    ("heads = 2", "heads = 3", "[model] heads = 3 must divide the widths with attention ([16]); it does not divide 16"),
    ("groups = 4", "groups = 3", "[model] groups = 3 must divide every channel width (channels * channel_mult "
                                 "= [8, 16]); it does not divide 8"),
    ("attention_levels = []", "attention_levels = [2]",
     "[model] attention_levels must be levels in [0, 1] (one per channel_mult entry), got [2]"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, old, new, message):
    assert old in TOML
    _refused(tmp_path, TOML.replace(old, new), message)


def test_bad_overrides_and_devices_are_refused(tmp_path):
    _refused(tmp_path, TOML, "[train] steps must be an integer >= 1, got -1", overrides={"steps": -1})
    _refused(tmp_path, TOML, "unknown device 'bogus'; use cpu or cuda (cuda:N)", device="bogus")
    _refused(tmp_path, TOML, "cannot train on the meta device (it holds no data); use cpu or cuda", device="meta")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        _refused(tmp_path, TOML, f"device 'cuda:{n}' is not available on this machine ({n} cuda devices)",
                 device=f"cuda:{n}")
    else:
        _refused(tmp_path, TOML, "device 'cuda' is not available on this machine", device="cuda")
    _refused(tmp_path, TOML, f"no checkpoint step-00000001 in {tmp_path / 'out'}; there: none",
             error=FileNotFoundError, resume_from="step-00000001")
    with pytest.raises(ValueError, match=r"^unknown device 'bogus'"):  # train() itself checks too
        train(torch.nn.Linear(1, 1), torch.zeros(4, 1, 8, 8), TrainConfig(out_dir=str(tmp_path / "t")), device="bogus")


def test_run_resumes_from_a_named_checkpoint_and_checks_the_data_fit(tmp_path):
    pytest.importorskip("nilearn")
    cfg = _cfg(tmp_path)
    out = str(tmp_path / "out")
    assert run(cfg, {"out_dir": out}, "cpu", progress=False).step == 2
    blob = bytearray((tmp_path / "out" / "step-00000002.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (tmp_path / "out" / "step-00000002.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="does not match its recorded SHA-256"):
        run(cfg, {"out_dir": out, "steps": 3}, "cpu", progress=False)
    state = run(cfg, {"out_dir": out, "steps": 3}, "cpu", progress=False, resume_from="step-00000001")
    assert state.step == 3 and len(state.losses) == 2
    with pytest.raises(ValueError, match=r"^\[data\] gives 1-channel images; set \[model\] in_channels = 1$"):
        run(_cfg(tmp_path, TOML.replace("channels = 8", "channels = 8\nin_channels = 2")), {"out_dir": out + "2"},
            "cpu", progress=False)
    with pytest.raises(ValueError, match=r"^\[data\] size \[18, 18\] must be divisible by 4 for the 3 levels"):
        run(_cfg(tmp_path, TOML.replace("[1, 2]", "[1, 2, 2]").replace("[16, 16]", "[18, 18]")), {"out_dir": out + "3"},
            "cpu", progress=False)


def test_init_continues_a_prior_at_its_step_and_refuses_other_models(tmp_path):
    """--init: a new run starts from an exported prior's weights (model and EMA) at its step, so the
    batches continue rather than repeat; rerunning resumes the new run; another [model] is refused."""
    from mridpm.nets.priors import load_prior

    cfg = _cfg(tmp_path)
    run(cfg, {"out_dir": str(tmp_path / "a")}, "cpu", progress=False)
    first = load_prior(tmp_path / "a").model.state_dict()
    # a new run from the run directory's EMA weights at step 2, one step to 3 at a vanishing learning rate
    state = run(cfg, {"out_dir": str(tmp_path / "b"), "steps": 3, "lr": 1e-30}, "cpu", progress=False,
                init=tmp_path / "a")
    assert state.step == 3 and len(state.losses) == 1
    groups, meta = load_checkpoint(tmp_path / "b")
    for group in ("model", "ema"):
        assert all(torch.allclose(groups[group][k], first[k], rtol=0, atol=1e-20) for k in first)
    assert meta["config"]["extra"]["init"]["step"] == 2
    assert meta["config"]["extra"]["init"]["source"] == str(tmp_path / "a")
    # the same command again resumes run b (its checkpoint wins over init)
    assert run(cfg, {"out_dir": str(tmp_path / "b"), "steps": 4}, "cpu", progress=False,
               init=tmp_path / "a").step == 4
    # an exported prior (float16 weights) on disk: what carries a run across machines
    from mridpm.nets.priors import export
    from mridpm.train.run import init_weights, model_config

    export(tmp_path / "a", "snap", tmp_path / "p")
    cfg_model = model_config(load_config(cfg)["model"])
    fresh = TrainConfig(out_dir=str(tmp_path / "d"))
    (weights, step), train_cfg = init_weights(tmp_path / "p" / "snap.json", cfg_model, fresh)
    assert step == 2 and train_cfg.extra["init"]["sha256"]
    assert all(torch.equal(weights[k], first[k].half().float()) for k in first)
    with pytest.raises(ValueError, match="its \\[model\\] differs from the configuration's"):
        run(_cfg(tmp_path, TOML.replace("channels = 8", "channels = 4")), {"out_dir": str(tmp_path / "c")}, "cpu",
            progress=False, init=tmp_path / "a")
