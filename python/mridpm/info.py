"""What this installation offers: versions, the backends built, the devices seen."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from mridpm import _ext
from mridpm.ops._backend import triton_available, triton_interpreted


def info() -> dict[str, Any]:
    """Version, torch, which backends are built and usable, and which devices are visible."""
    from mridpm import __version__

    ext = _ext.extension()
    cuda_devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "mridpm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "extension": None if ext is None else ext.__file__,
        "backends": {
            "ref": True,
            "cpu": _ext.cpu_built(),
            "cuda": _ext.cuda_built(),
            "triton": triton_available(),
        },
        "triton_interpret": triton_interpreted(),
        "devices": {
            "cpu": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
            "cuda": cuda_devices,
        },
    }


def format_info(data: dict[str, Any] | None = None) -> str:
    """info() as aligned text lines."""
    data = info() if data is None else data
    backends = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in data["backends"].items())
    cpu = data["devices"]["cpu"]
    cuda = data["devices"]["cuda"]
    lines = [
        f"mridpm     {data['mridpm']}",
        f"python     {data['python']}",
        f"torch      {data['torch']}",
        f"extension  {data['extension'] or 'not loaded (PyTorch reference only)'}",
        f"backends   {backends}" + (" (triton interpreted)" if data["triton_interpret"] else ""),
        f"cpu        {cpu['machine']}, {cpu['cores']} cores, {cpu['torch_threads']} torch threads",
        f"cuda       {', '.join(cuda) if cuda else 'no devices'}",
    ]
    return "\n".join(lines)
