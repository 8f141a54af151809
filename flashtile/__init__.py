"""flashtile: exact, IO-aware attention (FlashAttention-2) for PyTorch.

Triton kernels on CUDA GPUs, an exact PyTorch path everywhere else, and the
flash_attn 2.x API, so switching is one import line.
"""

from flashtile.backend import (
    get_backend,
    get_fp32_precision,
    set_backend,
    set_fp32_precision,
    use_backend,
)
from flashtile.fp8 import hadamard_transform, quantize_fp8
from flashtile.interface import (
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)
from flashtile.kvcache import flash_attn_with_kvcache
from flashtile.merge import merge_attention_states

__version__ = "0.1.0"

__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
    "merge_attention_states",
    "quantize_fp8",
    "hadamard_transform",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_fp32_precision",
    "set_fp32_precision",
]
