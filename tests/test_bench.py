"""The bench runner's summary of the acceleration targets, from rows as the benches make them; the step
bench's floor rows and ratio columns."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import bench_step
from bench import run as runner
from bench.common import Row, print_table
from bench.run import targets

from mridpm import _ext


def test_targets_read_the_rows_they_name():
    shape = "(67108864,)"
    results = {
        "step": [Row(shape, "float32", "copy", 100.0, 4000.0, 0.0),
                 Row(shape, "float32", "eager", 600.0, 600.0, 1.0),
                 Row(shape, "float32", "mridpm-cuda", 110.0, 3600.0, 5.5),
                 Row(shape, "float32", "mridpm-triton", 120.0, 3300.0, 5.0)],
        "dc": [Row("project 8x15x320x320", "complex64", "mridpm", 1.0, 0.0, 1.5)],
        "attention": [Row("block 16^3 tokens d=32", "float16", "block-mridpm", 1.0, 0.0, 1.4),
                      Row("block 32^3 tokens d=64", "float16", "block-mridpm", 1.0, 0.0, 1.2)],
    }
    got = {t["target"]: (t["measured"], t["met"]) for t in targets(results)}
    assert got["fused step float32 64M: bandwidth / copy"] == (0.9, True)  # the best kernel against the copy
    assert got["fused step float32 64M: speed-up over eager"] == (5.5, True)
    assert got["fused step bfloat16 64M: bandwidth / copy"] == (None, None)  # not measured
    assert got["DC projection 8x15x320x320: speed-up over eager"] == (1.5, False)
    assert got["3D attention block: speed-up over the SDPA block (worst case)"] == (1.2, False)
    assert got["DDS with brain64c, CUDA graphs: speed-up over eager"] == (None, None)


def test_step_bench_prints_floor_rows_and_both_ratios(monkeypatch, capsys):
    """Every configuration gets a floor row (one torch.add moving the step's bytes) and every row its
    ratio to eager and to the floor; each case runs once, timed by a stand-in clock (no real timing)."""
    if not _ext.cpu_built():
        pytest.skip("the CPU kernel needs mridpm._C")
    fake_us = iter([600.0, 100.0, 125.0] * 2)
    monkeypatch.setattr(bench_step, "measure", lambda fn, device: (fn(), next(fake_us))[1])
    for dtype in (torch.float32, torch.complex64):
        rows = bench_step.bench((2, 3, 8), dtype, torch.device("cpu"), compile_=False)
        got = {r.backend: (r.vs_eager, r.vs_floor) for r in rows}
        assert got == {"eager": (1.0, 100 / 600), "floor": (6.0, 1.0), "mridpm-cpu": (4.8, 0.8)}
    print_table(rows)
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[-4:] == ["vs", "eager", "vs", "floor"]
    assert [line.split()[4] for line in lines] == ["eager", "floor", "mridpm-cpu"]
    assert lines[2].endswith("4.80x     0.80x")


def test_runner_saves_after_every_bench(monkeypatch, tmp_path):
    """A run cut short (gpu.sh's time limit) keeps the benches it finished: the JSON is rewritten after each."""
    fake = types.SimpleNamespace(collect=lambda device, quick, **kw: [Row("(2,)", "float32", "eager", 1.0, 1.0, 1.0)])
    monkeypatch.setattr(runner.importlib, "import_module", lambda name: fake)
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    seen = []

    def after(results):
        path = runner.write(results, torch.device("cpu"), {"gpu": "none"}, complete=False)
        seen.append(sorted(json.loads(path.read_text())["benches"]))

    runner.run(("step", "dc"), torch.device("cpu"), True, False, after)
    assert seen == [["step"], ["dc", "step"]]
    data = json.loads(runner.write({}, torch.device("cpu"), {}, complete=True).read_text())
    assert data["complete"] is True and data["targets"]
