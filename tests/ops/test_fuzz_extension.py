"""Property-based fuzz of every mridpm._C entry point (tests/ops/_fuzz_worker.py, Hypothesis), in a subprocess.

Random extents, strides, capacities, flags, dtype and op codes, thread counts, seeds and offsets, valid and
not, with real buffers between guard bytes: every call raises exactly when the contract says it must, never
crashes, writes only the rows it owns and matches the PyTorch reference (the worker's docstring has the
properties). The worker runs in its own process with fixed, derandomized draws, so a segfault or an abort
fails this test (and names the last call) instead of killing pytest. .ci/asan runs the same worker against
an AddressSanitizer build; docs/kernels.md#fuzzing-the-extension has the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mridpm import _ext

WORKER = Path(__file__).with_name("_fuzz_worker.py")
EXAMPLES = 200  # per family (step, dc, poisson): 5-15 s on two cores (load-dependent), start-up included


def run_worker(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / "hypothesis"), PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, str(WORKER), "--examples", str(EXAMPLES), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
def test_fuzz_every_entry_point_in_a_subprocess(tmp_path):
    pytest.importorskip("hypothesis")
    proc = run_worker(tmp_path)
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        # the same draws again, each call printed before it runs: the last line is the call that crashed
        traced = run_worker(tmp_path, "--trace")
        last = [line for line in traced.stdout.splitlines() if " expect=" in line][-3:]
        pytest.fail(f"the fuzz worker failed ({how})\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n"
                    "last calls before the end:\n" + "\n".join(last), pytrace=False)
    lines = proc.stdout.splitlines()
    assert lines[-1] == "ok", proc.stdout
    stats = {line.split(":")[0].removeprefix("fuzzed "): line for line in lines if line.startswith("fuzzed ")}
    assert sorted(stats) == ["dc_cpu", "dc_cuda", "poisson_disc", "step_cpu", "step_cuda"], proc.stdout
    for entry in ("step_cpu", "dc_cpu", "poisson_disc"):  # each ran and refused calls
        assert " ran" in stats[entry] and "refused (ValueError)" in stats[entry], stats[entry]
