"""The CUDA kernels' 64-bit index paths, memory checks and failure reporting, without a GPU.

Indices past 2^31 and 2^32 are reached through index arithmetic alone: the emulation runs the last
blocks of a launch over a huge virtual problem, and maps only the few windows those blocks touch to
real memory (an access anywhere else is reported as a fault, so the test also proves the bounds).
"""

import os
import subprocess
import sys

import pytest
import torch

from mridpm import _ext
from mridpm.ops._contract import DC_OPS, DC_SIGN, NOISE
from mridpm.ops.philox import philox_randn

pytestmark = pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
TILE, GRID_CAP = 1024, 1 << 20  # csrc/cuda/step_kernel.h kStepTile, portable.h kGridCap
V_OUT, V_IN = 1 << 44, 1 << 45  # virtual addresses of the huge buffers


def ramp(i: torch.Tensor) -> torch.Tensor:
    """The input value at element index i (int64): exact in float32."""
    return ((i % 1000) - 500).to(torch.float32) / 64


def test_step_indices_past_2_to_the_32():
    """3 rows of 2^31 + 5128 elements (output 6.4e9 elements, noise counters past 2^32), one input expanded
    along the batch: the last block of the capped grid walks 6 tiles, at flat offsets past 2^32."""
    ext = _ext.extension()
    batch, inner = 3, 2**31 + 5 * TILE + 8
    tiles_per_row = -(-inner // TILE)
    tiles, grid = batch * tiles_per_row, GRID_CAP
    windows, checks = [], []
    for t in range(grid - 1, tiles, grid):  # the tiles of the last block
        b, i0 = t // tiles_per_row, (t % tiles_per_row) * TILE
        n = min(TILE, inner - i0)
        x = ramp(i0 + torch.arange(n))
        out = torch.full((n,), float("nan"))
        windows += [(V_OUT + 4 * (b * inner + i0), out.data_ptr(), 4 * n), (V_IN + 4 * i0, x.data_ptr(), 4 * n)]
        checks.append((b, i0, n, x, out))
    assert len(checks) == 6 and max(b * inner + i0 for b, i0, *_ in checks) > 2**32
    seed = 11
    report = ext._step_emulated(0, NOISE, batch, inner, (V_OUT, inner, batch * inner), (0, 0, 0), [(V_IN, 0, inner)],
                               (0, 0, 0), [2.0, 0, 0, 0, 0, 1.0, 0.5], seed, 0, (0, 0, 0), blocks=(grid - 1, grid),
                               windows=windows, shared_rows=True)
    assert report == {"grid": grid, "threads": 256, "blocks_run": 1, "vec": True}
    for b, i0, n, x, out in checks:
        want = 2.0 * x + 0.5 * philox_randn(seed, b * inner + i0, (n,))
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_dc_indices_past_2_to_the_32():
    """coil_expand of 2 coils of a 65536 x 32770 image (8.6e9 complex outputs, signed): the last two blocks."""
    ext = _ext.extension()
    h, w = 65536, 32770
    n = h * w
    total = 2 * n
    grid = -(-total // 256)  # uncapped: every thread runs once
    e0 = (grid - 2) * 256
    e = torch.arange(e0, total)
    i = e % n
    x = torch.complex(ramp(i), ramp(i + 7))
    maps = torch.complex(ramp(e + 3), -ramp(e))
    out = torch.full_like(x, float("nan"))
    windows = [(V_OUT + 8 * e0, out.data_ptr(), out.nbytes), (V_IN + 8 * e0, maps.data_ptr(), maps.nbytes),
               (V_IN * 2 + 8 * int(i[0]), x.data_ptr(), x.nbytes)]
    buffers = [(V_IN * 2, 0, 2 * n), (V_IN, 0, 2 * total), (0, 0, 0), (0, 0, 0), (0, 0, 0), (V_OUT, 0, 2 * total)]
    report = ext._dc_emulated(DC_OPS["expand"], DC_SIGN, [1, 2, n, h, w, 1, 1, 1], buffers, [1.0, 1.0, 1.0],
                             grid_cap=2**31 - 1, blocks=(grid - 2, grid), windows=windows, spatial=[h, w])
    assert report["grid"] == grid > 2**24 and report["blocks_run"] == 2
    g = 1 - 2 * ((i // w + i % w) % 2)
    torch.testing.assert_close(out, g * maps * x)


def test_noise_state_read_when_the_kernel_runs():
    """A CUDA graph replay's (seed, base offset) pair is read by each thread from memory (step.h step_rng)."""
    ext = _ext.extension()
    out, state = torch.zeros(2, 1030), torch.tensor([2**40 + 9, 2**32 - 7], dtype=torch.int64)
    zeros = torch.zeros(2, 1030)
    ext._step_emulated(0, NOISE, 2, 1030, (out.data_ptr(), 1030, out.numel()), (0, 0, 0),
                       [(zeros.data_ptr(), 1030, zeros.numel())], (0, 0, 0), [0.0, 0, 0, 0, 0, 1.0, 1.0], 0, 5,
                       (state.data_ptr(), 0, 2), grid_cap=3)
    torch.testing.assert_close(out, philox_randn(2**40 + 9, 2**32 - 2, (2, 1030)), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="grid_cap"):
        ext._step_emulated(0, 0, 2, 1030, (out.data_ptr(), 1030, out.numel()), (0, 0, 0),
                           [(zeros.data_ptr(), 1030, zeros.numel())], (0, 0, 0), [0.0] * 7, 0, 0, (0, 0, 0),
                           grid_cap=0)


def test_an_access_outside_the_buffers_is_a_fault():
    """The emulation checks every access: a window one element short is reported, naming the thread."""
    ext = _ext.extension()
    x, out = torch.ones(2, 8), torch.zeros(2, 8)
    args = (0, 0, 2, 8, (out.data_ptr(), 8, 16), (0, 0, 0), [(x.data_ptr(), 8, 16)], (0, 0, 0),
            [1.0, 0, 0, 0, 0, 1.0, 0])
    ext._step_emulated(*args, 0, 0, (0, 0, 0))
    short = [(out.data_ptr(), out.data_ptr(), 64), (x.data_ptr(), x.data_ptr(), 60)]
    with pytest.raises(RuntimeError, match=r"16 bytes at \d+ by block 1, thread 1 lies outside every buffer"):
        ext._step_emulated(*args, 0, 0, (0, 0, 0), windows=short)


@pytest.mark.parametrize(("status", "error"), [(7, RuntimeError), (11, RuntimeError), (12, RuntimeError),
                                               (5, ValueError), (8, ValueError), (9, ValueError)])
def test_cuda_failures_raise_runtime_error_and_bad_arguments_value_error(status, error):
    with pytest.raises(error, match=r"mridpm\._C: "):
        _ext.extension()._raise_status(status)


def test_driver_requirement_names_both_versions():
    problem = _ext.extension()._cuda_driver_problem
    message = problem(12040, 13000)
    for part in ("CUDA 13.0 runtime", "CUDA 13.0 or newer", "driver release 580", "supports CUDA 12.4"):
        assert part in message, message
    assert "no NVIDIA driver" in problem(0, 12080)
    assert problem(13000, 13000) == problem(13020, 13010) == problem(12080, 12040) == problem(0, 0) == ""


def test_versions_and_driver_problem_of_this_build():
    versions = _ext.cuda_versions()
    assert set(versions) == {"driver", "runtime"}
    if not _ext.cuda_built():
        assert versions["runtime"] is None and _ext.cuda_driver_problem() is None


def test_synchronous_check_is_opt_in():
    """MRIDPM_CUDA_SYNC=1 turns on the stream synchronization after each launch (read once; settable)."""
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('mridpm._C', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); a = m._cuda_sync(); m._set_cuda_sync(not a); "
            "print(a, m._cuda_sync())")  # the extension alone: importing mridpm would take seconds
    for value, want in [("1", "True False"), ("0", "False True"), (None, "False True")]:
        env = {k: v for k, v in os.environ.items() if k != "MRIDPM_CUDA_SYNC"}
        if value is not None:
            env["MRIDPM_CUDA_SYNC"] = value
        run = subprocess.run([sys.executable, "-c", code, _ext.extension().__file__], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.stdout.split()[-2:] == want.split(), run.stderr
