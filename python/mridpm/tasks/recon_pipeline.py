"""Reconstruction pipelines: a fastMRI file slice by slice (resumable), the evaluation on held-out
simulated brain slices against the classical baselines, and the demo."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mridpm.mri.classical import cg_sense, l1_wavelet, zero_filled
from mridpm.mri.masks import RandomMaskFunc
from mridpm.mri.metrics import nmse, psnr, ssim
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.random import Generator
from mridpm.tasks.reconstruction import METHODS, estimate_scale, reconstruct_prior

PRIOR_METHODS = tuple(m for m in METHODS if m != "kspace")  # what an unconditional 2D prior runs
SLICE_METHODS = tuple(m for m in PRIOR_METHODS if m != "tv3d")  # what runs on single held-out slices


def default_center(accel: float) -> float:
    """fastMRI's center fractions: 8% at 4x, 4% at 8x."""
    return 0.08 if accel <= 4 else 0.04


def line_mask(width: int, accel: float, center: float | None = None, seed: int = 0) -> torch.Tensor:
    """A fastMRI 1D random line mask (1, 1, 1, width)."""
    mask, _ = RandomMaskFunc([default_center(accel) if center is None else center], [accel], seed=seed)(
        (1, width, 1))
    return mask.reshape(1, 1, 1, width)


@dataclass
class Baselines:
    """The classical reconstructions' settings (CG iterations, L1-wavelet weight relative to the
    image peak) and how to run them."""

    cg_iters: int = 10
    l1_lam: float = 0.003

    def run(self, y: torch.Tensor, op: Sense | SingleCoil) -> dict[str, tuple[torch.Tensor, float]]:
        """{name: (image, seconds)} of zero-filled, CG-SENSE and L1-wavelet."""
        scale = estimate_scale(y, op)
        methods = {"zero-filled": lambda: zero_filled(y, op), "CG-SENSE": lambda: cg_sense(y, op, iters=self.cg_iters),
                   "L1-wavelet": lambda: l1_wavelet(y, op, self.l1_lam * scale, iters=60)}
        out = {}
        for name, fn in methods.items():
            tic = time.perf_counter()
            out[name] = (fn(), time.perf_counter() - tic)
        return out


def metrics(target: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and NMSE of magnitudes against the target magnitude (fastMRI's conventions)."""
    t, p = target.abs().float(), image.abs().float()
    return {"psnr": psnr(t, p), "ssim": ssim(t, p), "nmse": nmse(t, p)}


def simulated_slices(z: list[int], size: tuple[int, int], coils: int, noise: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(complex images (S, H, W) with peak 1, maps (1, coils, H, W), k-space (S, coils, H, W), noise
    std per slice (S,)) of MNI152 T1 slices with random smooth phases, birdcage coils and complex
    noise of std noise * max |k| per real part."""
    from mridpm.data.phantom import brain_slices
    from mridpm.mri.coils import birdcage_maps
    from mridpm.mri.fft import fft2c
    from mridpm.train.run import complex_slices

    x = complex_slices(brain_slices("T1", z, size), seed)
    maps = birdcage_maps(coils, size).unsqueeze(0)
    k = fft2c(maps * x[:, None])
    gen = torch.Generator().manual_seed(seed + 1)
    std = noise * k.abs().amax(dim=(1, 2, 3))
    k = k + std.reshape(-1, 1, 1, 1) * math.sqrt(2) * torch.randn(k.shape, dtype=torch.complex64, generator=gen)
    return x, maps, k, std


def estimate_noise_std(y: torch.Tensor, mask: torch.Tensor, rows: int = 4) -> float:
    """The k-space noise std per real part from the outermost `rows` rows of the sampled lines (high
    frequencies, mostly noise): 1.4826 times the median absolute real and imaginary value."""
    cols = mask.reshape(-1) != 0
    edge = torch.cat([y[..., :rows, :], y[..., -rows:, :]], -2)[..., cols]
    values = torch.view_as_real(edge).abs().flatten()
    return float(1.4826 * values.median()) if values.numel() else 0.0


def tune_baselines(x: torch.Tensor, y: torch.Tensor, op: Sense) -> Baselines:
    """The CG iteration count and L1 weight with the best mean PSNR on the given (training) slices."""
    def score(images: torch.Tensor) -> float:
        return sum(metrics(x[i], images[i])["psnr"] for i in range(len(x))) / len(x)

    iters = max((5, 10, 20, 40), key=lambda n: score(cg_sense(y, op, iters=n)))
    s = estimate_scale(y, op)
    lam = max((1e-3, 3e-3, 1e-2, 3e-2), key=lambda v: score(l1_wavelet(y, op, v * s, iters=60)))
    return Baselines(iters, lam)


def prepare(prior: Any, accel: float, coils: int, noise: float, seed: int) -> tuple[torch.Tensor, Baselines]:
    """The line mask for accel and the baselines tuned on two of the prior's training slices."""
    from mridpm.train.run import phantom_slices

    train = phantom_slices(prior.info["train"]["extra"]["data"])
    size = tuple(prior.info["image_size"])
    mask = line_mask(size[1], accel, seed=seed)
    x, maps, k, _ = simulated_slices([train[len(train) // 3], train[2 * len(train) // 3]], size, coils, noise,
                                     seed + 100)
    return mask, tune_baselines(x, k * mask, Sense(maps, mask))


def evaluate(accels: tuple[float, ...] = (4, 8), methods: tuple[str, ...] = ("dds",), *, prior: str = "brain64c",
             coils: int = 8, noise: float = 0.002, samples: int = 1, slices: int | None = None, seed: int = 0,
             progress: bool = True, options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every method and baseline on the prior's held-out simulated slices at each acceleration (1D
    random lines, fastMRI's center fractions, the true coil maps): one row per (accel, method) with
    mean PSNR, SSIM, NMSE, seconds per slice and model evaluations per slice. Baselines are tuned on
    two training slices."""
    from tqdm.auto import tqdm

    from mridpm.nets.priors import load_prior
    from mridpm.train.run import phantom_slices

    bad = [m for m in methods if m not in SLICE_METHODS]
    if bad:
        raise ValueError(f"methods {bad} cannot run on single slices with an unconditional 2D prior; choose from "
                         f"{SLICE_METHODS}")
    p = load_prior(prior)
    size = tuple(p.info["image_size"])
    held = phantom_slices(p.info["train"]["extra"]["data"], heldout=True)[:slices]
    rows = []
    for accel in accels:
        mask, base = prepare(p, accel, coils, noise, seed)
        x, maps, k, sigma = simulated_slices(held, size, coils, noise, seed)
        op = Sense(maps, mask)
        y = k * mask
        results: dict[str, list[dict[str, float]]] = {}
        for i in tqdm(range(len(held)), desc=f"evaluate {accel:g}x", disable=not progress):
            for name, (image, seconds) in base.run(y[i : i + 1], op).items():
                results.setdefault(name, []).append({**metrics(x[i], image[0]), "seconds": seconds, "evals": 0})
            for method in methods:
                r = reconstruct_prior(y[i : i + 1], op, p, method=method, samples=samples, noise_std=float(sigma[i]),
                                      generator=Generator(seed + i), **(options or {}).get(method, {}))
                results.setdefault(method, []).append({**metrics(x[i], r.mean[0]), "seconds": r.seconds,
                                                       "evals": r.evaluations})
        for name, rs in results.items():
            rows.append({"accel": accel, "method": name, "slices": len(rs),
                         **{k: sum(r[k] for r in rs) / len(rs) for k in ("psnr", "ssim", "nmse", "seconds", "evals")},
                         **({"cg_iters": base.cg_iters, "l1_lam": base.l1_lam} if name in ("CG-SENSE", "L1-wavelet")
                            else {})})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The evaluation as a Markdown table."""
    out = ["| accel | method | PSNR (dB) | SSIM | NMSE | s / slice | model evals |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['accel']:g}x | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['nmse']:.4f} | "
                   f"{r['seconds']:.3f} | {r['evals']:.0f} |")
    return "\n".join(out)


def _acs_lines(mask: torch.Tensor) -> int:
    """The number of contiguous sampled lines around the center of a (..., W) line mask."""
    m = mask.reshape(-1).bool().tolist()
    c = len(m) // 2
    lo = hi = c
    while lo - 1 >= 0 and m[lo - 1]:
        lo -= 1
    while hi < len(m) and m[hi]:
        hi += 1
    return hi - lo


def file_mask(kspace: torch.Tensor, stored: torch.Tensor | None, accel: float | None, center: float | None,
              seed: int) -> torch.Tensor:
    """The (1, 1, 1, W) line mask to apply: made for accel, else the file's own, else its sampled columns."""
    width = kspace.shape[-1]
    if accel is not None:
        return line_mask(width, accel, center, seed)
    if stored is not None:
        m = stored.reshape(-1)
        if m.numel() != width:
            raise ValueError(f"the file's mask has width {m.numel()} but its k-space {width}")
        if not bool((m != 0).any()):
            raise ValueError("the file's mask samples no k-space line")
        return (m != 0).float().reshape(1, 1, 1, width)
    sampled = (kspace.abs().reshape(-1, width).sum(0) > 0).float()
    if bool(sampled.all()):
        raise ValueError("the k-space is fully sampled and the file has no mask: give --accel to undersample it")
    return sampled.reshape(1, 1, 1, width)


def reconstruct_file(path: str | os.PathLike, out: str | os.PathLike, *, method: str = "dds",
                     accel: float | None = None, center: float | None = None, samples: int = 4,
                     steps: int | None = None, seed: int = 0, prior: str = "brain64c",
                     noise_std: float | None = None, maps: str | os.PathLike | torch.Tensor | None = None,
                     progress: bool = True, **options: Any) -> dict[str, Path]:
    """Reconstructs every slice of a fastMRI file and writes out (HDF5: reconstruction, uncertainty,
    zero_filled, cg_sense magnitudes), NIfTI volumes of the reconstruction and uncertainty, and a PNG of
    the middle slice. Coil maps: a (slices, coils, H, W) tensor or an HDF5 file's 'maps' dataset, else
    ESPIRiT from the center lines. Finished slices are kept in out.parts/ until the end, so an
    interrupted run resumes where it stopped. noise_std None estimates the noise per slice from the
    outermost k-space rows (0 makes the result reproduce y). options go to reconstruct() (warm_start,
    t_start, the method's own)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from mridpm.data._atomic import atomic_path
    from mridpm.data.fastmri import read_fastmri
    from mridpm.mri.espirit import espirit_maps
    from mridpm.nets.priors import load_prior

    if method not in PRIOR_METHODS:
        raise ValueError(f"method must be one of {PRIOR_METHODS} with an unconditional prior, got {method!r}")
    vol = read_fastmri(path)
    if not bool((vol.kspace != 0).any()):
        raise ValueError(f"{path}: the k-space is all zeros")
    kspace = vol.kspace if vol.multicoil else vol.kspace[:, None]
    mask = file_mask(kspace, vol.mask, accel, center, seed)
    if not vol.multicoil and method == "pc-rss":
        raise ValueError("pc-rss needs multi-coil data")
    p = load_prior(prior)
    check_size(p, tuple(kspace.shape[-2:]))
    acs = _acs_lines(mask)
    given = _read_maps(maps, kspace, vol.multicoil)
    if vol.multicoil and given is None and acs < 8:
        raise ValueError(f"only {acs} fully sampled center lines: ESPIRiT needs at least 8 (raise --center)")
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    settings = {"input": str(Path(path).resolve()), "method": method, "accel": accel, "center": center,
                "samples": samples, "steps": steps, "seed": seed, "prior": str(prior), "noise_std": noise_std,
                "maps": None if maps is None else "given", **{k: str(v) for k, v in options.items()}}
    parts.mkdir(parents=True, exist_ok=True)
    meta = parts / "settings.json"
    if meta.is_file() and json.loads(meta.read_text()) != settings:
        raise ValueError(f"{parts} holds slices of a run with other settings; delete it or repeat those settings")
    meta.write_text(json.dumps(settings))
    names = ("mean", "std", "zero_filled", "cg")
    n = kspace.shape[0]
    chunks = [list(range(n))] if method == "tv3d" else [[s] for s in range(n)]  # tv3d: the volume at once
    for chunk in tqdm(chunks, desc="slices", disable=not progress or len(chunks) == 1):
        done = [parts / f"slice-{s:04d}.safetensors" for s in chunk]
        if all(f.is_file() for f in done):
            continue
        y = kspace[chunk[0] : chunk[-1] + 1] * mask
        if vol.multicoil:
            smaps = given[chunk[0] : chunk[-1] + 1] if given is not None else espirit_maps(
                y, calib_width=min(24, acs), kernel_width=min(6, acs // 2))
            op: Sense | SingleCoil = Sense(smaps, mask)
        else:
            op, y = SingleCoil(mask[0]), y[:, 0]
        sigma = estimate_noise_std(y, mask) if noise_std is None else noise_std
        r = reconstruct_prior(y, op, p, method=method, samples=samples, steps=steps, noise_std=sigma,
                              generator=Generator(seed + chunk[0]), **options)
        images = (r.mean.abs(), r.std, zero_filled(y, op).abs(), cg_sense(y, op, iters=10).abs())
        for i, f in enumerate(done):
            with atomic_path(f, ".safetensors") as tmp:
                save_file({k: v[i].contiguous() for k, v in zip(names, images, strict=True)}, str(tmp))
    stack = [load_file(str(parts / f"slice-{s:04d}.safetensors")) for s in range(n)]
    vols = {k: torch.stack([d[k] for d in stack]) for k in names}
    written = _write_outputs(out, vols, vol.target, settings)
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return written


def _read_maps(maps: str | os.PathLike | torch.Tensor | None, kspace: torch.Tensor, multicoil: bool
               ) -> torch.Tensor | None:
    """Coil maps (slices, coils, H, W) checked against the k-space (slices, coils, H, W)."""
    if maps is None:
        return None
    if not multicoil:
        raise ValueError("coil maps were given for single-coil k-space")
    if not isinstance(maps, torch.Tensor):
        import h5py

        try:
            with h5py.File(maps, "r") as f:
                if "maps" not in f:
                    raise ValueError(f"{maps} has no 'maps' dataset (found {sorted(f.keys())})")
                maps = torch.from_numpy(f["maps"][()])
        except OSError as err:
            raise ValueError(f"{maps} is not a readable HDF5 file: {err}") from None
    if not maps.is_complex():
        raise ValueError(f"coil maps must be complex, got {maps.dtype}")
    if maps.dim() == 3:
        maps = maps.unsqueeze(0).expand(kspace.shape[0], *maps.shape)
    if tuple(maps.shape) != tuple(kspace.shape):
        raise ValueError(f"coil maps of shape {tuple(maps.shape)} do not match the k-space (slices, coils, H, W) "
                         f"= {tuple(kspace.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise ValueError("the coil maps contain NaN or Inf")
    return maps.to(torch.complex64)


def check_size(prior: Any, size: tuple[int, ...]) -> None:
    """Refuses images the prior's UNet cannot take (sides not divisible by its downsampling) and
    warns when they differ from its training size."""
    import warnings

    factor = 2 ** (len(prior.model.config.channel_mult) - 1)
    if any(n % factor for n in size):
        raise ValueError(f"images of size {size} do not fit the prior's UNet: each side must be divisible by "
                         f"{factor}")
    if list(size) != list(prior.info["image_size"]):
        warnings.warn(f"the prior was trained on {prior.info['image_size']} images, not {list(size)}: train one "
                      "on your data (mridpm train) for a faithful prior", stacklevel=3)


def center_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central (h, w) of an (..., H, W) image, as fastMRI crops to its targets."""
    h, w = size
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


def _write_outputs(out: Path, vols: dict[str, torch.Tensor], target: torch.Tensor | None,
                   settings: dict[str, Any]) -> dict[str, Path]:
    import h5py

    from mridpm.data._atomic import atomic_path
    from mridpm.data.nifti import write_nifti
    from mridpm.figures import write_panels

    with atomic_path(out, ".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, name in (("mean", "reconstruction"), ("std", "uncertainty"), ("zero_filled", "zero_filled"),
                          ("cg", "cg_sense")):
            f.create_dataset(name, data=vols[key].numpy())
        for k, v in settings.items():
            f.attrs[k] = "" if v is None else v
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    nii = out.with_name(stem + ".nii.gz")
    nii_std = out.with_name(stem + "_uncertainty.nii.gz")
    write_nifti(nii, vols["mean"].permute(2, 1, 0))
    write_nifti(nii_std, vols["std"].permute(2, 1, 0))
    mid = vols["mean"].shape[0] // 2
    images = {k: v[mid] for k, v in vols.items()}
    ref, peak = None, None
    if target is not None and target.dim() == 3 and all(a <= b for a, b in zip(target.shape[1:], images["mean"].shape,
                                                                               strict=True)):
        ref, peak = target[mid].float(), float(target.max())  # fastMRI: the target's crop, its volume's peak
        images = {k: center_crop(v, tuple(ref.shape)) for k, v in images.items()}

    def title(name: str, image: torch.Tensor) -> str:
        if ref is None:
            return name
        return f"{name}\nPSNR {psnr(ref, image, peak):.2f} SSIM {ssim(ref, image, peak):.3f}"

    panels = [(title("zero-filled", images["zero_filled"]), images["zero_filled"]),
              (title("CG-SENSE", images["cg"]), images["cg"]),
              (title(f"DPM ({settings['method']})", images["mean"]), images["mean"]),
              ("uncertainty (std)", images["std"])]
    if ref is not None:
        panels.append(("|error| of DPM", (images["mean"] - ref).abs()))
    png = write_panels(out.with_name(stem + ".png"), panels)
    return {"hdf5": out, "nifti": nii, "nifti_uncertainty": nii_std, "png": png}


def demo(out_png: str | os.PathLike | None = "demo.png", *, accel: float = 8, slices: int = 4, samples: int = 4,
         seed: int = 0, prior: str = "brain64c", progress: bool = True) -> list[dict[str, Any]]:
    """The main job in a few CPU minutes: simulated 8-coil brain slices held out from the bundled
    prior's training, undersampled accel-fold, reconstructed by DDS with posterior samples, against
    the baselines; writes a figure of the last of them and returns evaluate()'s rows."""
    rows = evaluate((accel,), ("dds",), prior=prior, samples=samples, slices=slices, seed=seed,
                    progress=progress)
    if out_png is not None:
        from mridpm.figures import write_panels
        from mridpm.nets.priors import load_prior
        from mridpm.train.run import phantom_slices

        p = load_prior(prior)
        size = tuple(p.info["image_size"])
        z = phantom_slices(p.info["train"]["extra"]["data"], heldout=True)[max(slices, 1) - 1 : max(slices, 1)]
        x, maps, k, sigma = simulated_slices(z, size, 8, 0.002, seed)
        mask, base = prepare(p, accel, 8, 0.002, seed)
        op = Sense(maps, mask)
        y = k * mask
        images = {name: image for name, (image, _) in base.run(y, op).items()}
        r = reconstruct_prior(y, op, p, method="dds", samples=samples, noise_std=float(sigma[0]),
                              generator=Generator(seed))
        images["DPM (DDS)"] = r.mean
        panels = [("truth", x[0].abs())]
        panels += [(f"{n}\nPSNR {metrics(x[0], im[0])['psnr']:.2f} SSIM {metrics(x[0], im[0])['ssim']:.3f}",
                    im[0].abs()) for n, im in images.items()]
        panels += [("uncertainty (std)", r.std[0]), ("|error| of DPM", (r.mean[0].abs() - x[0].abs()).abs())]
        write_panels(out_png, panels)
    return rows
