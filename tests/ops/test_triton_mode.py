"""How the test suite runs Triton: compiled where a CUDA GPU is, interpreted where none is, as
TRITON_INTERPRET says when a user set it."""

import os

import pytest
import torch

from mridpm.ops._backend import interpret_triton, triton_interpreted


@pytest.mark.parametrize(("cuda", "env", "want"), [
    (False, None, True), (True, None, False),  # unset: interpret only without a GPU
    (False, "", True), (True, "", False),  # set but empty counts as unset
    (True, "1", True), (False, "0", False), (True, "0", False), (False, "1", True),  # the user's word wins
])
def test_interpret_only_without_a_gpu_unless_told(cuda, env, want):
    assert interpret_triton(cuda, env) is want


def test_this_session_follows_the_rule():
    """conftest wrote its decision to TRITON_INTERPRET, which the backends read."""
    assert os.environ["TRITON_INTERPRET"] in ("0", "1")
    if torch.cuda.is_available():
        assert triton_interpreted() == (os.environ["TRITON_INTERPRET"] == "1")
    else:
        assert triton_interpreted() == interpret_triton(False, os.environ["TRITON_INTERPRET"])
