"""`mridpm evaluate-tasks` on one held-out slice per task: rows, baselines beaten, figures."""

import json

from mridpm import cli


def test_evaluate_tasks_on_one_slice(tmp_path, capsys):
    out = tmp_path / "rows.json"
    fig = tmp_path / "tasks.png"
    assert cli.main(["evaluate-tasks", "--slices", "1", "--json", str(out), "--figure", str(fig)]) == 0
    rows = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "segmentation (1 held-out slices)" in table and "| method |" in table
    by = {(r["task"], r["method"], r.get("sigma"), r.get("factor")): r for r in rows}
    seg = {m: r for (t, m, _, _), r in by.items() if t == "segmentation"}
    assert seg["DPM, consensus of 8"]["dice_mean"] > seg["Otsu thresholds"]["dice_mean"] + 0.1
    assert seg["DPM, consensus of 8"]["dice_mean"] > seg["k-means"]["dice_mean"] + 0.1
    for sigma in (0.05, 0.1):
        noisy = by[("denoising", "noisy input", sigma, None)]["psnr"]
        assert by[("denoising", "DPM (DDIM from the matching t)", sigma, None)]["psnr"] > noisy + 5
    for f in (2, 4):
        psnr = {m: by[("superres", m, None, f)]["psnr"] for m in ("DPM with low-res k-space DC", "zero-padded k-space",
                                                                 "bicubic")}
        assert psnr["DPM with low-res k-space DC"] > psnr["zero-padded k-space"] > psnr["bicubic"]
    anomaly = [r for r in rows if r["task"] == "anomaly"]
    assert len(anomaly) >= 2 and all(0.5 < r["auroc"] <= 1 and 0 <= r["best_dice"] <= 1 for r in anomaly)
    for task in ("segmentation", "anomaly", "denoising", "superres"):
        assert (tmp_path / f"tasks_{task}.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_task(capsys):
    assert cli.main(["evaluate-tasks", "--tasks", "segmentation,telepathy"]) == 2
    assert "unknown tasks ['telepathy']" in capsys.readouterr().err


def test_held_out_slices_are_outside_training():
    from mridpm.nets.priors import load_prior
    from mridpm.tasks.evaluation import HELD_OUT, _held_out
    from mridpm.train.run import phantom_slices

    p = load_prior("seg64")
    data = p.info["train"]["extra"]["data"]
    assert set(_held_out(p, None)).isdisjoint(phantom_slices(data)) and len(_held_out(p, None)) == 15
    lo, hi = load_prior("brain64").info["train"]["extra"]["data"]["z"]
    assert all(not lo <= z < hi for z in HELD_OUT)


def test_json_keeps_the_rows_of_tasks_not_run(tmp_path, capsys):
    """--json with --overwrite replaces the rows of the tasks run and keeps the others'; without
    --overwrite an existing file is refused."""
    out = tmp_path / "rows.json"
    other = {"task": "registration", "method": "demons", "dice": 0.9}
    stale = {"task": "superres", "method": "old", "psnr": 1.0}
    out.write_text(json.dumps([other, stale]))
    assert cli.main(["evaluate-tasks", "--tasks", "superres", "--slices", "1", "--json", str(out)]) != 0
    assert cli.main(["evaluate-tasks", "--tasks", "superres", "--slices", "1", "--json", str(out),
                     "--overwrite"]) == 0
    rows = json.loads(out.read_text())
    assert rows[0] == other and stale not in rows and {r["task"] for r in rows[1:]} == {"superres"}
