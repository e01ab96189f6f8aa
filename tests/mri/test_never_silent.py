"""Meta tensors, empty batches and mismatched shapes in the operators, data consistency and CG: a clear
ValueError naming what is wrong, or (empty batches) an empty result, never a raw torch error."""

import pytest
import torch

from mridpm import mri
from mridpm.mri import consistency
from mridpm.mri.coils import birdcage_maps

G = torch.Generator().manual_seed(11)
SPATIAL = (8, 10)
MAPS = birdcage_maps(4, SPATIAL).unsqueeze(0)
MASK = torch.tensor([1.0, 0, 1, 1, 0, 1, 0, 1, 1, 0])


def crandn(*shape, dtype=torch.complex64):
    return torch.randn(*shape, generator=G, dtype=dtype)


def meta(*shape):
    return torch.empty(*shape, dtype=torch.complex64, device="meta")


def sense(maps=MAPS, mask=MASK):
    return mri.Sense(maps, mask)


BAD = [  # (error, message fragment, call)
    # meta tensors: shapes without data
    (ValueError, "maps: tensors on the meta device hold no data", lambda: mri.Sense(MAPS.to("meta"), MASK)),
    (ValueError, "mask: tensors on the meta device hold no data", lambda: mri.Sense(MAPS, MASK.to("meta"))),
    (ValueError, "mask: tensors on the meta device hold no data", lambda: mri.SingleCoil(MASK.to("meta"))),
    (ValueError, "image: tensors on the meta device hold no data", lambda: sense()(meta(2, *SPATIAL))),
    (ValueError, "k-space: tensors on the meta device hold no data", lambda: sense().H(meta(2, 4, *SPATIAL))),
    (ValueError, "image: tensors on the meta device hold no data", lambda: sense().N(meta(2, *SPATIAL))),
    (ValueError, "image: tensors on the meta device hold no data", lambda: mri.SingleCoil(MASK)(meta(2, *SPATIAL))),
    (ValueError, "k-space: tensors on the meta device hold no data",
     lambda: mri.SingleCoil(MASK).H(meta(2, *SPATIAL))),
    (ValueError, "x: tensors on the meta device hold no data",
     lambda: mri.project(meta(2, *SPATIAL), meta(2, 4, *SPATIAL), sense())),
    (ValueError, "y: tensors on the meta device hold no data",
     lambda: mri.gradient(crandn(2, *SPATIAL), meta(2, 4, *SPATIAL), sense())),
    (ValueError, "b: tensors on the meta device hold no data",
     lambda: mri.conjugate_gradient(sense().N, meta(2, *SPATIAL))),
    (ValueError, "x0: tensors on the meta device hold no data",
     lambda: mri.conjugate_gradient(sense().N, crandn(2, *SPATIAL), x0=meta(2, *SPATIAL))),
    # empty maps: an operator for no image at all
    (ValueError, r"maps must not be empty .* got \(0, 4, 8, 10\)", lambda: mri.Sense(MAPS[:0], MASK)),
    (ValueError, r"maps must not be empty .* got \(1, 0, 8, 10\)", lambda: mri.Sense(MAPS[:, :0], MASK)),
    # conjugate gradient: b and x0
    (ValueError, "b must have a leading batch dimension, got a 0-d tensor",
     lambda: mri.conjugate_gradient(sense().N, crandn(()))),
    (ValueError, r"x0 must have b's shape \(2, 8, 10\) on cpu, got \(2, 8, 9\) on cpu",
     lambda: mri.conjugate_gradient(sense().N, crandn(2, *SPATIAL), x0=crandn(2, 8, 9))),
    (TypeError, "x0 must be a complex tensor, got torch.float32",
     lambda: mri.conjugate_gradient(sense().N, crandn(2, *SPATIAL), x0=torch.zeros(2, *SPATIAL))),
    (TypeError, "x0 must be a complex tensor, got list",
     lambda: mri.conjugate_gradient(sense().N, crandn(2, *SPATIAL), x0=[0])),
    # project / gradient: x against the operator, named shapes
    (ValueError, r"x must be \(batch, \*spatial\) with 2 spatial dimensions, got shape \(\)",
     lambda: mri.project(crandn(()), crandn(()), mri.SingleCoil(MASK))),
    (ValueError, r"x must be \(batch, \*spatial\) with 2 spatial dimensions, got shape \(8, 10\)",
     lambda: mri.gradient(crandn(*SPATIAL), crandn(*SPATIAL), mri.SingleCoil(MASK))),
    (ValueError, r"x of shape \(2, 8, 9\) does not match coil maps of shape \(1, 4, 8, 10\) "
                 r"\(expected \(batch, 8, 10\)\)",
     lambda: mri.project(crandn(2, 8, 9), crandn(2, 4, 8, 9), sense())),
    (ValueError, r"x of shape \(3, 8, 10\) does not match coil maps of shape \(2, 4, 8, 10\) "
                 r"\(expected \(2, 8, 10\)\)",
     lambda: mri.project(crandn(3, *SPATIAL), crandn(3, 4, *SPATIAL), sense(MAPS.expand(2, -1, -1, -1)))),
    (ValueError, r"the operator's mask of shape \(10,\) does not fit images of shape \(2, 8, 9\)",
     lambda: mri.project(crandn(2, 8, 9), crandn(2, 8, 9), mri.SingleCoil(MASK))),
    (ValueError, r"the operator's mask of shape \(10,\) does not fit images of shape \(2, 8, 9\)",
     lambda: mri.gradient(crandn(2, 8, 9), crandn(2, 8, 9), mri.SingleCoil(MASK + 0.5))),
    (ValueError, r"the operator's mask of shape \(2, 1, 8, 10\) does not fit images of shape \(3, 8, 10\)",
     lambda: mri.project(crandn(3, *SPATIAL), crandn(3, 4, *SPATIAL), sense(mask=torch.ones(2, 1, *SPATIAL)))),
    (ValueError, r"the operator's mask of shape \(2, 1, 8, 10\) does not fit images of shape \(1, 8, 10\)",
     lambda: mri.gradient(crandn(1, *SPATIAL), crandn(1, 4, *SPATIAL), sense(mask=torch.ones(2, 1, *SPATIAL)))),
    (ValueError, r"y must have shape \(2, 4, 8, 10\) for images of shape \(2, 8, 10\), got \(2, 4, 8, 9\)",
     lambda: mri.project(crandn(2, *SPATIAL), crandn(2, 4, 8, 9), sense())),
    # the fused composition called directly: the operator's mask, O(1) checks
    (ValueError, "data consistency needs a sampling mask on the operator",
     lambda: consistency.project(crandn(2, *SPATIAL), crandn(2, 4, *SPATIAL), mri.Sense(MAPS))),
    (ValueError, "the fused data consistency needs a 0/1 mask on the operator",
     lambda: consistency.gradient(crandn(2, *SPATIAL), crandn(2, *SPATIAL), mri.SingleCoil(MASK * 0.5))),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1][:40]}" for i, b in enumerate(BAD)])
def test_bad_input_is_refused_clearly(error, match, call):
    with pytest.raises(error, match=match):
        call()


def _empty_cases():
    single, weights, lines = mri.SingleCoil(MASK), mri.SingleCoil(MASK + 0.5), sense()
    area = sense(mask=(torch.rand(SPATIAL, generator=G) < 0.5).float())
    x, k = crandn(0, *SPATIAL), crandn(0, 4, *SPATIAL)
    return [  # (name, call, expected shape)
        ("sense forward", lambda: lines(x), (0, 4, *SPATIAL)),
        ("sense adjoint", lambda: lines.H(k), (0, *SPATIAL)),
        ("sense normal, line mask", lambda: lines.N(x), (0, *SPATIAL)),
        ("sense normal, 2D mask", lambda: area.N(x), (0, *SPATIAL)),
        ("sense normal, weights", lambda: sense(mask=MASK + 0.5).N(x), (0, *SPATIAL)),
        ("sense normal, no mask", lambda: mri.Sense(MAPS).N(x), (0, *SPATIAL)),
        ("single forward", lambda: single(x), (0, *SPATIAL)),
        ("single adjoint", lambda: single.H(x), (0, *SPATIAL)),
        ("single normal", lambda: single.N(x), (0, *SPATIAL)),
        ("project", lambda: mri.project(x, k, lines), (0, *SPATIAL)),
        ("gradient", lambda: mri.gradient(x, k, area), (0, *SPATIAL)),
        ("gradient, weights", lambda: mri.gradient(x, x, weights), (0, *SPATIAL)),
        ("project, single coil", lambda: mri.project(x, x, single), (0, *SPATIAL)),
        ("unmeasured", lambda: consistency.unmeasured(x, single), (0, *SPATIAL)),
        ("conjugate gradient", lambda: mri.conjugate_gradient(lines.N, x, mu=0.1, tol=1e-3), (0, *SPATIAL)),
        ("conjugate gradient, warm", lambda: mri.conjugate_gradient(area.N, x, x0=x.clone()), (0, *SPATIAL)),
        ("fft", lambda: mri.FFT()(x), (0, *SPATIAL)),
    ]


@pytest.mark.parametrize("case", range(len(_empty_cases())), ids=[c[0] for c in _empty_cases()])
def test_an_empty_batch_gives_an_empty_result(case):
    _, call, shape = _empty_cases()[case]
    out = call()
    assert tuple(out.shape) == shape and out.dtype == torch.complex64


def test_an_empty_batch_still_has_its_shape_checked():
    with pytest.raises(ValueError, match=r"image must have shape \(batch, 8, 10\).*got \(0, 8, 9\)"):
        sense().N(crandn(0, 8, 9))
    with pytest.raises(ValueError, match=r"mask of shape \(10,\) does not broadcast against k-space of shape "
                                         r"\(0, 8, 9\)"):
        mri.SingleCoil(MASK)(crandn(0, 8, 9))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_single_coil_per_sample_masks_go_through_the_fused_consistency(dtype):
    """A (batch, H, W) single-coil mask: the kernels once refused it, the complex128 path broadcast it
    against the coil axis and summed the samples together."""
    masks = (torch.rand(3, *SPATIAL, generator=G) < 0.5).float()
    op = mri.SingleCoil(masks)
    x, y = crandn(3, *SPATIAL, dtype=dtype), op(crandn(3, *SPATIAL, dtype=dtype))
    for i in range(3):
        one = mri.SingleCoil(masks[i])
        xi, yi = x[i : i + 1], y[i : i + 1]
        torch.testing.assert_close(mri.project(x, y, op, lam=0.5)[i : i + 1], mri.project(xi, yi, one, lam=0.5))
        torch.testing.assert_close(mri.gradient(x, y, op)[i : i + 1], one.H(yi - one(xi)))
        torch.testing.assert_close(consistency.unmeasured(x, op)[i : i + 1], consistency.unmeasured(xi, one))


def test_image_on_another_device_than_the_maps_is_named():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="image is on cuda:0, the maps on cpu"):
        sense()(crandn(2, *SPATIAL).cuda())
