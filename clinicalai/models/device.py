"""Choosing the compute device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``."""

from __future__ import annotations

from typing import Dict, Optional

from ..errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def add_device_arg(parser, default: str = "auto", what: str = "compute device") -> None:
    """``--device`` as every command spells it (``argparse`` parser)."""
    parser.add_argument("--device", default=default, choices=DEVICE_CHOICES, help=f"{what} (default: {default})")


def resolve_device(device: Optional[str] = "auto") -> str:
    """``"cpu"`` or ``"cuda[:N]"`` for a user's choice; :class:`DeviceError` if CUDA is missing."""
    import torch

    choice = (device or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto")
        if ":" in choice:
            suffix = choice.split(":", 1)[1]
            if not suffix.isdigit():
                raise DeviceError(f"unknown device {device!r}; use cuda or cuda:N with N a GPU number")
            index = int(suffix)
            if index >= torch.cuda.device_count():
                raise DeviceError(f"there is no CUDA device {index} (found {torch.cuda.device_count()})")
        return choice
    raise DeviceError(f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}")


def device_summary() -> Dict[str, object]:
    """What the GUI's device selector shows: GPU name and free memory, when there is one."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "name": "CPU", "free_bytes": None, "total_bytes": None}
    free, total = torch.cuda.mem_get_info()
    return {"cuda": True, "name": torch.cuda.get_device_name(0), "free_bytes": int(free), "total_bytes": int(total)}
