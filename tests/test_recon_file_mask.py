"""The line mask of a file's reconstruction: a damaged stored mask (NaN, values other than 0/1) is
refused instead of being read as fully sampled, and so are nonsensical accelerations and centers."""

from __future__ import annotations

import math

import pytest
import torch

from mridpm.mri.masks import check_line_options, file_mask, line_mask

K = torch.ones(1, 2, 4, 16, dtype=torch.complex64)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_stored_mask_is_refused(bad: float) -> None:
    for stored in (torch.full((16,), bad), torch.cat([torch.ones(15), torch.tensor([bad])])):
        with pytest.raises(ValueError, match=r"^the file's mask contains NaN or Inf; repair the file or give --accel$"):
            file_mask(K, stored, None, None, 0)


def test_a_stored_mask_must_be_zero_or_one() -> None:
    stored = torch.tensor([1.0, 0, 0.5, 1, 2, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, -1])
    with pytest.raises(ValueError, match=r"^the file's mask must hold only 0 and 1, found \[-1\.0, 0\.5, 2\.0\]"):
        file_mask(K, stored, None, None, 0)
    ok = torch.tensor([1.0, 0] * 8)
    assert torch.equal(file_mask(K, ok, None, None, 0).reshape(-1), ok)
    assert torch.equal(file_mask(K, ok.bool().float(), None, None, 0).reshape(-1), ok)


@pytest.mark.parametrize(("accel", "center", "message"), [
    (math.nan, None, r"acceleration must be a finite number > 1, got nan"),
    (math.inf, None, r"acceleration must be a finite number > 1, got inf"),
    (1.0, None, r"acceleration must be a finite number > 1, got 1\.0"),
    (0.5, None, r"acceleration must be a finite number > 1, got 0\.5"),
    (4.0, 0.0, r"center fraction must lie in \(0, 1\), got 0\.0"),
    (4.0, 1.0, r"center fraction must lie in \(0, 1\), got 1\.0"),
    (4.0, math.nan, r"center fraction must lie in \(0, 1\), got nan"),
    (None, 0.08, r"a center fraction applies only with an acceleration"),
])
def test_nonsense_line_options_are_refused(accel, center, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_line_options(accel, center)
    with pytest.raises(ValueError, match=message):
        file_mask(K, None, accel, center, 0)


def test_good_line_options_pass() -> None:
    check_line_options(None, None)
    check_line_options(4, 0.08)
    assert torch.equal(file_mask(K, None, 4.0, 0.25, 1), line_mask(16, 4.0, 0.25, 1))
