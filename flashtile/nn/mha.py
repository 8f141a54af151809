"""MultiHeadAttention: a self-attention layer on flashtile's kernels.

In the spirit of flash_attn's ``flash_attn.modules.mha.MHA``: projections,
optional rotary embeddings and ALiBi, grouped-query attention, padding masks
through the varlen path, and incremental decoding through a pre-allocated
KV cache (`KVCache`, `flashtile.flash_attn_with_kvcache`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from flashtile.interface import flash_attn_func, flash_attn_varlen_func
from flashtile.kvcache import flash_attn_with_kvcache
from flashtile.nn.rotary import RotaryEmbedding


def get_alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's geometric slopes (Press et al.): 2^(-8/n), 2^(-16/n), ... for n heads.

    For n not a power of two, the slopes of the closest smaller power of two p,
    followed by every other slope of 2p (the ALiBi paper's recipe).
    """
    def power_of_2(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if num_heads <= 0:
        raise ValueError(f"flashtile: `num_heads` must be positive, got {num_heads}")
    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + get_alibi_slopes(2 * closest)[0::2][:num_heads - closest]


class KVCache:
    """Pre-allocated keys and values of one attention layer, for decoding.

    Attributes:
        k, v: (batch, max_seqlen, num_heads_kv, head_dim) buffers, written in place.
        seqlens: (batch,) int32, how many positions of each sequence are filled;
            `MultiHeadAttention.forward` appends there and advances it.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor | None = None):
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"flashtile: KVCache `k` and `v` must be 4-d and of one shape, "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        if seqlens is None:
            seqlens = torch.zeros(k.shape[0], dtype=torch.int32, device=k.device)
        if seqlens.dtype != torch.int32 or tuple(seqlens.shape) != (k.shape[0],):
            raise TypeError(f"flashtile: KVCache `seqlens` must be int32 of shape "
                            f"({k.shape[0]},), got {seqlens.dtype} {tuple(seqlens.shape)}")
        self.k, self.v, self.seqlens = k, v, seqlens

    @classmethod
    def allocate(cls, batch: int, max_seqlen: int, num_heads_kv: int, head_dim: int,
                 device=None, dtype=None) -> "KVCache":
        shape = (batch, max_seqlen, num_heads_kv, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype),
                   torch.zeros(shape, device=device, dtype=dtype))

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]

    @property
    def max_seqlen(self) -> int:
        return self.k.shape[1]

    def reset(self) -> None:
        """Forget every sequence (the buffers are reused, not cleared)."""
        self.seqlens.zero_()

    def __repr__(self) -> str:
        return (f"KVCache(batch={self.batch_size}, max_seqlen={self.max_seqlen}, "
                f"heads_kv={self.k.shape[2]}, head_dim={self.k.shape[3]}, "
                f"dtype={self.k.dtype}, seqlens={self.seqlens.tolist()})")


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention (MHA / GQA / MQA) on flashtile.

    Args:
        embed_dim: model dimension E (input and output width).
        num_heads: query heads H.
        num_heads_kv: key/value heads Hk (default H); H must be divisible by Hk.
            Query head h uses KV head ``h // (H // Hk)``.
        head_dim: per-head dimension D (default E // H).
        qkv_proj_bias, out_proj_bias: biases of the input / output projections.
        dropout: attention dropout probability, applied only in training mode.
        softmax_scale: default 1 / sqrt(D).
        causal, window_size, softcap: as in `flashtile.flash_attn_func`.
        rotary_emb_dim: if > 0, rotary embeddings on the first rotary_emb_dim
            channels of each q and k head (partial rotary when < D).
        rotary_emb_base, rotary_emb_interleaved: see `flashtile.nn.RotaryEmbedding`.
        use_alibi: add ALiBi biases with `get_alibi_slopes(H)` (a float32 buffer
            ``alibi_slopes``, cast back to float32 at use if the module is cast).
        fused_qkv: one Linear ``Wqkv`` (E -> (H + 2 Hk) D) whose output is laid
            out ``[q (H*D) | k (Hk*D) | v (Hk*D)]``, each head-major; if False,
            three Linears ``q_proj`` (E -> H D), ``k_proj``, ``v_proj`` (E -> Hk D).
        layer_idx: this layer's index, used to pick its cache when `forward` is
            given a dict / list of caches.

    Paths taken by `forward`:

    * dense (no mask, no cache): `flash_attn_func`. No host synchronisation and
      no data-dependent Python control flow: traces under
      ``torch.compile(fullgraph=True)``.
    * key_padding_mask: unpad -> `flash_attn_varlen_func` -> pad back. Reads the
      longest sequence length on the host (a device sync; under torch.compile it
      graph-breaks or needs ``capture_scalar_outputs``).
    * kv_cache: `flash_attn_with_kvcache`, inference only (no autograd, no
      dropout); syncs like the cache function itself.
    """

    def __init__(self, embed_dim, num_heads, num_heads_kv=None, head_dim=None,
                 qkv_proj_bias=True, out_proj_bias=True, dropout=0.0, softmax_scale=None,
                 causal=False, window_size=(-1, -1), softcap=0.0, rotary_emb_dim=0,
                 rotary_emb_base=10000.0, rotary_emb_interleaved=False, use_alibi=False,
                 fused_qkv=True, layer_idx=None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        num_heads_kv = num_heads if num_heads_kv is None else num_heads_kv
        if num_heads <= 0 or num_heads_kv <= 0 or num_heads % num_heads_kv:
            raise ValueError(f"flashtile: `num_heads` ({num_heads}) must be a positive "
                             f"multiple of `num_heads_kv` ({num_heads_kv})")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(f"flashtile: `embed_dim` ({embed_dim}) must be divisible by "
                                 f"`num_heads` ({num_heads}) unless `head_dim` is given")
            head_dim = embed_dim // num_heads
        if rotary_emb_dim < 0 or rotary_emb_dim % 2 or rotary_emb_dim > head_dim:
            raise ValueError(f"flashtile: `rotary_emb_dim` must be an even int in "
                             f"[0, head_dim={head_dim}], got {rotary_emb_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"flashtile: `dropout` must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.num_heads_kv = embed_dim, num_heads, num_heads_kv
        self.head_dim, self.layer_idx = head_dim, layer_idx
        self.dropout = float(dropout)
        self.softmax_scale = None if softmax_scale is None else float(softmax_scale)
        self.causal = bool(causal)
        self.window_size = (int(window_size[0]), int(window_size[1]))
        self.softcap = float(softcap)
        self.rotary_emb_dim, self.use_alibi, self.fused_qkv = rotary_emb_dim, use_alibi, fused_qkv

        q_dim, kv_dim = num_heads * head_dim, num_heads_kv * head_dim
        if fused_qkv:
            self.Wqkv = nn.Linear(embed_dim, q_dim + 2 * kv_dim, bias=qkv_proj_bias, **factory)
        else:
            self.q_proj = nn.Linear(embed_dim, q_dim, bias=qkv_proj_bias, **factory)
            self.k_proj = nn.Linear(embed_dim, kv_dim, bias=qkv_proj_bias, **factory)
            self.v_proj = nn.Linear(embed_dim, kv_dim, bias=qkv_proj_bias, **factory)
        self.out_proj = nn.Linear(q_dim, embed_dim, bias=out_proj_bias, **factory)
        self.rotary_emb = (RotaryEmbedding(rotary_emb_dim, rotary_emb_base,
                                           rotary_emb_interleaved) if rotary_emb_dim else None)
        if use_alibi:
            self.register_buffer("alibi_slopes", torch.tensor(
                get_alibi_slopes(num_heads), dtype=torch.float32, device=device))
        else:
            self.alibi_slopes = None

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"num_heads_kv={self.num_heads_kv}, head_dim={self.head_dim}, "
                f"causal={self.causal}, window_size={self.window_size}, "
                f"softcap={self.softcap}, dropout={self.dropout}, alibi={self.use_alibi}")

    # -- pieces -------------------------------------------------------------------

    def allocate_kv_cache(self, batch_size: int, max_seqlen: int, device=None,
                          dtype=None) -> KVCache:
        """An empty `KVCache` for this layer (default: the out_proj weight's device/dtype)."""
        weight = self.out_proj.weight
        return KVCache.allocate(batch_size, max_seqlen, self.num_heads_kv, self.head_dim,
                                device=weight.device if device is None else device,
                                dtype=weight.dtype if dtype is None else dtype)

    def _project(self, x):
        """x (..., E) -> q (..., H, D), k and v (..., Hk, D)."""
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_heads_kv * self.head_dim
        if self.fused_qkv:
            q, k, v = self.Wqkv(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return (q.unflatten(-1, (self.num_heads, self.head_dim)),
                k.unflatten(-1, (self.num_heads_kv, self.head_dim)),
                v.unflatten(-1, (self.num_heads_kv, self.head_dim)))

    def _alibi(self):
        return None if self.alibi_slopes is None else self.alibi_slopes.float()

    def _options(self):
        return dict(softmax_scale=self.softmax_scale, causal=self.causal,
                    window_size=self.window_size, softcap=self.softcap,
                    alibi_slopes=self._alibi())

    # -- forward ------------------------------------------------------------------

    def forward(self, x, key_padding_mask=None, kv_cache=None, position_offset=0):
        """Self-attention over x (batch, seqlen, embed_dim) -> (batch, seqlen, embed_dim).

        Args:
            key_padding_mask: optional (batch, seqlen) bool, True = a real token.
                Padded positions are dropped before attention (varlen path) and
                come back as exact zeros in the output. Rotary positions count
                only real tokens: the i-th real token of a row is at position
                ``position_offset + i``, so left- and right-padded batches (or
                any pattern) rotate each token where it would be unpadded (RoPE
                being relative, this only matters to match the positions a
                later cache / dense call would use). Causal / window / ALiBi
                distances are likewise counted among a row's real tokens. Syncs
                with the device.
            kv_cache: optional `KVCache` (or a dict / list of them, indexed by
                ``self.layer_idx``). The new keys/values are appended in place at
                ``kv_cache.seqlens`` and the queries attend to the whole cache;
                ``kv_cache.seqlens`` is then advanced by seqlen. Rotary positions
                are ``kv_cache.seqlens[b] + i`` (position_offset is ignored).
                Works for prefill (seqlen > 1) and decoding (seqlen = 1); inference
                only: no autograd, no dropout, no key_padding_mask.
            position_offset: int, rotary position of the first token (dense and
                padded paths), e.g. when attending over a chunk of a longer text.
        """
        if kv_cache is not None:
            if key_padding_mask is not None:
                raise NotImplementedError("flashtile: `key_padding_mask` together with "
                                          "`kv_cache` is not supported")
            if isinstance(kv_cache, (dict, list, tuple)):
                kv_cache = kv_cache[self.layer_idx]
            return self._forward_kvcache(x, kv_cache)
        if key_padding_mask is not None:
            return self._forward_padded(x, key_padding_mask, position_offset)
        return self._forward_dense(x, position_offset)

    def _forward_dense(self, x, position_offset):
        batch, seqlen = x.shape[0], x.shape[1]
        q, k, v = self._project(x)
        if self.rotary_emb is not None:
            positions = torch.arange(seqlen, device=x.device) + position_offset
            q, k = self.rotary_emb(q, k, positions)
        out = flash_attn_func(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                              **self._options())
        return self.out_proj(out.reshape(batch, seqlen, -1))

    def _forward_padded(self, x, key_padding_mask, position_offset):
        batch, seqlen = x.shape[0], x.shape[1]
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"flashtile: `key_padding_mask` must be a bool tensor "
                            f"(True = keep), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (batch, seqlen):
            raise ValueError(f"flashtile: `key_padding_mask` must have shape "
                             f"({batch}, {seqlen}), got {tuple(key_padding_mask.shape)}")
        mask = key_padding_mask.to(x.device)
        seqlens = mask.sum(dim=1, dtype=torch.int32)
        cu_seqlens = F.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0))
        max_seqlen = int(seqlens.max())  # host sync
        index = mask.reshape(-1).nonzero().squeeze(1)  # host sync (output size)
        q, k, v = self._project(x.reshape(batch * seqlen, -1).index_select(0, index))
        if self.rotary_emb is not None:
            positions = (mask.cumsum(1) - 1 + position_offset).reshape(-1).index_select(0, index)
            q, k = (t.squeeze(0) for t in self.rotary_emb(q.unsqueeze(0), k.unsqueeze(0),
                                                          positions.unsqueeze(0)))
        out = flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                     dropout_p=self.dropout if self.training else 0.0,
                                     **self._options())
        out = self.out_proj(out.reshape(out.shape[0], -1))
        padded = out.new_zeros(batch * seqlen, out.shape[-1]).index_copy(0, index, out)
        return padded.view(batch, seqlen, -1)

    def _forward_kvcache(self, x, cache: KVCache):
        batch, seqlen = x.shape[0], x.shape[1]
        if batch != cache.batch_size:
            raise ValueError(f"flashtile: input batch {batch} != kv_cache batch "
                             f"{cache.batch_size}")
        if (cache.k.shape[2], cache.k.shape[3]) != (self.num_heads_kv, self.head_dim):
            raise ValueError(f"flashtile: kv_cache holds {cache.k.shape[2]} heads of dim "
                             f"{cache.k.shape[3]}, this layer needs {self.num_heads_kv} of "
                             f"{self.head_dim}")
        if int(cache.seqlens.max()) + seqlen > cache.max_seqlen:  # host sync
            raise ValueError(f"flashtile: kv_cache is full: {cache.seqlens.tolist()} + "
                             f"{seqlen} new tokens > max_seqlen {cache.max_seqlen}")
        q, k, v = self._project(x)
        q, k, v = (t.to(cache.k.dtype) for t in (q, k, v))
        cos = sin = None
        if self.rotary_emb is not None:
            if self.causal or self.window_size != (-1, -1):
                # flash_attn_with_kvcache rotates new k and q at seqlens[b] + i itself.
                cos, sin = self.rotary_emb.table(cache.max_seqlen, x.device)
            else:
                # Without a local mask it would rotate all of q at seqlens[b] (flash_attn's
                # rule); rotate here so that every token sits at seqlens[b] + i.
                positions = (cache.seqlens.long().unsqueeze(1)
                             + torch.arange(seqlen, device=x.device))
                q, k = self.rotary_emb(q, k, positions)
        out = flash_attn_with_kvcache(
            q, cache.k, cache.v, k, v, rotary_cos=cos, rotary_sin=sin,
            cache_seqlens=cache.seqlens,
            rotary_interleaved=self.rotary_emb is not None and self.rotary_emb.interleaved,
            **self._options())
        cache.seqlens += seqlen
        return self.out_proj(out.reshape(batch, seqlen, -1).to(self.out_proj.weight.dtype))


MHA = MultiHeadAttention
