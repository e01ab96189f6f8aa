"""The codes Python passes to the kernels are defined once, in the C++ headers: the extension exports
them, the fallback copies in ops/_contract.py match the headers, and no Python module spells a flag
bit as a literal. Every op reaches mridpm._C, a CUDA device or a stream through ops/_launch.py only."""

import re
from pathlib import Path

import pytest

from mridpm import _ext
from mridpm.ops import _contract

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "mridpm"
# table -> (header, enum, how a C++ enumerator kCamelCase is named in Python)
ENUMS = {
    "step_flags": ("step.h", "StepFlags", lambda n: re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", n).upper()),
    "dtype_codes": ("common.h", "DType", str.lower),
    "dc_ops": ("dc.h", "DcOp", str.lower),
    "dc_flags": ("dc.h", "DcFlags", str.upper),
}


def header_enum(header: str, enum: str) -> dict[str, int]:
    """The enumerators (without their k prefix) and values of `enum Name : int { ... }` in csrc/header."""
    text = (ROOT / "csrc" / header).read_text()
    body = re.search(rf"enum\s+{enum}\s*:\s*int\s*\{{([^}}]*)\}}", text)
    assert body is not None, f"enum {enum} not found in csrc/{header}"
    return {name: int(value) for name, value in re.findall(r"\bk(\w+)\s*=\s*(\d+)", body.group(1))}


@pytest.mark.parametrize("table", sorted(ENUMS))
def test_fallback_copies_match_the_headers(table):
    header, enum, pyname = ENUMS[table]
    values = header_enum(header, enum)
    if table == "step_flags":
        every = values.pop("AllStepFlags")
        assert every == sum(values.values())  # the mask the C++ check uses covers every flag
        assert all(v & (v - 1) == 0 for v in values.values())  # one bit each
    assert {pyname(name): v for name, v in values.items()} == _contract.FALLBACK[table]


@pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
@pytest.mark.parametrize("table", sorted(ENUMS))
def test_the_extension_exports_the_headers_codes_and_python_reads_them(table):
    exported = dict(getattr(_ext.extension(), table))
    assert exported == _contract.FALLBACK[table]
    assert _contract._table(table) == exported


def test_step_flags_and_codes_are_the_tables():
    flags = _contract.STEP_FLAGS
    assert (_contract.HAS_X0, _contract.CLAMP, _contract.WRITE_X0, _contract.NOISE) == (
        flags["HAS_X0"], flags["CLAMP"], flags["WRITE_X0"], flags["NOISE"])
    assert _contract.DC_SIGN == _contract._table("dc_flags")["SIGN"]


def _sources(*folders: str) -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for f in folders for p in sorted((PACKAGE / f).glob("*.py"))}


def test_no_flag_bit_is_a_literal():
    """Kernels and ops test flags against the named constants (before, the Triton step used `flags & 1`)."""
    for name, text in _sources("ops", "kernels/triton").items():
        assert not re.search(r"flags\s*&\s*\d", text), f"{name} tests a flag bit by its value"
    assert "_contract." in (PACKAGE / "kernels" / "triton" / "step.py").read_text()


def test_one_launch_path():
    """Only ops/_launch.py calls mridpm._C's kernels, makes a CUDA device current or reads a stream;
    besides it only ops/_contract.py (the codes) touches the extension."""
    launch_only = [r"torch\.cuda\.device\(", r"cuda_stream", r"get_num_threads\(", r"\.\w+_(cpu|cuda)\("]
    for name, text in _sources("ops", "kernels/triton").items():
        if name == "ops/_launch.py":
            continue
        found = [p for p in launch_only if re.search(p, text)]
        assert not found, f"{name} launches by itself ({found}); use mridpm.ops._launch"
        assert "_ext.extension()" not in text or name == "ops/_contract.py", f"{name} reaches into mridpm._C"
