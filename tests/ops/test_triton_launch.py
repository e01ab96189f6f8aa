"""Triton launches without a GPU: grids within CUDA's per-axis limits for volumes and head counts past
65535 (the launchers run on meta tensors with their kernels replaced by a recorder), the flat
(row, tile) split at small tiles, 64-bit (seed, offset) that never re-specialize."""

import inspect

import pytest
import torch

from mridpm.ops._backend import triton_available, triton_interpreted

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs triton")
# Where Triton kernels run here: CPU tensors under the interpreter, CUDA tensors on a GPU.
DEVICES = (["cpu"] if triton_interpreted() else []) + (["cuda"] if torch.cuda.is_available() else [])


class Recorder:
    """Stands in for a Triton kernel: kernel[grid](...) records the grid and launches nothing."""

    def __init__(self) -> None:
        self.grids: list[tuple[int, ...]] = []

    def __getitem__(self, grid: tuple[int, ...]):
        self.grids.append(grid)
        return lambda *args, **kwargs: None


def _record(monkeypatch: pytest.MonkeyPatch, module: object, *names: str) -> Recorder:
    rec = Recorder()
    for name in names:
        monkeypatch.setattr(module, name, rec)
    return rec


def _assert_launchable(grids: list[tuple[int, ...]]) -> None:
    from mridpm.kernels.triton._grid import within_limits

    assert grids and all(within_limits(g) and all(n <= 65535 for n in g[1:]) for g in grids), grids


def test_attention_launches_past_65535_batch_heads(monkeypatch):
    """Axial attention over a 64^3 volume at batch 2 with 8 heads: 2 * 64 * 64 lines * 8 heads = 65536."""
    from mridpm.kernels.triton import attention

    rec = _record(monkeypatch, attention, "_fwd_kernel", "_bwd_kv_kernel", "_bwd_q_kernel")
    q = torch.empty(2 * 64 * 64, 64, 8, 32, device="meta")
    out, lse = attention.forward(q, q, q, 0.1)
    attention.backward(q, q, q, out, lse, out, 0.1)
    assert len(rec.grids) == 3 and rec.grids[0] == (2 * 64 * 64 * 8,)  # one row block of 64 tokens per head
    _assert_launchable(rec.grids)


def test_dc_launches_a_512x512x256_volume(monkeypatch):
    from mridpm.kernels.triton import dc

    rec = _record(monkeypatch, dc, "_expand_kernel", "_blend_kernel", "_combine_kernel")
    vol = (512, 512, 256)
    n = 512 * 512 * 256
    sizes = {"batch": 2, "coils": 16, "n": n, "h": 512, "w": 256, "maps_batch": 1, "mask_batch": 1, "mask_coils": 1}
    x, k = (torch.empty(*lead, *vol, dtype=torch.complex64, device="meta") for lead in ((2,), (2, 16)))
    mask = torch.empty(n, device="meta")
    for op, a, b in (("expand", x, k), ("blend", k, k), ("combine", k, k)):
        dc.run(op, a, b, mask, k if op != "combine" else x, sizes, 1.0, 1.0, 1.0, True)
    assert rec.grids == [(32 * 65536,), (32 * 65536,), (2 * 65536,)]
    _assert_launchable(rec.grids)
    with pytest.raises(ValueError, match="2\\*\\*31 or more"):  # one image's index is int32 (the sign's split)
        dc._spatial((2**16, 2**15))


def test_step_launches_a_batch_of_large_volumes(monkeypatch):
    from mridpm.kernels.triton import step

    rec = _record(monkeypatch, step, "_step_kernel")
    x = torch.empty(64, 2 * 512 * 512 * 256, device="meta")
    step.step([x, x], torch.empty(1, 8, device="meta"), x, None, 2**64 - 1, 2**62, 0)
    _assert_launchable(rec.grids)


def test_a_grid_past_axis_0s_limit_is_refused_before_launch(monkeypatch):
    from mridpm.kernels.triton import _grid

    assert _grid.flat_grid(3, 2049, 1024) == (9,)
    monkeypatch.setattr(_grid, "MAX_PROGRAMS", (8, 65535, 65535))
    with pytest.raises(ValueError, match="at most 8"):
        _grid.flat_grid(3, 2049, 1024)
    assert not _grid.within_limits((9,)) and not _grid.within_limits((1, 65536))


@pytest.mark.parametrize("device", DEVICES)
def test_small_tiles_split_rows_and_tiles_right(monkeypatch, device):
    """Tiles of 16 elements: many programs per row, the last tile of each row partly masked; four spatial
    dimensions, even ones too, for the checkerboard sign's split of the flat index."""
    import mridpm
    from mridpm.kernels.triton import dc, step
    from mridpm.ops import dc as dc_ops

    monkeypatch.setattr(dc, "_BLOCK", 16)
    monkeypatch.setattr(step, "_BLOCK", 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 3, 5, generator=g, dtype=torch.complex64).to(device)
    maps = torch.randn(3, 4, 2, 4, 3, 5, generator=g, dtype=torch.complex64).to(device)
    runs = [dc_ops.coil_combine(dc_ops.coil_expand(x, maps, sign=True, backend=b), maps, sign=True, backend=b)
            for b in ("triton", "ref")]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-5)
    y = torch.randn(5, 3, 37, generator=g).to(device)
    runs = [mridpm.fused_step([y], [0.5], 0.3, generator=mridpm.Generator(7, 2**33), backend=b)
            for b in ("triton", "ref")]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-5)


def _jit_options(kernel: object) -> dict:
    """The options a kernel was decorated with, whether triton.jit made a JITFunction or (interpreted)
    an InterpretedFunction."""
    return getattr(kernel, "kwargs", None) or {"do_not_specialize": kernel.do_not_specialize}


def test_seed_and_offset_are_64_bit_and_never_specialized():
    """The step kernel's seed and offset: never specialized, and typed u64 and i64 whatever their values."""
    from triton.runtime.jit import JITFunction

    from mridpm.kernels.triton import step

    assert set(_jit_options(step._step_kernel)["do_not_specialize"]) >= {"seed", "offset"}
    params = {p.name: p for p in JITFunction(step._step_kernel.fn, **_jit_options(step._step_kernel)).params}
    assert (params["seed"].annotation_type, params["offset"].annotation_type) == ("u64", "i64")
    assert params["seed"].do_not_specialize and params["offset"].do_not_specialize
    assert list(inspect.signature(step._step_kernel.fn).parameters).index("seed") == params["seed"].num


def _variants(kernel: object) -> int:
    """How many compiled variants of a Triton kernel the current CUDA device holds (0 when interpreted)."""
    caches = getattr(kernel, "device_caches", None)
    return len(caches[torch.cuda.current_device()][0]) if caches else 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [3, 2**63 + 5])
def test_noise_matches_the_reference_at_any_offset(seed, device):
    """Offsets 1, 16 (once specialized values), past 32 bits and near 2**63: the reference's draw each time,
    and (compiled) from one kernel, not one per kind of offset."""
    import mridpm
    from mridpm.kernels.triton import step

    x = torch.zeros(2, 300, device=device)
    variants = []
    for offset in (1, 16, 2**31 + 3, 2**40, 2**63 - 1000):
        got, want = (mridpm.fused_step([x], [1.0], 1.0, generator=mridpm.Generator(seed, offset), backend=b)
                     for b in ("triton", "ref"))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        variants.append(_variants(step._step_kernel))
    assert len(set(variants)) == 1, variants


def test_noise_needs_a_triton_that_splits_the_counter(monkeypatch):
    """Triton before 3.4 draws other numbers for a 64-bit counter: a noisy step refuses it, a noiseless one runs."""
    import triton

    from mridpm.kernels.triton import step
    from mridpm.ops._contract import NOISE

    rec = _record(monkeypatch, step, "_step_kernel")
    monkeypatch.setattr(triton, "__version__", "3.3.1")
    x = torch.empty(2, 8, device="meta")
    with pytest.raises(RuntimeError, match=r"triton >= 3\.4"):
        step.step([x], torch.empty(1, 8, device="meta"), x, None, 0, 0, NOISE)
    step.step([x], torch.empty(1, 8, device="meta"), x, None, 0, 0, 0)
    assert len(rec.grids) == 1
