"""torch.nn modules built on flashtile's attention functions."""

from flashtile.nn.mha import MHA, KVCache, MultiHeadAttention, get_alibi_slopes
from flashtile.nn.rotary import RotaryEmbedding

__all__ = ["MultiHeadAttention", "MHA", "KVCache", "RotaryEmbedding", "get_alibi_slopes"]
