"""Device strings (auto | cpu | cuda | cuda:N | mps), checked before any work:
asking for a device this machine does not have is a one-line error."""
from __future__ import annotations

from volvqa.errors import VolvqaInputError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | None) -> str:
    """The torch device to use; ``auto`` picks cuda, then mps, then cpu."""
    import torch
    device = (device or "auto").strip()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise VolvqaInputError(None, f"no CUDA device on this machine (torch {torch.__version__}, CUDA "
                                   f"build: {torch.version.cuda or 'no'}); use device auto or cpu, or install your "
                                   "CUDA build of torch", param="device", value=device)
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise VolvqaInputError(None, f"only {torch.cuda.device_count()} CUDA device(s)", param="device",
                                   value=device)
        return device
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise VolvqaInputError(None, "no Apple MPS device on this machine", param="device", value=device)
        return device
    raise VolvqaInputError(None, f"unknown device: use {DEVICE_CHOICES}", param="device", value=device)
