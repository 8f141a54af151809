"""flashtile as an attention implementation of Hugging Face transformers 5.x.

::

    import flashtile.integrations.transformers as ft_hf
    ft_hf.register()
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="flashtile")
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flashtile")
    model.set_attn_implementation("flashtile")

`register()` is idempotent and works offline: nothing is downloaded, the
``kernels`` package is not needed, and no function of transformers is replaced.

How it hooks in
---------------
transformers treats every attention implementation whose name contains
"flash" as a FlashAttention kernel (`transformers.utils.generic.
is_flash_attention_requested`). That is right for flashtile, which has the
flash_attn 2.x API, and it gives flashtile the FlashAttention treatment
everywhere: 2D padding masks instead of 4D ones, the mask kept for static caches
in `generate`, and so on. But it also means that model construction
(`PreTrainedModel._check_and_adjust_attn_implementation`) calls
`transformers.modeling_flash_attention_utils.lazy_import_flash_attention(name)`,
whose loader (`_lazy_imports`) only knows the ``flash_attn`` packages
(``flash_attention_2/3/4``) and kernels of the Hugging Face Hub (names like
``org/repo``, through `load_and_register_attn_kernel`). For any other name it
raises ``ValueError: Could not find the currently requested flash attention
implementation``, so registering an attention function alone is not enough.
`register()` therefore does three things:

1. ``AttentionInterface.register("flashtile", flashtile_attention_forward)``.
   That function is transformers' own FlashAttention wrapper
   (`transformers.integrations.flash_attention.flash_attention_forward`, which
   transformers registers for ``flash_attention_2`` and Hub kernels) restated
   for flashtile: it rejects what flashtile cannot do (attention sinks
   ``s_aux``, 4D masks), makes sure transformers' flash loader holds flashtile
   (step 3), updates a continuous-batching paged cache, transposes
   (B, H, S, D) -> (B, S, H, D), and calls transformers'
   `_flash_attention_forward` with ``attn_implementation="flashtile"``. That
   does the rest exactly as for flash_attn: unpadding of padded batches into
   `flash_attn_varlen_func` calls (`_upad_input`, then re-padding the output);
   packed sequences from ``cu_seq_lens_*`` / ``max_length_*`` kwargs or from
   ``position_ids``; the dense `flash_attn_func` call otherwise; ``is_causal``,
   ``scaling`` -> ``softmax_scale``, ``dropout`` -> ``dropout_p``,
   ``sliding_window`` -> ``window_size=(w - 1, w - 1)`` (causal clips the right
   side), ``softcap``, ``deterministic``; grouped-query K/V passed as they are,
   without ``repeat_kv``. It returns ``(out (B, S, H, D), None)``: no attention
   weights. The one difference from transformers' wrapper: float32
   activations are not "cast back" to float32 (flash_attn has no float32, so
   transformers casts, and logs that it does, which breaks torch.compile
   graphs); a cast that changes the dtype (autocast, quantized models) is kept.
2. ``AttentionMaskInterface.register("flashtile", flash_attention_mask)``:
   transformers' mask function for FlashAttention, which returns the 2D padding
   mask, or None when there is no padding, and never materialises a 4D mask.
3. Preloads transformers' flash loader with flashtile. The loader caches the
   one loaded implementation in module globals of
   `transformers.modeling_flash_attention_utils` (``_loaded_implementation``,
   ``_flash_fn``, ``_flash_varlen_fn``, ``_flash_with_kvcache_fn``,
   ``_pad_fn``, ``_unpad_fn``, ``_process_flash_kwargs_fn``, and from 5.23 on
   ``_process_with_kvcache_kwargs_fn``), and `lazy_import_flash_attention`
   returns the cached functions when the name matches. `register()` fills them
   as the loader itself would for a kernel module holding flashtile's
   ``flash_attn_func``, ``flash_attn_varlen_func`` and
   ``flash_attn_with_kvcache``: the latter wrapped in
   ``torch.compiler.disable`` and the keyword filters built by transformers'
   own `_lazy_define_process_function` from flashtile's signatures (so
   ``softcap``, ``window_size``, ``dropout_p``, ``deterministic``,
   ``block_table`` are all passed on), with transformers' `_pad_input` /
   `_unpad_input`.

The loader cache holds one implementation at a time. If another flash
implementation is loaded later in the same process (``flash_attention_2``, a
Hub kernel), flashtile models keep working, because
`flashtile_attention_forward` puts flashtile back before each call (which is
what transformers does for its own implementations too); but constructing a
*new* flashtile model after that needs `register()` to be called again.

Limitations: models that declare ``_compatible_flash_implementations``
(e.g. granite_swa, flint, minimax_m3_vl in transformers 5.23) replace any
"flash*" name by their own Hub kernel at construction, so they cannot use
flashtile under this name; ``output_attentions=True`` gives None weights (as
with flash_attn); attention sinks (``s_aux``, e.g. gpt-oss) raise
NotImplementedError. float32 models run in float32.
``torch.compile(model, fullgraph=True)`` traces the unpadded path (no padding
mask) without a graph break for batch size > 1; with batch size 1 and
``position_ids``, transformers' packed-sequence check
(`_is_packed_sequence`) branches on tensor data and breaks the graph.

Tested with transformers 5.23.0 (CPU) and 5.17.0 (the GPU image).
"""

from __future__ import annotations

import functools
import importlib

import torch

import flashtile

NAME = "flashtile"

# The module globals of transformers.modeling_flash_attention_utils that
# lazy_import_flash_attention caches a loaded implementation in.
_LOADER_GLOBALS = ("_loaded_implementation", "_flash_fn", "_flash_varlen_fn",
                   "_flash_with_kvcache_fn", "_pad_fn", "_unpad_fn",
                   "_process_flash_kwargs_fn")
# (5.23 adds _process_with_kvcache_kwargs_fn, filled when present; 5.17 lacks it.)
_LOADER_HELPERS = ("lazy_import_flash_attention", "_lazy_define_process_function",
                   "_pad_input", "_unpad_input")


def _flash_utils():
    """transformers.modeling_flash_attention_utils, checked for what flashtile uses."""
    try:
        fa = importlib.import_module("transformers.modeling_flash_attention_utils")
    except ImportError as e:  # not installed, or too old to have the module
        raise ImportError("flashtile.integrations.transformers needs transformers >= 5 "
                          "(tested with 5.23.0): pip install 'transformers>=5'") from e
    missing = [n for n in _LOADER_GLOBALS + _LOADER_HELPERS if not hasattr(fa, n)]
    if missing:
        import transformers
        raise ImportError(
            f"flashtile.integrations.transformers: transformers {transformers.__version__} "
            f"has no {', '.join(missing)} in transformers.modeling_flash_attention_utils; "
            f"this integration is written for transformers 5.x (tested with 5.23.0)")
    return fa


@functools.cache
def _loader_entries() -> dict:
    """What lazy_import_flash_attention would cache for a kernel module holding flashtile."""
    fa = _flash_utils()
    entries = {
        "_flash_fn": flashtile.flash_attn_func,
        "_flash_varlen_fn": flashtile.flash_attn_varlen_func,
        # transformers runs the paged (continuous batching) function outside of torch.compile.
        "_flash_with_kvcache_fn": torch.compiler.disable(flashtile.flash_attn_with_kvcache),
        "_pad_fn": fa._pad_input,
        "_unpad_fn": fa._unpad_input,
        "_process_flash_kwargs_fn": fa._lazy_define_process_function(
            flashtile.flash_attn_varlen_func),
    }
    if hasattr(fa, "_process_with_kvcache_kwargs_fn"):
        entries["_process_with_kvcache_kwargs_fn"] = fa._lazy_define_process_function(
            flashtile.flash_attn_with_kvcache)
    return entries


def _load_into_flash_loader() -> None:
    """Make transformers' flash loader hold flashtile (step 3 of the module docstring)."""
    fa = _flash_utils()
    for name, value in _loader_entries().items():
        setattr(fa, name, value)
    fa._loaded_implementation = NAME  # last: marks the entries above as complete


# transformers objects the attention function uses, resolved once by register():
# importing inside the function would put an import into torch.compile's trace,
# which dynamo rejects for transformers' lazy modules ("Bad import result").
_HF: dict = {}


def _resolve_transformers() -> None:
    from transformers.integrations.flash_attention import get_target_dtype
    try:
        from transformers.generation.continuous_batching import PagedAttentionCache
    except ImportError:  # no continuous batching in this release
        PagedAttentionCache = ()  # isinstance(x, ()) is always False
    fa = _flash_utils()
    _HF.update(fa=fa, forward=fa._flash_attention_forward, target_dtype=get_target_dtype,
               paged_cache=PagedAttentionCache)


def _flash_loader_holds_flashtile() -> bool:
    fa = _HF["fa"]
    return (fa._loaded_implementation == NAME
            and fa._flash_varlen_fn is flashtile.flash_attn_varlen_func)


def flashtile_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                                scaling=None, sliding_window=None, softcap=None, is_causal=None,
                                s_aux=None, cache=None, **kwargs):
    """transformers' attention interface for flashtile.

    query (B, H, Sq, D), key/value (B, Hk, Sk, D) as transformers passes them;
    `attention_mask` is the 2D padding mask (B, Sk) of `flash_attention_mask`,
    or None. Returns ``(out (B, Sq, H, D), None)``. This is transformers'
    `flash_attention_forward` (5.23) for an implementation that computes in
    float32 natively; see the module docstring.
    """
    if not _HF:
        _resolve_transformers()
    if s_aux is not None:
        raise NotImplementedError(
            "flashtile: attention sinks (`s_aux`) are not supported; use "
            "attn_implementation='eager' or 'sdpa' for this model")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"flashtile: expected the 2D padding mask of transformers' flash-attention mask "
            f"interface or None, got a {attention_mask.dim()}D attention mask; this model "
            f"builds its own masks and cannot use attn_implementation='flashtile'")
    if not _flash_loader_holds_flashtile():  # another flash implementation was loaded since
        _load_into_flash_loader()
    if cache is not None:  # continuous batching: the paged cache fills the varlen kwargs
        if isinstance(cache, _HF["paged_cache"]):
            key, value = cache.update(key_states=key, value_states=value,
                                      layer_idx=module.layer_idx, kwargs=kwargs)

    seq_len = query.shape[2]
    query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # -> (B, S, H, D)
    head_dim, v_head_dim = query.shape[-1], value.shape[-1]
    if v_head_dim != head_dim:  # e.g. MLA: flash_attn needs one head dim; crop below
        value = torch.nn.functional.pad(value, [0, head_dim - v_head_dim])
    # transformers casts float32 activations to the dtype flash_attn can take (autocast's,
    # the weights'). flashtile takes float32, so the cast is kept only where it changes
    # the dtype: an fp32 model runs in fp32, without the no-op cast's log call (which
    # breaks torch.compile graphs).
    target_dtype = _HF["target_dtype"](query, module)
    if target_dtype == query.dtype:
        target_dtype = None
    out = _HF["forward"](
        query, key, value, attention_mask,
        query_length=seq_len,
        is_causal=module.is_causal if is_causal is None else is_causal,
        dropout=dropout,
        softmax_scale=scaling,
        sliding_window=sliding_window,
        softcap=softcap,
        use_top_left_mask=False,  # flashtile aligns causal masks bottom-right, as flash_attn 2.1+
        target_dtype=target_dtype,
        attn_implementation=NAME,
        layer_idx=getattr(module, "layer_idx", None),
        **kwargs,
    )
    if v_head_dim != head_dim:
        out = out[..., :v_head_dim]
    return out, None


def register() -> str:
    """Make ``attn_implementation="flashtile"`` available to transformers models.

    Idempotent; call it again after loading another flash implementation
    (``flash_attention_2``, a Hub kernel) before constructing more flashtile
    models. Returns the implementation name, ``"flashtile"``.
    """
    _flash_utils()  # clear ImportError first if transformers is missing or unsuitable
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    _resolve_transformers()
    AttentionInterface.register(NAME, flashtile_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    _load_into_flash_loader()
    return NAME


__all__ = ["NAME", "flashtile_attention_forward", "register"]
