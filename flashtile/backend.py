"""Which implementation runs: the Triton kernels or the plain PyTorch path.

``auto`` (the default) runs the Triton kernels on CUDA tensors when Triton is
importable, and the PyTorch path everywhere else. ``triton`` insists on the
kernels: CUDA tensors, or CPU tensors when Triton's interpreter is on
(``TRITON_INTERPRET=1``, how the kernels are tested without a GPU). ``torch``
always takes the PyTorch path. Set it with the environment variable
``FLASHTILE_BACKEND`` or with `set_backend` / the `use_backend` context manager;
the choice is read at call time, never fixed at import.
"""

from __future__ import annotations

import contextlib
import functools
import os
from types import ModuleType

import torch

BACKENDS = ("auto", "triton", "torch")
_override: str | None = None


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"flashtile: backend must be one of {BACKENDS}, got {name!r}")
    return name


def get_backend() -> str:
    """The backend setting in force: `set_backend`'s, else FLASHTILE_BACKEND, else auto."""
    if _override is not None:
        return _override
    return _check(os.environ.get("FLASHTILE_BACKEND", "auto").strip().lower() or "auto")


def set_backend(name: str | None) -> None:
    """Choose "auto", "triton" or "torch"; None goes back to the environment variable."""
    global _override
    _override = None if name is None else _check(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily choose a backend: ``with flashtile.use_backend("torch"): ...``."""
    global _override
    previous, _override = _override, _check(name)
    try:
        yield
    finally:
        _override = previous


def interpreter_on() -> bool:
    """TRITON_INTERPRET read as Triton and flashtile.kernels.config read it."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def resolve(device: torch.device) -> str:
    """The implementation ("triton" or "torch") for tensors on `device`."""
    choice = get_backend()
    if choice == "torch":
        return "torch"
    runs_kernels = triton_available() and (device.type == "cuda" or interpreter_on())
    if choice == "triton" and not runs_kernels:
        raise NotImplementedError(
            f"flashtile: the Triton backend needs CUDA tensors (or TRITON_INTERPRET=1 and "
            f"an importable triton); got tensors on {device}")
    if choice == "auto" and device.type != "cuda":
        return "torch"
    return "triton" if runs_kernels else "torch"


def implementation(device: torch.device) -> ModuleType:
    """The module with `attention_forward` / `attention_backward` for `device`."""
    if resolve(device) == "triton":
        from flashtile import kernels
        return kernels
    from flashtile import torch_path
    return torch_path


FP32_PRECISIONS = ("tf32", "ieee")
_fp32_override: str | None = None


def get_fp32_precision() -> str:
    """How the Triton kernels multiply float32 inputs: "tf32" (default) or "ieee"."""
    if _fp32_override is not None:
        return _fp32_override
    name = os.environ.get("FLASHTILE_FP32_PRECISION", "tf32").strip().lower() or "tf32"
    if name not in FP32_PRECISIONS:
        raise ValueError(f"flashtile: FLASHTILE_FP32_PRECISION must be one of "
                         f"{FP32_PRECISIONS}, got {name!r}")
    return name


def set_fp32_precision(name: str | None) -> None:
    """"tf32" (faster, ~1e-3 relative error) or "ieee" (full float32 dots); None resets."""
    global _fp32_override
    if name is not None and name not in FP32_PRECISIONS:
        raise ValueError(f"flashtile: fp32 precision must be one of {FP32_PRECISIONS}, "
                         f"got {name!r}")
    _fp32_override = name
