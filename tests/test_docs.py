"""The README and docs/*.md quote numbers only from the files the project writes, and say what they show.

Each quoted table (or bench printout) is introduced by `<!-- numbers: NAME (SOURCE) -->`; the checker
NAME rebuilds every cell from SOURCE (docs/*.json, bench/results/*.json, the bundled priors' cards,
the bounds tests/test_reconstruction.py asserts, the targets bench/run.py sets) with the rounding the
text uses, so editing a number in the text or rerunning the job that writes the file fails here until
the two agree again. A table of decimals without a marker fails too. Numbers in running text are
checked as whole phrases rebuilt from the same files, and the claims the text makes about them (which
method is fastest, which baseline it beats) against the files. Also: the README's test command is the
one .ci/run runs, and every relative link and anchor in the README and docs resolves. Pure text and
JSON, no torch: well under a second.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PRIORS = ROOT / "python" / "mridpm" / "nets" / "priors"


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def load(source: str) -> object:
    return json.loads((ROOT / source).read_text())


def flat(text: str) -> str:
    """Running text with line breaks and repeated spaces as single spaces."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# The sources


def evaluate_row(accel: float, method: str) -> dict:
    found = [r for r in load("docs/evaluate.json") if r["accel"] == accel and r["method"] == method]
    assert len(found) == 1, f"docs/evaluate.json has {len(found)} rows for {accel}x {method}"
    return found[0]


def task_rows(task: str, **match: object) -> list[dict]:
    return [r for r in load("docs/tasks.json") if r["task"] == task and all(r.get(k) == v for k, v in match.items())]


def task_row(task: str, **match: object) -> dict:
    found = task_rows(task, **match)
    assert len(found) == 1, f"docs/tasks.json has {len(found)} {task} rows for {match}"
    return found[0]


def bench_rows(source: str, key: str = "rows") -> list[dict]:
    data = load(source)
    return data["benches"][key] if "benches" in data else data[key]


def bench_row(rows: list[dict], shape: str, backend: str, dtype: str) -> dict:
    found = [r for r in rows if r["shape"] == shape and r["backend"] == backend and r["dtype"] == dtype]
    assert len(found) == 1, f"{len(found)} bench rows for {shape} {dtype} {backend}"
    return found[0]


def machine(source: str) -> dict:
    return load(source)["machine"]


def machine_line(source: str) -> str:
    m = machine(source)
    return (f"{m['processor']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
            f"commit {m['commit']}")


def prior_card(name: str) -> dict:
    return json.loads((PRIORS / f"{name}.json").read_text())


def prior_parameters(name: str) -> int:
    """Elements in the prior's safetensors file, from its header alone."""
    with open(PRIORS / f"{name}.safetensors", "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return sum(math.prod(t["shape"]) for t in header.values())


def prior_megabytes(name: str) -> float:
    return (PRIORS / f"{name}.safetensors").stat().st_size / 1e6


ORDINAL = {2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth"}


def z_range(data: dict) -> str:
    """[start, stop) of a training config's z as the text writes it, inclusive."""
    z0, z1 = data["z"]
    return f"z = {z0}..{z1 - 1}"


# ---------------------------------------------------------------------------------------------------
# Quoted tables and printouts

MARKER = re.compile(r"^<!-- numbers: ([a-z0-9-]+) \(([^()]*)\) -->$")
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def cells(line: str) -> list[str]:
    """A markdown table row's cells, bold marks dropped (escaped pipes stay inside their cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("**", "") for c in parts]


@dataclass
class Quoted:
    page: str
    line: int  # 1-based line of the table or code block
    name: str
    source: str
    intro: str  # text between the marker and the table
    header: list[str]
    rows: list[list[str]]
    code: str | None


def blocks(path: Path) -> list[tuple[int, str, list[str]]]:
    """(first line index, 'table' or 'code', lines) of every table and fenced block of a page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append((i, "code", lines[i + 1 : j]))
            i = j + 1
        elif lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((i, "table", lines[i:j]))
            i = j
        else:
            i += 1
    return out


def quoted(path: Path) -> list[Quoted]:
    """The marked tables of a page; a marker must be followed, within three lines of text, by one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = {i: (kind, body) for i, kind, body in blocks(path)}
    out = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if m is None:
            if "<!-- numbers" in line:
                raise AssertionError(f"{rel(path)}:{i + 1}: malformed marker {line.strip()!r}")
            continue
        j = i + 1
        while j < len(lines) and j not in starts and j - i <= 3:
            j += 1
        if j not in starts:
            raise AssertionError(f"{rel(path)}:{i + 1}: marker {m.group(1)} is not followed by a table or block")
        kind, body = starts[j]
        intro = "\n".join(lines[i + 1 : j])
        if kind == "table":
            out.append(Quoted(rel(path), j + 1, m.group(1), m.group(2), intro, cells(body[0]),
                              [cells(r) for r in body[2:]], None))
        else:
            out.append(Quoted(rel(path), j + 1, m.group(1), m.group(2), intro, [], [], "\n".join(body) + "\n"))
    return out


def rows_by(q: Quoted, width: int = 1) -> dict:
    """The rows keyed by their first `width` cells (a duplicate key is an error)."""
    out: dict = {}
    for row in q.rows:
        key = row[0] if width == 1 else tuple(row[:width])
        assert key not in out, f"{q.page}:{q.line}: row {key} appears twice"
        out[key] = row
    return out


def compare(q: Quoted, key: object, shown: list[str], expected: list[str]) -> list[str]:
    if shown == expected:
        return []
    return [f"{q.page}:{q.line} ({q.name}) row {key}: the text shows {shown}, {q.source} gives {expected}"]


def same_keys(q: Quoted, shown: object, expected: object) -> list[str]:
    shown, expected = set(shown), set(expected)  # type: ignore[call-overload]
    if shown == expected:
        return []
    return [f"{q.page}:{q.line} ({q.name}): rows {sorted(map(str, shown - expected))} have no source; "
            f"rows {sorted(map(str, expected - shown))} of the source are missing"]


def header_is(q: Quoted, expected: list[str]) -> list[str]:
    return [] if q.header == expected else [f"{q.page}:{q.line} ({q.name}): header {q.header}, expected {expected}"]


# --- reconstruction (docs/evaluate.json)


def check_evaluate(q: Quoted) -> list[str]:
    errors = header_is(q, ["accel", "method", "PSNR (dB)", "SSIM", "NMSE", "s / slice", "model evals"])
    rows = rows_by(q, 2)
    for (accel, method), row in rows.items():
        r = evaluate_row(float(accel.rstrip("x")), method)
        errors += compare(q, (accel, method), row, [f"{r['accel']:g}x", method, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}",
                                                    f"{r['nmse']:.4f}", f"{r['seconds']:.3f}", f"{r['evals']:.0f}"])
    expected = {(f"{r['accel']:g}x", r["method"]) for r in load("docs/evaluate.json")}
    return errors + same_keys(q, rows, expected)


HEADS = "docs/evaluate_heads.json"
HEADS_BASELINES = ("zero-filled", "CG-SENSE", "L1-wavelet")


def heads_rows() -> dict[tuple[str, str, str], dict]:
    """The full-size evaluation's rows keyed by (data, sampling, method)."""
    out: dict = {}
    for r in load(HEADS):
        key = (r["data"], r["sampling"], r["method"])
        assert key not in out, f"{HEADS} has {key} twice"
        out[key] = r
    return out


def heads_cases() -> list[tuple[str, str]]:
    """The (data, sampling) cases of the full-size evaluation, in its order."""
    return list(dict.fromkeys(k[:2] for k in heads_rows()))


def check_evaluate_heads(q: Quoted) -> list[str]:
    errors = header_is(q, ["data", "sampling", "method", "PSNR (dB)", "SSIM", "NMSE", "s / slice", "model evals"])
    rows, src = rows_by(q, 3), heads_rows()
    for key, row in rows.items():
        if (r := src.get(key)) is not None:
            errors += compare(q, key, row, [*key, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['nmse']:.4f}",
                                            f"{r['seconds']:.3f}", f"{r['evals']:.0f}"])
    return errors + same_keys(q, rows, src)


def check_evaluate_heads_summary(q: Quoted) -> list[str]:
    errors = header_is(q, ["data", "sampling", "CG-SENSE", "L1-wavelet", "DDS", "DDS - best baseline (dB)"])
    rows, src = rows_by(q, 2), heads_rows()
    for key, row in rows.items():
        if (key[0], key[1], "dds") not in src:
            continue
        base = {m: src[(*key, m)]["psnr"] for m in HEADS_BASELINES}
        dds = src[(*key, "dds")]["psnr"]
        errors += compare(q, key, row, [*key, f"{base['CG-SENSE']:.2f}", f"{base['L1-wavelet']:.2f}", f"{dds:.2f}",
                                        f"{dds - max(base.values()):+.2f}"])
    return errors + same_keys(q, rows, heads_cases())


# --- speed (bench/results/*.json)

ALL_CPU = "bench/results/all-cpu.json"
# (bench, case) as the speed table writes them -> (bench key, shape, dtype, baseline, compile row, mridpm row)
SPEED = {
    ("fused step", "DDIM eta > 0, 4x3x256x256 float32"):
        ("step", "(4, 3, 256, 256)", "float32", "eager", "compile", "mridpm-cpu"),
    ("fused step", "8x1x320x320 complex64"):
        ("step", "(8, 1, 320, 320)", "complex64", "eager", "compile", "mridpm-cpu"),
    ("sampler step", "DDIM eta = 1, 1x4x64x64 (vs diffusers)"):
        ("sampler", "ddim eta=1 (1, 4, 64, 64)", "float32", "diffusers", None, "mridpm-philox"),
    ("sampler step", "DPM-Solver++ 2M, 16x4x64x64 (vs diffusers)"):
        ("sampler", "dpm++ 2m (16, 4, 64, 64)", "float32", "diffusers", None, "mridpm"),
    ("DC projection", "8x15x320x320"): ("dc", "project 8x15x320x320", "complex64", "eager", None, "mridpm"),
    ("DC gradient", "8x15x640x368"): ("dc", "gradient 8x15x640x368", "complex64", "eager", None, "mridpm"),
    ("3D attention", "16^3 tokens, d = 32 (vs SDPA math)"):
        ("attention", "16^3 tokens d=32", "float32", "sdpa-math", None, "mridpm"),
    ("DDS step, no network", "4x15x320x320"): ("recon", "dds step 4x15x320x320", "complex64", "eager", None, "mridpm"),
    ("DDS loop with brain64c", "per evaluation, 1x15x320x320"):
        ("recon", "dds loop/eval 1x15x320x320", "complex64", "eager", None, "mridpm"),
}


def ms(us: float) -> str:
    """Milliseconds to three significant figures, whole milliseconds from 100 ms up."""
    v = us / 1e3
    digits = 0 if v >= 100 else 1 if v >= 10 else 2 if v >= 1 else 3
    return f"{v:.{digits}f} ms"


def check_speed(q: Quoted) -> list[str]:
    errors = header_is(q, ["bench", "case", "eager", "torch.compile", "mridpm", "mridpm / eager"])
    rows = rows_by(q, 2)
    for key, row in rows.items():
        if key not in SPEED:
            continue
        bench, shape, dtype, base, compiled, ours = SPEED[key]
        found = bench_rows(ALL_CPU, bench)
        mine = bench_row(found, shape, ours, dtype)
        expected = [*key, ms(bench_row(found, shape, base, dtype)["median_us"]),
                    ms(bench_row(found, shape, compiled, dtype)["median_us"]) if compiled else "",
                    ms(mine["median_us"]), f"{mine['vs_eager']:.2f}x"]
        errors += compare(q, key, row, expected)
    return errors + same_keys(q, rows, SPEED)


def _measured(v: float | None) -> bool:
    """A ratio the bench measured: not null (JSON) and not NaN."""
    return v is not None and v == v


def bench_table(rows: list[dict]) -> str:
    """The table bench/common.py prints for these rows."""
    w = max([22, *(len(r["shape"]) + 2 for r in rows)])
    floors = any(_measured(r.get("vs_floor")) for r in rows)  # a "vs floor" column where a floor was measured
    out = [f"{'shape':<{w}}{'dtype':<10}{'backend':<16}{'median':>12}{'GB/s':>9}{'vs eager':>10}"
           + (f"{'vs floor':>10}" if floors else "")]

    def ratio(v: float | None) -> str:
        return f"{v:>9.2f}x" if _measured(v) else f"{'-':>10}"

    for r in rows:
        us = r["median_us"]
        median = "-" if not _measured(us) else f"{us / 1e3:.3f} ms" if us >= 1000 else f"{us:.1f} us"
        out.append(f"{r['shape']:<{w}}{r['dtype']:<10}{r['backend']:<16}{median:>12}{r['gbps']:>9.1f}"
                   f"{ratio(r['vs_eager'])}" + (ratio(r.get("vs_floor")) if floors else ""))
    return "\n".join(out) + "\n"


def check_bench(key: str) -> Callable[[Quoted], list[str]]:
    def check(q: Quoted) -> list[str]:
        errors = []
        if q.code is None:
            return [f"{q.page}:{q.line} ({q.name}): expected a printout in a code block"]
        if q.code != bench_table(bench_rows(q.source, key)):
            errors.append(f"{q.page}:{q.line} ({q.name}): the printout differs from {q.source} [{key}]; paste "
                          f"the table the bench printed for it")
        if machine_line(q.source) not in flat(q.intro):
            errors.append(f"{q.page}:{q.line} ({q.name}): the line above the printout must name its machine, "
                          f"'{machine_line(q.source)}'")
        return errors

    return check


def check_targets(q: Quoted) -> list[str]:
    src = (ROOT / q.source).read_text()
    dtypes = ast.literal_eval(re.search(r"for dtype in (\([^)]*\))", src).group(1))  # type: ignore[union-attr]
    expected = [[name.replace("{dtype}", " / ".join(dtypes)), f"{float(goal)}{unit}"]
                for name, goal, unit in re.findall(r'add\(f?"([^"]+)",[^\n]*?,\s*([\d.]+),\s*"(x?)"\)', src)]
    errors = header_is(q, ["target", "goal"])
    if not expected:
        errors.append(f"no targets found in {q.source}")
    if q.rows != expected:
        errors.append(f"{q.page}:{q.line} (targets): the text lists {q.rows}, {q.source} sets {expected}")
    return errors


# --- tasks (docs/tasks.json)

SEGMENTATION = {"multi-level Otsu thresholds": "Otsu thresholds", "k-means": "k-means",
                "DPM (`seg64`), 1 sample": "DPM, 1 sample", "DPM, consensus of 8": "DPM, consensus of 8"}
ANOMALY = {
    "DAE residual (one-step clean estimate), Gaussian noise, `brain64`": "DAE residual (one step), gaussian noise",
    "AnoDDPM (25 DDIM steps), Gaussian noise, `brain64`": "AnoDDPM (DDIM), gaussian noise",
    "DAE residual, simplex noise, `anoddpm64`": "DAE residual (one step), simplex noise",
    "AnoDDPM (25 DDIM steps), simplex noise, `anoddpm64`": "AnoDDPM (DDIM), simplex noise",
}
DENOISING = {"noisy input": "noisy input", "DPM, DDIM from the matching timestep": "DPM (DDIM from the matching t)"}
SUPERRES = {"bicubic": "bicubic", "zero-padded k-space": "zero-padded k-space",
            "DPM with the low-resolution k-space kept": "DPM with low-res k-space DC"}


def check_segmentation(q: Quoted) -> list[str]:
    errors = header_is(q, ["segmentation (Dice)", "CSF", "GM", "WM", "mean"])
    rows = rows_by(q)
    for label, row in rows.items():
        if label in SEGMENTATION:
            r = task_row("segmentation", method=SEGMENTATION[label])
            errors += compare(q, label, row, [label, *(f"{r[k]:.3f}" for k in ("dice_csf", "dice_gm", "dice_wm",
                                                                                 "dice_mean"))])
    return errors + same_keys(q, rows, SEGMENTATION)


def check_columns(q: Quoted, task: str, labels: dict[str, str], column: Callable[[str], dict],
                  cell: Callable[[dict], str]) -> list[str]:
    """A table whose rows are methods and whose columns (after the first) are one setting each."""
    errors, rows = [], rows_by(q)
    settings = [column(h) for h in q.header[1:]]
    for label, row in rows.items():
        if label in labels:
            errors += compare(q, label, row, [label, *(cell(task_row(task, method=labels[label], **s))
                                                     for s in settings)])
    all_settings = {tuple(sorted((k, r[k]) for k in settings[0])) for r in task_rows(task)} if settings else set()
    shown = {tuple(sorted(s.items())) for s in settings}
    if shown != all_settings:
        errors.append(f"{q.page}:{q.line} ({q.name}): columns {sorted(shown)}, docs/tasks.json has "
                      f"{sorted(all_settings)}")
    return errors + same_keys(q, rows, labels)


def setting(pattern: str, key: str, kind: type) -> Callable[[str], dict]:
    def parse(header: str) -> dict:
        m = re.fullmatch(pattern, header)
        assert m is not None, f"column header {header!r} does not match {pattern!r}"
        return {key: kind(m.group(1))}

    return parse


def check_methods(task: str, title: str, columns: list[tuple[str, str, str]]) -> Callable[[Quoted], list[str]]:
    """A table with a row per method of `task` (its first cell the method, as in docs/tasks.json) and
    columns (header, key, format) after the title."""

    def check(q: Quoted) -> list[str]:
        errors = header_is(q, [title, *(h for h, _, _ in columns)])
        rows = rows_by(q)
        for label, row in rows.items():
            if task_rows(task, method=label):
                r = task_row(task, method=label)
                errors += compare(q, label, row, [label, *("" if r.get(k) is None else f.format(r[k])
                                                           for _, k, f in columns)])
        return errors + same_keys(q, rows, [r["method"] for r in task_rows(task)])

    return check


def check_anomaly(q: Quoted) -> list[str]:
    errors = header_is(q, ["anomaly detection (pixel AUROC / best Dice in the brain)", *q.header[1:]])
    return errors + check_columns(q, "anomaly", ANOMALY, setting(r"t = (\d+)", "t", int),
                                  lambda r: f"{r['auroc']:.3f} / {r['best_dice']:.3f}")


def check_denoising(q: Quoted) -> list[str]:
    errors = header_is(q, ["denoising (PSNR dB / SSIM)", *q.header[1:]])
    return errors + check_columns(q, "denoising", DENOISING, setting(r"sigma = ([\d.]+)", "sigma", float),
                                  lambda r: f"{r['psnr']:.2f} / {r['ssim']:.3f}")


def check_superres(q: Quoted) -> list[str]:
    size = prior_card("brain64")["image_size"][0]
    errors = [f"{q.page}:{q.line} (superres): column {h!r} should read {int(h[0])}x ({size // int(h[0])}x"
              f"{size // int(h[0])} k-space)" for h in q.header[1:]
              if h != f"{int(h[0])}x ({size // int(h[0])}x{size // int(h[0])} k-space)"]
    errors += header_is(q, ["super-resolution (PSNR dB / SSIM)", *q.header[1:]])
    return errors + check_columns(q, "superres", SUPERRES, setting(r"(\d+)x \(.*\)", "factor", int),
                                  lambda r: f"{r['psnr']:.2f} / {r['ssim']:.3f}")


# --- priors (python/mridpm/nets/priors)

PRIOR_NAMES = ("brain64", "brain64c", "seg64", "anoddpm64", "heads_c")


def check_priors(q: Quoted) -> list[str]:
    errors = header_is(q, ["prior", "what it models", "prediction", "training steps", "parameters", "weights"])
    rows = rows_by(q)
    for label, row in rows.items():
        name = label.strip("`")
        if name in PRIOR_NAMES:
            card = prior_card(name)
            size = f"{prior_megabytes(name):.1f} MB"
            errors += compare(q, label, row, [label, row[1], card["prediction"], str(card["step"]),
                                              f"{prior_parameters(name) / 1e6:.1f}M", size])
    return errors + same_keys(q, rows, [f"`{n}`" for n in PRIOR_NAMES])


# --- the exact-posterior bounds (tests/test_reconstruction.py)

POSTERIOR = {  # (case, methods) -> the test function asserting the row's bounds, or the key of its `bounds`
    ("single coil, 4x", "projection, pc, langevin (5 steps per level), dds (100 steps), kspace"):
        "test_exact_gaussian_posterior_single_coil",
    ("single coil, 4x", "dps (its bias, measured)"): "test_dps_bias_is_measured",
    ("single coil, 4x", "dds, warm start at t = 500"): "test_warm_start_starts_late_and_stays_exact",
    ("2 coils, 4x", 'dds (`direction="x0"`, 100 steps), langevin (250 levels, 5 steps each)'):
        "test_exact_gaussian_posterior_multicoil",
    ("2 coils, 4x", "dps"): "dps",
    ("2 coils, 4x", "dds (the paper's eps, 50 steps)"): "dds",
    ("2 coils, 4x", "pc"): "pc",
    ("2 coils, 4x", "projection"): "projection",
}
METHOD_SETS = {  # the test function -> the dict of methods it runs
    "test_exact_gaussian_posterior_single_coil": "EXACT",
    "test_exact_gaussian_posterior_multicoil": "MULTI_EXACT",
}


def check_posterior_bounds(q: Quoted) -> list[str]:
    src = (ROOT / q.source).read_text()
    tree = ast.parse(src)
    functions = {n.name: ast.get_source_segment(src, n) or "" for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    literals = {t.id: ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name) and t.id in ("EXACT", "MULTI_EXACT", "bounds")}
    errors = header_is(q, ["case", "methods", "the tests assert"])
    rows = rows_by(q, 2)
    for key, row in rows.items():
        if key not in POSTERIOR:
            continue
        where = POSTERIOR[key]
        if where.startswith("test_"):
            body = functions.get(where)
            if body is None:
                errors.append(f"{q.source} has no {where} (the source of row {key})")
                continue
            err = re.findall(r"err < ([\d.]+)", body)
            ratio = re.findall(r"([\d.]+) < ratio < ([\d.]+)", body)
            if len(err) != 1 or len(ratio) != 1:
                errors.append(f"{q.source}: {where} does not assert one error bound and one ratio range")
                continue
            max_err, (lo, hi) = float(err[0]), map(float, ratio[0])
            if where in METHOD_SETS:
                methods = {m.strip() for m in re.sub(r"\([^)]*\)", "", key[1]).split(",")}
                if methods != set(literals[METHOD_SETS[where]]):
                    errors.append(f"{q.page}:{q.line} row {key}: methods {sorted(methods)}, {where} runs "
                                  f"{sorted(literals[METHOD_SETS[where]])}")
        else:
            max_err, dev = literals["bounds"][where]
            lo, hi = round(1 - dev, 10), round(1 + dev, 10)
        errors += compare(q, key, row, [*key, f"error < {max_err:g}, variance ratio in ({lo:g}, {hi:g})"])
    return errors + same_keys(q, rows, POSTERIOR)


CHECKERS: dict[str, tuple[str, Callable[[Quoted], list[str]]]] = {
    "evaluate": ("docs/evaluate.json", check_evaluate),
    "evaluate-heads": (HEADS, check_evaluate_heads),
    "evaluate-heads-summary": (HEADS, check_evaluate_heads_summary),
    "speed": (ALL_CPU, check_speed),
    "bench-step": ("bench/results/step-cpu.json", check_bench("rows")),
    "bench-step-overhead": ("bench/results/step-cpu.json", check_bench("overhead")),
    "bench-sampler": ("bench/results/sampler-cpu.json", check_bench("rows")),
    "bench-dc": ("bench/results/dc-cpu.json", check_bench("rows")),
    "bench-attention": ("bench/results/attention-cpu.json", check_bench("rows")),
    "bench-recon": ("bench/results/recon-cpu.json", check_bench("rows")),
    "bench-net": ("bench/results/net-cpu.json", check_bench("rows")),
    "targets": ("bench/run.py", check_targets),
    "segmentation": ("docs/tasks.json", check_segmentation),
    "anomaly": ("docs/tasks.json", check_anomaly),
    "denoising": ("docs/tasks.json", check_denoising),
    "superres": ("docs/tasks.json", check_superres),
    "registration": ("docs/tasks.json", check_methods("registration", "registration (15 held-out slices)", [
        ("Dice", "dice", "{:.3f}"), ("endpoint error (pixels)", "epe", "{:.3f}"),
        ("folding (%)", "folding_pct", "{:.2f}")])),
    "classification": ("docs/tasks.json", check_methods("classification", "classification (120 held-out slices)", [
        ("AUROC", "auroc", "{:.3f}"), ("accuracy", "accuracy", "{:.3f}")])),
    "selfsup": ("docs/tasks.json", check_methods("selfsup", "simulated series, sigma 0.08", [
        ("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.3f}")])),
    "selfsup-real": ("docs/tasks.json", check_methods("selfsup-real", "dipy small_64D (real)", [
        ("residual whiteness", "whiteness", "{:.3f}"), ("SNR b0", "snr_b0", "{:.2f}"),
        ("SNR DWI", "snr_dwi", "{:.2f}")])),
    "priors": ("python/mridpm/nets/priors", check_priors),
    "posterior-bounds": ("tests/test_reconstruction.py", check_posterior_bounds),
}

# The quoted tables each page must hold (so that none disappears, or loses its marker, unnoticed).
EXPECTED = {
    "README.md": ["evaluate-heads-summary", "speed"],
    "docs/reconstruction.md": ["posterior-bounds", "evaluate", "evaluate-heads"],
    "docs/tasks.md": ["registration", "classification", "selfsup", "selfsup-real", "segmentation", "anomaly",
                      "denoising", "superres"],
    "docs/priors.md": ["priors"],
    "docs/benchmarks.md": ["speed", "bench-step", "bench-step-overhead", "bench-sampler", "bench-dc",
                           "bench-attention", "bench-recon", "bench-net", "targets"],
}


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_pages_hold_their_tables(page: str) -> None:
    assert [q.name for q in quoted(ROOT / page)] == EXPECTED[page]


@pytest.mark.parametrize("path", pages(), ids=rel)
def test_quoted_tables_match_their_sources(path: Path) -> None:
    errors = []
    for q in quoted(path):
        if q.name not in CHECKERS:
            errors.append(f"{q.page}:{q.line}: no checker for marker {q.name!r} (known: {sorted(CHECKERS)})")
            continue
        source, check = CHECKERS[q.name]
        if q.source != source:
            errors.append(f"{q.page}:{q.line} ({q.name}): the marker names {q.source}, the numbers are from {source}")
            continue
        errors += check(q)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", pages(), ids=rel)
def test_no_unsourced_number_tables(path: Path) -> None:
    """A table with decimals, or a bench printout, needs a marker naming its source."""
    marked = {q.line for q in quoted(path)}
    loose = [f"{rel(path)}:{i + 1}" for i, kind, body in blocks(path) if i + 1 not in marked
             and ((kind == "table" and any(DECIMAL.search(line) for line in body[2:]))
                  or (kind == "code" and bool(body) and body[0].startswith("shape ")))]
    assert not loose, f"tables of numbers with no `<!-- numbers: NAME (SOURCE) -->` marker: {loose}"


# ---------------------------------------------------------------------------------------------------
# Numbers in running text, as phrases rebuilt from the sources


def dds_margin() -> str:
    dds, cg, l1 = (evaluate_row(8.0, m) for m in ("dds", "CG-SENSE", "L1-wavelet"))
    return (f"At 8x DDS is {dds['psnr'] - cg['psnr']:.1f} dB above CG-SENSE and {dds['psnr'] - l1['psnr']:.1f} dB "
            f"above L1-wavelet in PSNR with {dds['evals']:.0f} model evaluations")


def evaluated_slices() -> int:
    (n,) = {r["slices"] for r in load("docs/evaluate.json")}
    return n


def small_prior() -> str:
    params, steps = prior_parameters("brain64c") / 1e6, prior_card("brain64c")["step"]
    return f"A small prior ({params:.1f}M parameters, {steps} CPU training steps"


def heads_phrases() -> list[str]:
    """The full-size evaluation's command, slices and DDS margins (the least and largest over the cases)."""
    rows = heads_rows()
    (n,) = {r["slices"] for k, r in rows.items() if k[0] != "dipy-T1"}
    (samples,) = {r["samples"] for k, r in rows.items() if k[2] == "dds"}
    margins = [rows[(*c, "dds")]["psnr"] - max(rows[(*c, m)]["psnr"] for m in HEADS_BASELINES) for c in heads_cases()]
    params, steps = prior_parameters("heads_c") / 1e6, prior_card("heads_c")["step"]
    return [f"--samples {samples} --slices {n} --json {HEADS}", f"on {n} held-out",
            f"DDS is {min(margins):.1f} to {max(margins):.1f} dB above the best baseline",
            f"({params:.1f}M parameters, {steps} CPU training steps on synthetic heads"]


def readme_phrases() -> list[str]:
    m = machine(ALL_CPU)
    return [*heads_phrases(),
            f"on a {m['cpu_count']}-core CPU ({m['processor']}, torch {m['torch']}, commit {m['commit']};"]


def dds_steps_phrase() -> str:
    """How many full-size rows the tuning gave one CG step per sampler step (dipy's among them)."""
    steps = {k: r["cg_iters"] for k, r in heads_rows().items() if k[2] == "dds"}
    assert set(steps.values()) <= {1, 2} and all(v == 1 for k, v in steps.items() if k[0] == "dipy-T1")
    one = sum(v == 1 for v in steps.values())
    return f"The tuning picked one step on {one} of the {len(steps)} rows (both of dipy's) and two on the rest"


def reconstruction_phrases() -> list[str]:
    cg4, cg8 = evaluate_row(4.0, "CG-SENSE"), evaluate_row(8.0, "CG-SENSE")
    for accel, cg in ((4.0, cg4), (8.0, cg8)):
        l1 = evaluate_row(accel, "L1-wavelet")
        assert (l1["cg_iters"], l1["l1_lam"]) == (cg["cg_iters"], cg["l1_lam"]), "one tuning per acceleration"
    return [dds_margin() + " and the least time of the DPM methods", small_prior(),
            f"{cg4['cg_iters']} iterations and weight {cg4['l1_lam']:g} at 4x, {cg8['cg_iters']} and "
            f"{cg8['l1_lam']:g} at 8x", f"The first {evaluated_slices()} held-out slices", dds_steps_phrase(),
            heads_phrases()[0]]


def tasks_phrases() -> list[str]:
    auroc = task_row("segmentation", method="DPM, consensus of 8")["uncertainty_auroc_of_errors"]
    (seg,) = {r["slices"] for r in task_rows("segmentation")}
    (den,) = {r["slices"] for r in task_rows("denoising")}
    (sr,) = {r["slices"] for r in task_rows("superres")}
    (ano,) = {r["slices"] for r in task_rows("anomaly")}
    assert den == sr and ano % 2 == 0
    data = prior_card("seg64")["train"]["extra"]["data"]
    phrases = [f"AUROC {auroc:.2f} for telling wrong pixels", f"segmentation on the {seg} held-out slices of `seg64` "
               f"(every {ORDINAL[data['holdout_every']]} of {z_range(data)})",
               f"denoising and super-resolution on {den} slices", f"anomaly detection on the {ano // 2} upper ones",
               "each twice with a different synthetic lesion"]
    return phrases + motion_phrases()


def motion_phrases() -> list[str]:
    rows = load("docs/tasks_motion.json")
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cases.setdefault((r["moved"], r["max_angle"]), {})[r["method"]] = r

    def span(method: str) -> str:
        values = [c[method]["psnr"] for c in cases.values()]
        return f"{min(values):.1f}-{max(values):.1f} dB"

    def found(c: dict) -> bool:
        return all(c[m]["found"] == c[m]["moved"] for m in ("moved shots excluded", "shifts undone"))

    misses = [c for c in cases.values() if not found(c)]
    centre = [c for c in misses if 0 in json.loads(c["corrupted"]["moved"])]  # shot 0 holds the k-space centre
    rotated = [c for c in misses if c not in centre and c["corrupted"]["max_angle"] > 0]
    assert len(centre) == 1 and len(rotated) == 1 and len(misses) == 2, "the text describes two misses"
    sizes = [len(json.loads(r["moved"])) for r in rows]
    angles = sorted({r["max_angle"] for r in rows})
    best = max(centre[0][m]["psnr"] for m in ("moved shots excluded", "shifts undone"))
    return [f"{min(sizes)}-{max(sizes)} shots moved by up to 3 pixels and {' or '.join(f'{a:g}' for a in angles)} "
            "degrees",
            f"PSNR of the corrupted magnitude image {span('corrupted')}; moved shots excluded "
            f"{span('moved shots excluded')}; their shifts undone {span('shifts undone')}. The moved shots are found "
            f"in {len(cases) - len(misses)} of {len(cases)} cases",
            f"kept in data consistency ({rotated[0]['moved shots excluded']['psnr']:.1f} dB)",
            f"moved ({best:.1f} dB at best)"]


def priors_phrases() -> list[str]:
    cards = {n: prior_card(n) for n in PRIOR_NAMES}
    (schedule,) = {(c["schedule"], c["num_train_timesteps"]) for c in cards.values()}
    b, c = cards["brain64"], cards["brain64c"]
    bd, cd, sd = (cards[n]["train"]["extra"]["data"] for n in ("brain64", "brain64c", "seg64"))
    assert bd["flip"] and cd["flip"]
    return [f"with a {schedule[0]} beta schedule of {schedule[1]} steps", f"trained for {b['step']} steps",
            f"slices {z_range(bd)} and their mirror images", f"{cd['copies']} tissue-jittered copies",
            f"skip every {ORDINAL[cd['holdout_every']]} slice of {z_range(cd)}", f"step-{c['step']} checkpoint",
            f"the first {c['step']} steps of its {c['train']['steps']}", f"--steps {c['step']} --out-dir runs/brain64c",
            f"every {ORDINAL[sd['holdout_every']]} slice of {z_range(sd)} held out"]


def benchmarks_phrases() -> list[str]:
    m = machine(ALL_CPU)
    step = bench_row(bench_rows("bench/results/step-cpu.json"), "(4, 3, 256, 256)", "eager", "float32")
    step_all = bench_row(bench_rows(ALL_CPU, "step"), "(4, 3, 256, 256)", "eager", "float32")
    recon = bench_rows("bench/results/recon-cpu.json")

    def ratio(shape: str) -> str:
        return f"{bench_row(recon, shape, 'mridpm', 'complex64')['vs_eager']:.1f}x"

    loops = [bench_row(recon, f"{m_} loop/eval 1x15x320x320", "mridpm", "complex64") for m_ in ("projection", "dds")]
    return [f"({m['cpu_count']}-core {m['processor']}, torch {m['torch']}, commit {m['commit']}",
            f"the same eager step took {step['median_us'] / 1e3:.1f} ms in the step table below and "
            f"{step_all['median_us'] / 1e3:.1f} ms here",
            f"projection step is {ratio('projection step 1x15x320x320')} (batch 1) to "
            f"{ratio('projection step 4x15x320x320')} (batch 4) eager and of a DDS step "
            f"{ratio('dds step 1x15x320x320')} to {ratio('dds step 4x15x320x320')}",
            f"({loops[1]['median_us'] / 1e6:.1f} s per model evaluation at 320x320",
            f"end to end it is {min(r['vs_eager'] for r in loops):.1f}-{max(r['vs_eager'] for r in loops):.1f}x"]


PHRASES = {
    "README.md": readme_phrases,
    "docs/reconstruction.md": reconstruction_phrases,
    "docs/tasks.md": tasks_phrases,
    "docs/priors.md": priors_phrases,
    "docs/benchmarks.md": benchmarks_phrases,
}


@pytest.mark.parametrize("page", sorted(PHRASES))
def test_numbers_in_the_text_match_their_sources(page: str) -> None:
    text = flat((ROOT / page).read_text(encoding="utf-8"))
    missing = [p for p in PHRASES[page]() if p not in text]
    assert not missing, f"{page} should say (rebuilt from the files it quotes):\n" + "\n".join(missing)


def test_claims_about_the_full_size_numbers_hold() -> None:
    """The README's claim (the acceptance test of the full-size evaluation): on every (data, sampling) row DDS
    is at least 2 dB above L1-wavelet and not below CG-SENSE."""
    rows = heads_rows()
    for case in heads_cases():
        dds = rows[(*case, "dds")]["psnr"]
        assert dds >= rows[(*case, "L1-wavelet")]["psnr"] + 2 and dds >= rows[(*case, "CG-SENSE")]["psnr"], case


def test_claims_about_the_numbers_hold() -> None:
    """What the text says about the tables: which method is fastest, best, weakest; who beats whom."""
    at8 = {r["method"]: r for r in load("docs/evaluate.json") if r["accel"] == 8.0}
    dpm = {m: r for m, r in at8.items() if r["evals"] > 0}
    baselines = {m: r for m, r in at8.items() if r["evals"] == 0}
    assert min(dpm, key=lambda m: dpm[m]["seconds"]) == "dds"  # "the least time of the DPM methods"
    assert max(at8, key=lambda m: at8[m]["ssim"]) == "dps"  # "DPS ... has the best SSIM"
    assert max(at8, key=lambda m: at8[m]["psnr"]) == "dds"
    weakest = sorted(dpm, key=lambda m: dpm[m]["psnr"])[:2]
    assert set(weakest) == {"langevin", "pc-rss"}  # "the weakest DPM methods here"
    best_baseline = max(r["psnr"] for r in baselines.values())
    assert all(dpm[m]["psnr"] > best_baseline for m in weakest)  # "still beat the baselines in PSNR"
    assert dpm["langevin"]["evals"] == 100 * 3  # "100 levels of 3 steps"

    for t in (150, 250, 400):  # anomaly: Gaussian, the DDIM reverse wins; simplex, the one-step residual wins
        def score(method: str, t: int = t) -> tuple[float, float]:
            r = task_row("anomaly", method=method, t=t)
            return r["auroc"], r["best_dice"]

        assert all(a > b for a, b in zip(score("AnoDDPM (DDIM), gaussian noise"),
                                         score("DAE residual (one step), gaussian noise"), strict=True))
        assert all(a > b for a, b in zip(score("DAE residual (one step), simplex noise"),
                                         score("AnoDDPM (DDIM), simplex noise"), strict=True))
    for method in ANOMALY.values():  # "Higher t helps both"
        scores = [task_row("anomaly", method=method, t=t) for t in (150, 250, 400)]
        assert all(a["auroc"] < b["auroc"] and a["best_dice"] < b["best_dice"] for a, b in itertools.pairwise(scores))

    seg = {r["method"]: r for r in task_rows("segmentation")}  # bold: the consensus is best in every column
    for k in ("dice_csf", "dice_gm", "dice_wm", "dice_mean"):
        assert max(seg, key=lambda m: seg[m][k]) == "DPM, consensus of 8"
    for task, groups in (("denoising", "sigma"), ("superres", "factor")):  # bold: the DPM row is best
        for value in {r[groups] for r in task_rows(task)}:
            rows = task_rows(task, **{groups: value})
            for k in ("psnr", "ssim"):
                assert max(rows, key=lambda r: r[k])["method"].startswith("DPM")


# ---------------------------------------------------------------------------------------------------
# Commands and links


def ci_test_command() -> str:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("pip install torch==")]
    assert len(lines) == 1, ".ci/run should hold exactly one `pip install torch==...` command line"
    return lines[0]


def bash_lines(path: Path) -> list[str]:
    return [line for i, kind, body in blocks(path) if kind == "code" for line in body]


def test_readme_test_command_is_what_ci_runs() -> None:
    command = ci_test_command()
    assert command in bash_lines(README), f"README.md must show CI's test command as one line:\n{command}"


def test_readme_demo_command() -> None:
    torch_pin = re.match(r"pip install (torch==\S+)", ci_test_command()).group(1)  # type: ignore[union-attr]
    demo = f'pip install {torch_pin} ".[data]" && mridpm demo --out demo.png'
    assert demo in bash_lines(README), f"README.md must show the demo command as one line:\n{demo}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return LINK.findall(text)


@pytest.mark.parametrize("path", pages(), ids=rel)
def test_links_resolve(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.is_file():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {rel(dest)})")
    assert not broken, f"{rel(path)}: broken links: {broken}"


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    unlinked = [rel(p) for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_readme_is_a_front_page() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250
