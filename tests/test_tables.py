"""The one Markdown table formatter: headers, per-column formats, and the defaults for the rest."""

from mridpm.tables import markdown_table


def test_columns_headers_and_formats() -> None:
    rows = [{"accel": 8.0, "method": "dds", "psnr": 31.234, "evals": 50.0, "extra": 1},
            {"accel": 4.0, "method": "CG-SENSE", "psnr": 27.0, "evals": 0.0}]
    table = markdown_table(rows, {"accel": "accel", "method": "method", "psnr": "PSNR (dB)", "evals": "model evals"},
                           {"accel": "{:g}x", "psnr": "{:.2f}", "evals": "{:.0f}"})
    assert table.splitlines() == ["| accel | method | PSNR (dB) | model evals |", "|---|---|---|---|",
                                  "| 8x | dds | 31.23 | 50 |", "| 4x | CG-SENSE | 27.00 | 0 |"]


def test_default_columns_and_cells() -> None:
    """Every key in the order first seen; floats to 4 significant digits, other values as str, a missing
    key or None empty."""
    rows = [{"method": "a", "auroc": 0.912345, "t": 150}, {"method": "b", "dice": None, "auroc": 1 / 3, "x": "y"}]
    assert markdown_table(rows).splitlines() == ["| method | auroc | t | dice | x |", "|---|---|---|---|---|",
                                                 "| a | 0.9123 | 150 |  |  |", "| b | 0.3333 |  |  | y |"]
    assert markdown_table(rows, ["t", "method"]).splitlines()[0] == "| t | method |"
