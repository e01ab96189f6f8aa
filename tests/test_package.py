"""The package: info() and the CLI, the fallback without the extension, the CUDA build."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import mridpm
from mridpm import _ext
from mridpm.info import format_info
from mridpm.ops._backend import KERNELS, resolve


def test_info_reports_versions_backends_and_devices():
    data = mridpm.info()
    assert data["mridpm"] == mridpm.__version__
    assert data["torch"] == torch.__version__
    assert data["backends"]["ref"] is True
    assert data["backends"]["cpu"] == _ext.cpu_built()
    assert data["devices"]["cpu"]["cores"] >= 1
    assert len(data["devices"]["cuda"]) == torch.cuda.device_count()


def test_info_lists_what_each_op_picks_for_cpu_and_cuda_tensors():
    data = mridpm.info()
    assert set(data["ops"]) == set(KERNELS) == {"fused_step", "dc", "attention"}
    for op, picks in data["ops"].items():
        assert picks["cpu"] == resolve("auto", torch.device("cpu"), op=op)
        cuda = resolve("auto", torch.device("cuda"), op=op) if torch.backends.cuda.is_built() else None
        assert picks["cuda"] == cuda
    assert data["ops"]["fused_step"]["cpu"] == data["ops"]["dc"]["cpu"] == ("cpu" if _ext.cpu_built() else "ref")
    assert data["ops"]["attention"]["cpu"] == "cpu"
    text = format_info(data)
    for op, picks in data["ops"].items():
        line = next(line for line in text.splitlines() if line.split()[:1] == [op])
        assert f"CPU tensors: {picks['cpu']} ({KERNELS[op][picks['cpu']]})" in line
        assert "CUDA tensors: " + ("- (no CUDA in this torch)" if picks["cuda"] is None else picks["cuda"]) in line


def test_cli_info_text_and_json():
    text = subprocess.run([sys.executable, "-m", "mridpm", "info"], capture_output=True, text=True, check=True)
    assert "mridpm" in text.stdout and "backends" in text.stdout
    out = subprocess.run([sys.executable, "-m", "mridpm", "info", "--json"], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout)["backends"]["ref"] is True
    exe = shutil.which("mridpm")
    if exe is not None:
        assert subprocess.run([exe, "info"], capture_output=True, check=True).returncode == 0


BLOCK_EXTENSION = """
import importlib.abc, sys, warnings
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mridpm._C":
            raise ImportError("blocked for this test")
        return None
sys.meta_path.insert(0, Block())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch, mridpm
    out = mridpm.fused_step([torch.ones(2, 3)], [2.0], 1.0, generator=mridpm.Generator(0))
    mridpm.fused_step([torch.ones(2, 3)], [2.0])
ours = [w for w in caught if "mridpm._C" in str(w.message)]
assert len(ours) == 1, [str(w.message) for w in caught]
assert mridpm.info()["backends"]["cpu"] is False
assert mridpm.info()["ops"]["fused_step"]["cpu"] == "ref"
from mridpm.ops import _contract
assert _contract.STEP_FLAGS == _contract.FALLBACK["step_flags"]  # the codes without the extension
ref = 2.0 + mridpm.ops.philox_randn(0, 0, (2, 3))
assert torch.allclose(out, ref), (out, ref)
try:
    mridpm.fused_step([torch.ones(2, 3)], [2.0], backend="cpu")
except RuntimeError as err:
    assert "mridpm._C" in str(err)
else:
    raise AssertionError("backend='cpu' without the extension must raise")
print("fallback ok")
"""


def test_missing_extension_falls_back_with_one_warning():
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", BLOCK_EXTENSION], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "fallback ok" in res.stdout


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA compiler on this machine")
def test_cuda_kernels_were_compiled():
    """Where nvcc is on the PATH the build compiles the CUDA kernels (CI checks they build)."""
    if os.environ.get("MRIDPM_EXPECT_CUDA_BUILD", "1") == "0":
        pytest.skip("the build was configured without CUDA on purpose")
    assert _ext.cuda_built()
