"""The bench runner's summary of the acceleration targets, from rows as the benches make them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Row
from bench.run import targets


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
