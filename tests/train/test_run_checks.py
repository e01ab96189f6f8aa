"""`run()` refuses bad [train] / [model] values, unusable devices and missing resume points with one-line
ValueErrors naming the key, before any file is written; and resumes from a named checkpoint."""

import pytest
import torch

from mridpm.train import TrainConfig, train
from mridpm.train.run import run

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
