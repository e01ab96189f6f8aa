"""`mridpm reconstruct DIR --out OUT/`: whole datasets in one process or split over torchrun's
processes (gloo on the CPU here), the same outputs either way and as the single-file command, resume
after a killed rank, batched slices, and one-line errors for bad inputs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mridpm import cli
from mridpm.nets import priors
from mridpm.tasks import recon_file as rf
from mridpm.tasks import recon_slices
from mridpm.tasks.recon_dataset import plan
from mridpm.tasks.recon_slices import file_chunks

h5py = pytest.importorskip("h5py")
pytest.importorskip("nilearn")
pytestmark = [pytest.mark.skipif("brain64c" not in priors.available(), reason="prior not bundled"),
              pytest.mark.filterwarnings("ignore:the prior was trained on")]

FAST = ["--accel", "4", "--center", "0.25", "--steps", "2", "--samples", "1"]
SLICES = {"a.h5": 3, "b.h5": 2}
COMPUTED = re.compile(r"rank (\d+) computed (\d+) slices")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the torchrun ranks have (OMP_NUM_THREADS=1): CPU sums in other orders
    differ in the last bits, so bitwise comparisons need the same thread count on both sides."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small 4-coil 32x32 fastMRI files (3 and 2 slices) with their targets."""
    from mridpm.data.fastmri import write_fastmri
    from mridpm.data.simulation import simulated_slices

    d = tmp_path_factory.mktemp("data")
    for i, (name, n) in enumerate(SLICES.items()):
        x, _, k, _ = simulated_slices([60 + 6 * j for j in range(n)], (32, 32), 4, 0.002, seed=3 + i)
        write_fastmri(d / name, k, target=x.abs())
    return d


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset reconstructed in this process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert cli.main(["reconstruct", str(data), "--out", str(out), *FAST]) == 0
    return out


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with h5py.File(path, "r") as f:
        return {k: torch.from_numpy(f[k][()]) for k in f}, dict(f.attrs)


def _assert_same(out: Path, reference: Path, keys: tuple[str, ...] | None = None) -> None:
    for name in SLICES:
        (got, got_attrs), (want, want_attrs) = _read(out / name), _read(reference / name)
        assert set(got) == set(want) == {"reconstruction", "uncertainty", "zero_filled", "cg_sense"}
        for k in keys or tuple(want):
            assert torch.equal(got[k], want[k]), (name, k)
        if keys is None:
            assert got_attrs == want_attrs
        assert not (out / f"{name}.parts").exists()


def _torchrun(*args: str) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 -m mridpm reconstruct ...` on the CPU (gloo), one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "MRIDPM_EXPECT_CUDA_BUILD": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mridpm",
           "reconstruct", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _computed(stderr: str) -> dict[int, int]:
    return {int(r): int(n) for r, n in COMPUTED.findall(stderr)}


def test_directory_matches_single_file_runs_and_reruns_nothing(data, reference, tmp_path, capsys) -> None:
    for name in SLICES:
        assert cli.main(["reconstruct", str(data / name), "--out", str(tmp_path / name), *FAST]) == 0
    _assert_same(tmp_path, reference)
    assert {p.name for p in reference.iterdir()} == {f"{s}{e}" for s in ("a", "b")
                                                     for e in (".h5", ".nii.gz", "_uncertainty.nii.gz", ".png")}
    capsys.readouterr()
    (reference / "a.h5.parts").mkdir()  # as if killed between writing a.h5 and removing its parts
    assert cli.main(["reconstruct", str(data), "--out", str(reference), *FAST]) == 0  # finished: kept
    assert not (reference / "a.h5.parts").exists()
    out, err = capsys.readouterr()
    assert "rank 0 computed 0 slices" in err
    assert re.search(r"\| a\.h5 \| 3 \| 0 \|.*\|\s*\d+\.\d\d \| 0\.\d{4} \| 0\.\d{4} \|", out), out
    assert cli.main(["reconstruct", str(data), "--out", str(reference), *FAST, "--seed", "1"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_two_processes_match_one(data, reference, tmp_path) -> None:
    run = _torchrun(str(data), "--out", str(tmp_path / "out"), *FAST)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert _computed(stderr) == {0: 2, 1: 3}  # contiguous blocks balanced by slice count
    assert stdout.count(".h5 |") == 2  # one summary table, from rank 0
    _assert_same(tmp_path / "out", reference)


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def test_a_killed_rank_resumes_without_recomputing(data, reference, tmp_path) -> None:
    out = tmp_path / "out"
    run = _torchrun(str(data), "--out", str(out), *FAST)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.parts/slice-*")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _children(run.pid)
    assert workers and run.poll() is None, "the run ended before its first slice was kept"
    os.kill(workers[-1], signal.SIGKILL)  # one rank preempted: torchrun stops the other
    try:
        run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0
    kept = len(list(out.glob("*.parts/slice-*.safetensors")))
    finished = sum(n for name, n in SLICES.items() if (out / name).is_file())
    assert 1 <= kept + finished
    for parts in out.glob("*.parts"):
        (parts / "assemble.claim").touch()  # as if killed while assembling: removed by the next run
    again = _torchrun(str(data), "--out", str(out), *FAST)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    computed = _computed(stderr)
    print(f"killed run kept {kept} parts and finished {finished} slices; the rerun computed {computed}")
    assert sum(computed.values()) == sum(SLICES.values()) - kept - finished
    _assert_same(out, reference)


def test_batched_slices(data, reference, tmp_path, monkeypatch) -> None:
    """--batch 2 runs a file's slices in pairs: fewer sampler calls, the same baselines; the noise is
    one stream per batch, so the reconstruction is close to (not equal to) --batch 1's."""
    real, calls = recon_slices.reconstruct_prior, []
    monkeypatch.setattr(recon_slices, "reconstruct_prior",
                        lambda y, *a, **kw: (calls.append(y.shape[0]), real(y, *a, **kw))[1])
    assert cli.main(["reconstruct", str(data), "--out", str(tmp_path), *FAST, "--batch", "2"]) == 0
    assert calls == [2, 1, 2]
    _assert_same(tmp_path, reference, ("zero_filled", "cg_sense"))
    for name in SLICES:
        (got, attrs), (want, _) = _read(tmp_path / name), _read(reference / name)
        assert attrs["batch"] == 2
        err = (got["reconstruction"] - want["reconstruction"]).norm() / want["reconstruction"].norm()
        assert 0 < float(err) < 0.5


def test_plan_is_the_same_work_for_any_world_size() -> None:
    counts = [3, 2, 7, 1]
    units = [(i, c) for i, n in enumerate(counts) for c in file_chunks(n, "dds", 2)]
    for world in (1, 2, 3, 5, 20):
        ranks = plan(counts, "dds", 2, world)
        assert [u for r in ranks for u in r] == units  # contiguous blocks, in order
        sizes = [sum(len(c) for _, c in r) for r in ranks]
        assert max(sizes) - min(sizes) <= 2 * 2 or world > len(units)
    assert file_chunks(5, "tv3d", 2) == [[0, 1, 2, 3, 4]]
    assert plan([0, 0], "dds", 1, 2) == [[], []]


def test_bad_inputs_give_one_line_errors(data, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.h5").write_bytes((data / "a.h5").read_bytes())
    (tmp_path / "mixed" / "notes.h5").write_text("not HDF5")
    (tmp_path / "twin").mkdir()
    (tmp_path / "twin" / "a.h5").write_bytes((data / "a.h5").read_bytes())
    (tmp_path / "file.h5").write_bytes(b"")
    out = str(tmp_path / "out")
    for args, message in [
        ([str(tmp_path / "empty"), "--out", out], "the directory .*empty holds no .h5 files"),
        ([str(tmp_path / "nothing*.h5"), "--out", out], "no files match .*nothing"),
        ([str(tmp_path / "missing.h5"), str(data), "--out", out], "no such file or directory: .*missing.h5"),
        ([str(tmp_path / "mixed"), "--out", out], "notes.h5 is not a readable HDF5 file"),
        ([str(data), "--out", str(tmp_path / "file.h5")], "is an existing file; name a directory"),
        ([str(data), "--out", str(tmp_path / "new.h5")], "names an HDF5 file; several inputs"),
        ([str(data), str(tmp_path / "twin"), "--out", out], "would both be written to .*a.h5"),
        ([str(data / "a.h5"), str(data / "a.h5"), "--out", out], "is named twice"),
        ([str(data), "--out", out, "--maps", str(data / "a.h5")], "--maps holds the coil maps of one file"),
        ([str(data), "--out", out, "--batch", "0"], "--batch: must be an integer >= 1"),
        ([str(data), "--out", out, "--prior-format", "bogus"], "unknown prior format 'bogus'"),
    ]:
        assert cli.main(["reconstruct", *args, *FAST]) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("mridpm reconstruct: error: "), (args, err)
        assert re.search(message, err), (args, err)
    assert not (tmp_path / "out").exists()


def test_prior_format_goes_to_load_prior(monkeypatch) -> None:
    """--prior-format NAME loads --prior through load_prior(format=NAME); without it, as before."""
    from mridpm.nets import priors as module

    real, seen = module.load_prior, []

    def recording(name, device="cpu", **kw):
        seen.append((str(name), kw))
        return real("brain64c", device)

    monkeypatch.setattr(module, "load_prior", recording)
    rf.open_prior("ckpt.pth", "score-sde", torch.device("cpu"))
    rf.open_prior("brain64c", None, torch.device("cpu"))
    assert seen == [("ckpt.pth", {"format": "score-sde"}), ("brain64c", {})]
