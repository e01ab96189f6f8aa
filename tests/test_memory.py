"""The memory estimates that refuse oversized work up front: an upper bound of what a UNet pass
takes, not absurdly above it, and refusals that name the number."""

import subprocess
import sys

import pytest

from mridpm._memory import available, require, unet_bytes

_PROBE = """
import sys, torch
from mridpm.nets.priors import load_prior
from mridpm._memory import unet_bytes

def status(key):  # kB lines of /proc/self/status: VmRSS now, VmHWM the peak since the last reset
    return 1024 * int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])

torch.set_num_threads(1)
p = load_prior(sys.argv[1])
b, h = int(sys.argv[2]), int(sys.argv[3])
with torch.no_grad():  # a small pass first: lazy imports and allocator pools are not the big pass's
    p.model(torch.randn(1, p.model.config.in_channels, 16, 16), torch.full((1,), 500))
x = torch.randn(b, p.model.config.in_channels, h, h)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
base = status("VmRSS:")
with torch.no_grad():
    p.model(x, torch.full((b,), 500))
print(status("VmHWM:") - base, unet_bytes(p.model.config, b, (h, h)))
"""


@pytest.mark.parametrize("prior,batch,size", [("brain64", 4, 128), ("brain64c", 1, 192)])
def test_unet_estimate_bounds_the_measured_peak(prior, batch, size):
    out = subprocess.run([sys.executable, "-c", _PROBE, prior, str(batch), str(size)], capture_output=True,
                         text=True, check=True).stdout.split()
    measured, estimate = int(out[0]), int(out[1])
    assert measured <= estimate <= 4 * measured, (measured, estimate)


def test_require_names_the_need_and_the_free_memory():
    assert available() > 0
    require(1, "one byte")
    with pytest.raises(ValueError, match=r"sampling 10\^6 would need about [\d.]+ GiB of memory, more than the"):
        require(2**50, "sampling 10^6")


def test_estimate_grows_with_batch_and_pixels():
    from mridpm.nets.unet import UNetConfig

    cfg = UNetConfig(channels=32, channel_mult=(1, 2, 2), attention_levels=(2,))
    one = unet_bytes(cfg, 1, (64, 64))
    assert unet_bytes(cfg, 8, (64, 64)) == 8 * one
    assert unet_bytes(cfg, 1, (128, 128)) > 4 * one  # attention grows with the square of the pixels
