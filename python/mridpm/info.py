"""What this installation offers: versions, the backends built, what each op runs, the devices seen."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from mridpm import _ext
from mridpm._version import __version__
from mridpm.ops._backend import KERNELS, auto_choices, triton_available, triton_interpreted


def info() -> dict[str, Any]:
    """Version, torch, which backends are built and usable, the backend each op picks ("auto") for
    CPU and for CUDA tensors (None where this torch has no CUDA), and which devices are visible."""
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
        "ops": auto_choices(),
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

    def pick(op: str, device: str) -> str:
        name = data["ops"][op][device]
        return "- (no CUDA in this torch)" if name is None else f"{name} ({KERNELS[op][name]})"

    ops = [f"  {op:<11}CPU tensors: {pick(op, 'cpu')}; CUDA tensors: {pick(op, 'cuda')}" for op in data["ops"]]
    lines = [
        f"mridpm     {data['mridpm']}",
        f"python     {data['python']}",
        f"torch      {data['torch']}",
        f"extension  {data['extension'] or 'not loaded (PyTorch reference only)'}",
        f"backends   {backends}" + (" (triton interpreted)" if data["triton_interpret"] else ""),
        "ops        backend='auto' picks",
        *ops,
        f"cpu        {cpu['machine']}, {cpu['cores']} cores, {cpu['torch_threads']} torch threads",
        f"cuda       {', '.join(cuda) if cuda else 'no devices'}",
    ]
    return "\n".join(lines)
