"""Simulated fastMRI-format datasets (`mridpm simulate`): multi-coil files of MNI152 brain slices or of
held-out synthetic head slices, for pipelines and evaluations that read files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mridpm.data.phantom import brain_slices, rss_target, simulate_multicoil

SOURCES = ("brain", "heads")  # simulate_dataset's sources: MNI152 brain slices, held-out synthetic head slices


def simulated_names(volumes: int, contrast: str, seed: int, source: str = "brain") -> list[str]:
    """The file names simulate_dataset gives its volumes (sim_..., or sim_heads_... for the heads source)."""
    _check_source(source)
    prefix = "sim" if source == "brain" else f"sim_{source}"
    return [f"{prefix}_{contrast.lower()}_{seed}_{v:04d}.h5" for v in range(volumes)]


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")


def _brain_volume(rng: np.random.Generator, contrast: str, slices: int, shape: tuple[int, int], jitter: float
                  ) -> torch.Tensor:
    """One volume's magnitude brain slices: tissue parameters (within jitter), slice positions and a
    left-right flip drawn from rng."""
    start = int(rng.integers(50, 70))
    zs = np.linspace(start, start + 70, slices).round().astype(int).tolist()
    img = brain_slices(contrast, zs, shape, jitter=jitter, seed=int(rng.integers(2**31)))
    return img.flip(-1) if rng.random() < 0.5 else img


def _heads_volume(rng: np.random.Generator, contrast: str, slices: int, shape: tuple[int, int]) -> torch.Tensor:
    """One volume's complex held-out synthetic head slices (heads.head_slices, the named spin echo), seeded from rng."""
    from mridpm.data.heads import head_slices

    return head_slices(slices, shape, seed=int(rng.integers(2**31)), heldout=True, contrast=contrast)


def simulate_dataset(out_dir: str | Path, volumes: int = 4, contrast: str = "T1", coils: int = 8,
                     slices: int = 8, shape: tuple[int, int] = (256, 256), noise: float = 0.002, jitter: float = 0.05,
                     seed: int = 0, progress: bool = False, source: str = "brain") -> list[Path]:
    """Writes `volumes` fastMRI-format multi-coil files of simulated slices: source "brain", skull-stripped
    MNI152 slices, each volume drawing its tissue parameters (within jitter), slice positions and left-right
    flip from its own seed; or "heads", held-out synthetic head slices (heads.head_slices, with skull and
    scalp; jitter unused) drawn from each volume's seed. Phase, coils and noise follow simulate_multicoil."""
    from tqdm.auto import tqdm

    from mridpm.data.fastmri import write_fastmri

    _check_source(source)
    if volumes < 1 or slices < 1 or coils < 1:
        raise ValueError(f"volumes, slices and coils must be positive, got {volumes}, {slices}, {coils}")
    shape = (int(shape[0]), int(shape[1]))
    if source == "heads" and min(shape) < 4:
        raise ValueError(f"the heads source needs slices of at least 4 x 4 pixels, got {shape[0]} x {shape[1]}")
    out = Path(out_dir)
    names = simulated_names(volumes, contrast, seed, source)
    acquisition = f"SIM_SE_{contrast}" if source == "brain" else f"SIM_HEADS_SE_{contrast}"
    paths = []
    for v in tqdm(range(volumes), desc="simulate", disable=not progress):
        rng = np.random.default_rng([seed, v])
        if source == "brain":
            img = _brain_volume(rng, contrast, slices, shape, jitter)
        else:
            img = _heads_volume(rng, contrast, slices, shape)
        k, _, _ = simulate_multicoil(img, coils, noise, seed=int(rng.integers(2**31)))
        attrs = {"acquisition": acquisition, "patient_id": f"sim{seed}-{v}"}
        paths.append(write_fastmri(out / names[v], k, rss_target(k), attrs=attrs))
    return paths
