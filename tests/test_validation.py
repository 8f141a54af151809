"""Input validation of the public API, and robustness of the exact PyTorch path.

Every bad input must fail with the right exception type and a message naming the
offending argument. The positive tests check non-contiguous inputs, NaN
isolation between batch items, and fully masked rows (out 0, LSE -inf, finite
gradients). Everything runs on CPU through the PyTorch backend.
"""

import pytest
import torch

import flashtile
from flashtile import (
    backend,
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)

B, S, H, D = 2, 5, 4, 8


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    """Every test runs on the PyTorch path with no backend override left behind."""
    monkeypatch.setenv("FLASHTILE_BACKEND", "torch")
    flashtile.set_backend(None)
    yield
    flashtile.set_backend(None)


def dense(b=B, sq=S, sk=S, h=H, hk=H, d=D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, sq, h, d, generator=g).to(dtype)
    k = torch.randn(b, sk, hk, d, generator=g).to(dtype)
    v = torch.randn(b, sk, hk, d, generator=g).to(dtype)
    return q, k, v


def cu(*lengths):
    return torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0).to(torch.int32)


def varlen(lengths_q=(3, 4), lengths_k=(3, 4), h=H, hk=H, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lengths_q), h, d, generator=g)
    k = torch.randn(sum(lengths_k), hk, d, generator=g)
    v = torch.randn(sum(lengths_k), hk, d, generator=g)
    return q, k, v, cu(*lengths_q), cu(*lengths_k), max(lengths_q), max(lengths_k)


def call_varlen(q, k, v, cu_q, cu_k, max_q, max_k, **kw):
    return flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, **kw)


# ============================================================== q, k, v: rank and shape


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad_shape", [(S, H, D), (1, B, S, H, D)])
def test_dense_wrong_rank(name, bad_shape):
    t = dict(zip("qkv", dense()))
    t[name] = torch.randn(bad_shape)
    with pytest.raises(ValueError, match=rf"`{name}` must be a 4-D tensor"):
        flash_attn_func(t["q"], t["k"], t["v"])


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad_shape", [(7, D), (1, 7, H, D)])
def test_varlen_wrong_rank(name, bad_shape):
    q, k, v, *rest = varlen()
    t = {"q": q, "k": k, "v": v}
    t[name] = torch.randn(bad_shape)
    with pytest.raises(ValueError, match=rf"`{name}` must be a 3-D tensor"):
        call_varlen(t["q"], t["k"], t["v"], *rest)


def test_batch_mismatch():
    q, _, _ = dense(b=2)
    _, k, v = dense(b=3)
    with pytest.raises(ValueError, match=r"`k` must be batch size 2"):
        flash_attn_func(q, k, v)


def test_head_dim_mismatch():
    q, _, _ = dense(d=8)
    _, k, v = dense(d=16)
    with pytest.raises(ValueError, match=r"`k` must be head dim 8"):
        flash_attn_func(q, k, v)


def test_head_dim_mismatch_varlen():
    q, k, v, *rest = varlen(d=8)
    with pytest.raises(ValueError, match=r"`k` must be head dim 8"):
        call_varlen(q, k[..., :4], v[..., :4], *rest)


@pytest.mark.parametrize("v_shape", [(B, S + 1, H, D), (B, S, H // 2, D), (B, S, H, D + 1)])
def test_kv_shape_mismatch(v_shape):
    q, k, _ = dense()
    with pytest.raises(ValueError, match=r"`v` must be the same shape as k"):
        flash_attn_func(q, k, torch.randn(v_shape))


def test_head_dim_too_large():
    q, k, v = dense(b=1, sq=2, sk=2, h=1, hk=1, d=257)
    with pytest.raises(NotImplementedError, match=r"head dim 257 is not supported"):
        flash_attn_func(q, k, v)


def test_head_dim_256_is_accepted():
    q, k, v = dense(b=1, sq=2, sk=2, h=1, hk=1, d=256)
    assert flash_attn_func(q, k, v).shape == q.shape


@pytest.mark.parametrize("h,hk", [(3, 2), (4, 3), (2, 4)])
def test_heads_not_divisible(h, hk):
    q, k, v = dense(h=h, hk=hk)
    with pytest.raises(ValueError, match=r"number of query heads \(%d\) must be divisible" % h):
        flash_attn_func(q, k, v)


def test_heads_not_divisible_varlen():
    q, k, v, *rest = varlen(h=3, hk=2)
    with pytest.raises(ValueError, match=r"number of query heads \(3\) must be divisible"):
        call_varlen(q, k, v, *rest)


# ============================================================== dtypes, devices, types


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float64, torch.bool])
def test_unsupported_dtype(name, dtype):
    t = dict(zip("qkv", dense()))
    t[name] = t[name].to(dtype)
    with pytest.raises(TypeError, match=rf"`{name}` must be float16, bfloat16 or float32"):
        flash_attn_func(t["q"], t["k"], t["v"])


def test_unsupported_dtype_varlen():
    q, k, v, *rest = varlen()
    with pytest.raises(TypeError, match=r"`q` must be float16, bfloat16 or float32"):
        call_varlen(q.double(), k.double(), v.double(), *rest)


@pytest.mark.parametrize("dtypes", [
    (torch.float32, torch.float16, torch.float16),
    (torch.float16, torch.float16, torch.bfloat16),
    (torch.bfloat16, torch.float32, torch.bfloat16),
])
def test_mixed_dtypes(dtypes):
    q, k, v = (x.to(dt) for x, dt in zip(dense(), dtypes))
    with pytest.raises(TypeError, match=r"q, k and v must share one dtype"):
        flash_attn_func(q, k, v)


def other_device() -> torch.device:
    """A device different from CPU: a GPU when there is one, else 'meta'."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("meta")


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_different_devices(name):
    t = dict(zip("qkv", dense()))
    t[name] = t[name].to(other_device())
    with pytest.raises(ValueError, match=r"q, k and v must be on one device"):
        flash_attn_func(t["q"], t["k"], t["v"])


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [None, 1.0, [[1.0]], "q"])
def test_non_tensor_inputs(name, bad):
    t = dict(zip("qkv", dense()))
    t[name] = bad
    with pytest.raises(TypeError, match=rf"`{name}` must be a torch.Tensor"):
        flash_attn_func(t["q"], t["k"], t["v"])


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_non_tensor_inputs_varlen(name):
    q, k, v, *rest = varlen()
    t = {"q": q, "k": k, "v": v}
    t[name] = t[name].tolist()
    with pytest.raises(TypeError, match=rf"`{name}` must be a torch.Tensor"):
        call_varlen(t["q"], t["k"], t["v"], *rest)


def test_zero_dim_tensor_input():
    _, k, v = dense()
    with pytest.raises(ValueError, match=r"`q` must be a 4-D tensor"):
        flash_attn_func(torch.tensor(1.0), k, v)


# ============================================================== scalar options


@pytest.mark.parametrize("p", [-0.1, -1, 1.0, 1, 1.5, float("nan"), "0.1", None])
def test_bad_dropout(p):
    with pytest.raises(ValueError, match=r"`dropout_p` must be a float in \[0, 1\)"):
        flash_attn_func(*dense(), dropout_p=p)


@pytest.mark.parametrize("p", [-0.5, 1.0])
def test_bad_dropout_varlen(p):
    with pytest.raises(ValueError, match=r"`dropout_p`"):
        call_varlen(*varlen(), dropout_p=p)


@pytest.mark.parametrize("window", [(-2, -1), (-1, -2), (3, -5), [-3, 0]])
def test_window_below_minus_one(window):
    with pytest.raises(ValueError, match=r"`window_size` must be a pair of ints >= -1"):
        flash_attn_func(*dense(), window_size=window)


@pytest.mark.parametrize("window", [3, (1,), (1, 2, 3), (1.0, 2), (1, None), "ab", None])
def test_window_not_pair_of_ints(window):
    with pytest.raises(TypeError, match=r"`window_size` must be a pair of ints"):
        flash_attn_func(*dense(), window_size=window)


@pytest.mark.parametrize("softcap", [-1.0, -1e-6, -3])
def test_negative_softcap(softcap):
    with pytest.raises(ValueError, match=r"`softcap` must be a finite float >= 0"):
        flash_attn_func(*dense(), softcap=softcap)


def test_softcap_not_a_number():
    with pytest.raises(ValueError, match=r"`softcap`"):
        flash_attn_func(*dense(), softcap="1.0")


def test_softmax_scale_not_a_number():
    with pytest.raises(TypeError, match=r"`softmax_scale` must be a float or None"):
        flash_attn_func(*dense(), softmax_scale="0.5")


# ============================================================== ALiBi slopes


@pytest.mark.parametrize("shape", [(H + 1,), (B + 1, H), (B, H, 1), (1, H), ()])
def test_alibi_wrong_shape(shape):
    slopes = torch.rand(shape, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"`alibi_slopes` must be of shape"):
        flash_attn_func(*dense(), alibi_slopes=slopes)


def test_alibi_wrong_shape_varlen():
    # Varlen batch = len(cu_seqlens_q) - 1 = 2.
    slopes = torch.rand(3, H)
    with pytest.raises(ValueError, match=r"`alibi_slopes` must be of shape \(4,\) or \(2, 4\)"):
        call_varlen(*varlen(), alibi_slopes=slopes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_alibi_wrong_dtype(dtype):
    slopes = torch.rand(H).to(dtype)
    with pytest.raises(TypeError, match=r"`alibi_slopes` must be float32"):
        flash_attn_func(*dense(), alibi_slopes=slopes)


def test_alibi_wrong_device():
    slopes = torch.rand(H).to(other_device())
    with pytest.raises(ValueError, match=r"`alibi_slopes` must be on cpu"):
        flash_attn_func(*dense(), alibi_slopes=slopes)


def test_alibi_not_a_tensor():
    with pytest.raises(TypeError, match=r"`alibi_slopes` must be a torch.Tensor"):
        flash_attn_func(*dense(), alibi_slopes=[0.5] * H)


@pytest.mark.parametrize("shape", [(H,), (B, H)])
def test_alibi_good_shapes_accepted(shape):
    out = flash_attn_func(*dense(), alibi_slopes=torch.rand(shape))
    assert torch.isfinite(out).all()


# ============================================================== cu_seqlens / max_seqlen


@pytest.mark.parametrize("which", ["q", "k"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.int16])
def test_cu_seqlens_not_int32(which, dtype):
    args = list(varlen())
    idx = 3 if which == "q" else 4
    args[idx] = args[idx].to(dtype)
    with pytest.raises(TypeError, match=rf"`cu_seqlens_{which}` must be an int32 tensor"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
@pytest.mark.parametrize("bad", [
    torch.tensor([[0, 3, 7]], dtype=torch.int32),   # 2-D
    torch.tensor(7, dtype=torch.int32),             # 0-D
])
def test_cu_seqlens_not_1d(which, bad):
    args = list(varlen())
    args[3 if which == "q" else 4] = bad
    with pytest.raises(ValueError, match=rf"`cu_seqlens_{which}` must be a 1-D tensor"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_cu_seqlens_not_a_tensor(which):
    args = list(varlen())
    args[3 if which == "q" else 4] = [0, 3, 7]
    with pytest.raises(TypeError, match=rf"`cu_seqlens_{which}` must be a torch.Tensor"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_cu_seqlens_too_short(which):
    args = list(varlen())
    args[3 if which == "q" else 4] = torch.tensor([0], dtype=torch.int32)
    with pytest.raises(ValueError, match=rf"`cu_seqlens_{which}` must be of length batch \+ 1"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_cu_seqlens_decreasing(which):
    args = list(varlen())  # totals 7 and 7
    args[3 if which == "q" else 4] = torch.tensor([0, 5, 3, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match=rf"`cu_seqlens_{which}` must be non-decreasing"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_cu_seqlens_not_starting_at_zero(which):
    args = list(varlen())
    args[3 if which == "q" else 4] = torch.tensor([1, 3, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match=rf"`cu_seqlens_{which}` must be non-decreasing and "
                                         r"starting at 0"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
@pytest.mark.parametrize("last", [6, 8])
def test_cu_seqlens_wrong_total(which, last):
    args = list(varlen())  # total 7
    args[3 if which == "q" else 4] = torch.tensor([0, 3, last], dtype=torch.int32)
    with pytest.raises(ValueError, match=rf"`cu_seqlens_{which}` must be ending at the total "
                                         r"length 7"):
        call_varlen(*args)


def test_cu_seqlens_wrong_device():
    args = list(varlen())
    args[3] = args[3].to(other_device())
    with pytest.raises(ValueError, match=r"`cu_seqlens_q` must be on cpu"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
def test_max_seqlen_too_small(which):
    args = list(varlen())  # longest sequence: 4
    args[5 if which == "q" else 6] = 3
    with pytest.raises(ValueError, match=rf"`max_seqlen_{which}` must be >= the longest "
                                         r"sequence \(4\)"):
        call_varlen(*args)


@pytest.mark.parametrize("which", ["q", "k"])
@pytest.mark.parametrize("bad", [4.0, None, -1])
def test_max_seqlen_not_an_int(which, bad):
    args = list(varlen())
    args[5 if which == "q" else 6] = bad
    with pytest.raises(TypeError, match=rf"`max_seqlen_{which}` must be an int >= 0"):
        call_varlen(*args)


def test_max_seqlen_larger_than_needed_is_fine():
    q, k, v, cu_q, cu_k, _, _ = varlen()
    out = call_varlen(q, k, v, cu_q, cu_k, 10, 10)
    assert torch.isfinite(out).all()


def test_cu_seqlens_length_mismatch():
    # Each is valid on its own (totals 7), but batch 2 != batch 3.
    q, k, v = varlen()[:3]
    with pytest.raises(ValueError, match=r"`cu_seqlens_k` must have the length of "
                                         r"`cu_seqlens_q` \(3\), got 4"):
        call_varlen(q, k, v, cu(3, 4), cu(2, 2, 3), 4, 3)


# ============================================================== packed variants


@pytest.mark.parametrize("shape", [(B, S, H, D), (B, S, 3, H, D, 1), (S, 3, H, D)])
def test_qkvpacked_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"`qkv` must be a 5-D tensor"):
        flash_attn_qkvpacked_func(torch.randn(shape))


def test_qkvpacked_not_a_tensor():
    with pytest.raises(TypeError, match=r"`qkv` must be a torch.Tensor"):
        flash_attn_qkvpacked_func([1.0])


@pytest.mark.parametrize("shape", [(B, S, H, D), (B, S, 2, H, D, 1)])
def test_kvpacked_wrong_rank(shape):
    q = torch.randn(B, S, H, D)
    with pytest.raises(ValueError, match=r"`kv` must be a 5-D tensor"):
        flash_attn_kvpacked_func(q, torch.randn(shape))


def test_kvpacked_wrong_q_rank():
    kv = torch.randn(B, S, 2, H, D)
    with pytest.raises(ValueError, match=r"`q` must be a 4-D tensor"):
        flash_attn_kvpacked_func(torch.randn(S, H, D), kv)


@pytest.mark.parametrize("shape", [(7, H, D), (1, 7, 3, H, D)])
def test_varlen_qkvpacked_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"`qkv` must be a 4-D tensor"):
        flash_attn_varlen_qkvpacked_func(torch.randn(shape), cu(3, 4), 4)


@pytest.mark.parametrize("shape", [(7, H, D), (1, 7, 2, H, D)])
def test_varlen_kvpacked_wrong_rank(shape):
    q = torch.randn(7, H, D)
    with pytest.raises(ValueError, match=r"`kv` must be a 4-D tensor"):
        flash_attn_varlen_kvpacked_func(q, torch.randn(shape), cu(3, 4), cu(3, 4), 4, 4)


def test_varlen_qkvpacked_bad_cu_seqlens():
    qkv = torch.randn(7, 3, H, D)
    with pytest.raises(TypeError, match=r"`cu_seqlens_q` must be an int32 tensor"):
        flash_attn_varlen_qkvpacked_func(qkv, cu(3, 4).long(), 4)


def test_packed_variants_accept_good_input():
    qkv = torch.randn(B, S, 3, H, D)
    ref = flash_attn_func(*qkv.unbind(2))
    torch.testing.assert_close(flash_attn_qkvpacked_func(qkv), ref, rtol=0, atol=0)
    torch.testing.assert_close(flash_attn_kvpacked_func(qkv[:, :, 0], qkv[:, :, 1:]), ref,
                               rtol=0, atol=0)


# ============================================================== flash_attn_with_kvcache


def kvcache_inputs(b=B, cache=8, hk=H):
    q = torch.randn(b, 1, H, D)
    k_cache = torch.randn(b, cache, hk, D)
    v_cache = torch.randn(b, cache, hk, D)
    return q, k_cache, v_cache


@pytest.mark.parametrize("which", ["k", "v"])
def test_kvcache_k_without_v(which):
    q, k_cache, v_cache = kvcache_inputs()
    new = torch.randn(B, 1, H, D)
    kw = {which: new}
    with pytest.raises(ValueError, match=r"pass both `k` and `v`"):
        flash_attn_with_kvcache(q, k_cache, v_cache, **kw)


@pytest.mark.parametrize("num_splits", [-1, -8, 1.5, "2"])
def test_kvcache_bad_num_splits(num_splits):
    q, k_cache, v_cache = kvcache_inputs()
    with pytest.raises(ValueError, match=r"`num_splits` must be an int >= 0"):
        flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=4, num_splits=num_splits)


@pytest.mark.parametrize("bad", [
    torch.tensor([3, 4], dtype=torch.int64),
    torch.tensor([3.0, 4.0]),
    torch.tensor([3, 4, 5], dtype=torch.int32),  # wrong batch
])
def test_kvcache_bad_cache_seqlens(bad):
    q, k_cache, v_cache = kvcache_inputs()
    with pytest.raises(TypeError, match=r"`cache_seqlens` must be an int or an int32 tensor"):
        flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=bad)


def test_kvcache_cache_seqlens_wrong_rank():
    q, k_cache, v_cache = kvcache_inputs()
    with pytest.raises(ValueError, match=r"`cache_seqlens` must be a 1-D tensor"):
        flash_attn_with_kvcache(q, k_cache, v_cache,
                                cache_seqlens=torch.tensor([[3, 4]], dtype=torch.int32))


@pytest.mark.parametrize("name", ["q", "k_cache", "v_cache"])
def test_kvcache_wrong_rank(name):
    t = dict(zip(("q", "k_cache", "v_cache"), kvcache_inputs()))
    t[name] = t[name][0]
    with pytest.raises(ValueError, match=rf"`{name}` must be a 4-D tensor"):
        flash_attn_with_kvcache(t["q"], t["k_cache"], t["v_cache"], cache_seqlens=4)


def test_kvcache_new_k_bad_dtype():
    q, k_cache, v_cache = kvcache_inputs()
    k = torch.randn(B, 1, H, D, dtype=torch.float64)
    v = torch.randn(B, 1, H, D, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"`k` must be float16, bfloat16 or float32"):
        flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v, cache_seqlens=4)


def test_kvcache_good_input_runs():
    q, k_cache, v_cache = kvcache_inputs()
    k, v = torch.randn(B, 1, H, D), torch.randn(B, 1, H, D)
    seqlens = torch.tensor([2, 5], dtype=torch.int32)
    out = flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v, cache_seqlens=seqlens,
                                  num_splits=0)
    assert out.shape == q.shape and torch.isfinite(out).all()
    torch.testing.assert_close(k_cache[0, 2], k[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(k_cache[1, 5], k[1, 0], rtol=0, atol=0)


# ============================================================== backend selection


@pytest.mark.parametrize("name", ["cuda", "TORCH", "", "cpu"])
def test_set_backend_invalid(name):
    with pytest.raises(ValueError, match=r"backend must be one of"):
        flashtile.set_backend(name)
    assert backend._override is None


def test_use_backend_invalid():
    with pytest.raises(ValueError, match=r"backend must be one of"):
        with flashtile.use_backend("cuda"):
            pass


def test_env_backend_invalid(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"backend must be one of .*'cuda'"):
        flashtile.get_backend()
    with pytest.raises(ValueError, match=r"backend must be one of .*'cuda'"):
        flash_attn_func(*dense())


def test_env_backend_normalised(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "  Torch ")
    assert flashtile.get_backend() == "torch"
    monkeypatch.setenv("FLASHTILE_BACKEND", "")
    assert flashtile.get_backend() == "auto"


def test_override_beats_env(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "cuda")
    with flashtile.use_backend("torch"):
        assert flashtile.get_backend() == "torch"
        assert torch.isfinite(flash_attn_func(*dense())).all()
    assert backend._override is None


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not backend.interpreter_on()
    with pytest.raises(NotImplementedError, match=r"Triton backend needs CUDA tensors"):
        flash_attn_func(*dense())
    with pytest.raises(NotImplementedError, match=r"Triton backend needs CUDA tensors"):
        backend.resolve(torch.device("cpu"))


def test_triton_backend_interpreter_zero_is_off(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not backend.interpreter_on()
    with flashtile.use_backend("triton"):
        with pytest.raises(NotImplementedError, match=r"Triton backend needs CUDA tensors"):
            backend.resolve(torch.device("cpu"))


def test_auto_backend_on_cpu_uses_torch(monkeypatch):
    monkeypatch.setenv("FLASHTILE_BACKEND", "auto")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backend.resolve(torch.device("cpu")) == "torch"


# ============================================================== non-contiguous inputs


def strided_last_dim(x: torch.Tensor) -> torch.Tensor:
    """The same values as x with stride(-1) == 2."""
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    y = wide[..., ::2]
    assert y.stride(-1) == 2 and torch.equal(y, x)
    return y


@pytest.mark.parametrize("causal", [False, True])
def test_non_contiguous_last_dim_dense(causal):
    q, k, v = dense(hk=2)
    ref = flash_attn_func(q, k, v, causal=causal)
    out = flash_attn_func(*(strided_last_dim(x) for x in (q, k, v)), causal=causal)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_non_contiguous_last_dim_gradients():
    q, k, v = dense()
    leaves = [strided_last_dim(x).requires_grad_() for x in (q, k, v)]
    flash_attn_func(*leaves).sum().backward()
    ref_leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    flash_attn_func(*ref_leaves).sum().backward()
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_non_contiguous_last_dim_varlen():
    q, k, v, *rest = varlen()
    ref = call_varlen(q, k, v, *rest)
    out = call_varlen(*(strided_last_dim(x) for x in (q, k, v)), *rest)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_non_contiguous_other_dims_accepted():
    # Only the last dim needs stride 1: a (B, H, S, D) tensor transposed to (B, S, H, D).
    q, k, v = dense()
    t = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    assert not t[0].is_contiguous() and t[0].stride(-1) == 1
    torch.testing.assert_close(flash_attn_func(*t), flash_attn_func(q, k, v), rtol=0, atol=0)


# ============================================================== NaN isolation


def run_with_grads(fn, *tensors):
    leaves = [x.clone().requires_grad_() for x in tensors]
    out = fn(*leaves)
    out.backward(torch.ones_like(out))
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("causal", [False, True])
def test_nan_does_not_leak_between_batch_items_dense(causal):
    q, k, v = dense(b=2, hk=2)
    q_nan = q.clone()
    q_nan[0, 1, 0, 0] = float("nan")
    fn = lambda *t: flash_attn_func(*t, causal=causal)  # noqa: E731
    out_ref, grads_ref = run_with_grads(fn, q, k, v)
    out, grads = run_with_grads(fn, q_nan, k, v)
    assert torch.isnan(out[0]).any()  # the NaN does reach its own item
    assert torch.isfinite(out[1]).all()
    torch.testing.assert_close(out[1], out_ref[1], rtol=0, atol=0)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.isfinite(g[1]).all()
        torch.testing.assert_close(g[1], g_ref[1], rtol=0, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_nan_does_not_leak_between_batch_items_varlen(causal):
    q, k, v, cu_q, cu_k, max_q, max_k = varlen((3, 4), (5, 2))
    q_nan = q.clone()
    q_nan[0, 0, 0] = float("nan")  # row 0 belongs to sequence 0
    fn = lambda *t: call_varlen(*t, cu_q, cu_k, max_q, max_k, causal=causal)  # noqa: E731
    out_ref, grads_ref = run_with_grads(fn, q, k, v)
    out, grads = run_with_grads(fn, q_nan, k, v)
    assert torch.isnan(out[:3]).any()
    seq1 = {"q": slice(3, 7), "k": slice(5, 7), "v": slice(5, 7)}
    assert torch.isfinite(out[seq1["q"]]).all()
    torch.testing.assert_close(out[seq1["q"]], out_ref[seq1["q"]], rtol=0, atol=0)
    for name, g, g_ref in zip("qkv", grads, grads_ref):
        assert torch.isfinite(g[seq1[name]]).all()
        torch.testing.assert_close(g[seq1[name]], g_ref[seq1[name]], rtol=0, atol=0)


# ============================================================== fully masked rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fully_masked_rows_dense(dtype):
    # causal, seqlen_q = 5 > seqlen_k = 2: queries 0..2 see no key (bottom-right alignment).
    q, k, v = dense(sq=5, sk=2, hk=2, dtype=dtype)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse, probs = flash_attn_func(*leaves, causal=True, return_attn_probs=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert lse.shape == (B, H, 5)
    assert probs is None  # flash_attn's S_dmask exists only with dropout
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    assert torch.isneginf(lse[:, :, :3]).all()
    assert torch.isfinite(lse[:, :, 3:]).all()
    assert torch.isfinite(out).all()
    out.float().square().sum().backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all()
    assert torch.equal(leaves[0].grad[:, :3], torch.zeros_like(leaves[0].grad[:, :3]))


def test_fully_masked_rows_window():
    # window (0, 0) with seqlen_q > seqlen_k: only the last seqlen_k queries see a key.
    q, k, v = dense(sq=6, sk=3)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse, _ = flash_attn_func(*leaves, window_size=(0, 0), return_attn_probs=True)
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    assert torch.isneginf(lse[:, :, :3]).all() and torch.isfinite(lse[:, :, 3:]).all()
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_fully_masked_rows_varlen():
    # Sequence 0: 4 queries, 1 key, causal -> queries 0..2 masked. Sequence 1: 2 queries, 0 keys.
    q, k, v, cu_q, cu_k, max_q, max_k = varlen((4, 2), (1, 3))
    cu_k = cu(1, 0)
    k, v = k[:1], v[:1]
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse, probs = call_varlen(*leaves, cu_q, cu_k, max_q, 1, causal=True,
                                  return_attn_probs=True)
    assert lse.shape == (H, 6) and probs is None
    masked = torch.tensor([0, 1, 2, 4, 5])
    assert torch.equal(out[masked], torch.zeros_like(out[masked]))
    assert torch.isneginf(lse[:, masked]).all()
    assert torch.isfinite(lse[:, 3]).all()
    out.sum().backward()
    for x in leaves:
        assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- found in review


@pytest.mark.parametrize("call", [
    lambda t: flashtile.flash_attn_qkvpacked_func(t(2, 8, 4, 2, 16)),
    lambda t: flashtile.flash_attn_kvpacked_func(t(2, 8, 2, 16), t(2, 8, 3, 2, 16)),
    lambda t: flashtile.flash_attn_varlen_qkvpacked_func(
        t(8, 2, 2, 16), torch.tensor([0, 8], dtype=torch.int32), 8),
    lambda t: flashtile.flash_attn_varlen_kvpacked_func(
        t(8, 2, 16), t(8, 3, 2, 16), torch.tensor([0, 8], dtype=torch.int32),
        torch.tensor([0, 8], dtype=torch.int32), 8, 8),
], ids=["qkvpacked", "kvpacked", "varlen_qkvpacked", "varlen_kvpacked"])
def test_packed_dim_of_wrong_size(call):
    with pytest.raises(ValueError, match=r"`(qkv|kv)` must be of size [23] along dim"):
        call(lambda *shape: torch.randn(*shape))


@pytest.mark.parametrize("kwargs,match", [
    (dict(softmax_scale=float("nan")), "softmax_scale"),
    (dict(softmax_scale=float("inf")), "softmax_scale"),
    (dict(softcap=float("inf")), "softcap"),
    (dict(softcap=float("nan")), "softcap"),
])
def test_non_finite_scalars(kwargs, match):
    q, k, v = dense()
    with pytest.raises(ValueError, match=match):
        flash_attn_func(q, k, v, **kwargs)


def test_window_of_bools_rejected():
    q, k, v = dense()
    with pytest.raises(TypeError, match="window_size"):
        flash_attn_func(q, k, v, window_size=(True, False))


def test_block_table_rows_and_indices():
    q = torch.randn(16, 2, 16)
    cache = torch.randn(4, 16, 2, 16)
    cu = torch.tensor([0, 8, 16], dtype=torch.int32)
    with pytest.raises(ValueError, match="one row per sequence"):
        flashtile.flash_attn_varlen_func(q, cache, cache, cu, cu, 8, 8,
                                         block_table=torch.zeros(3, 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="page indices"):
        flashtile.flash_attn_varlen_func(q, cache, cache, cu, cu, 8, 8,
                                         block_table=torch.tensor([[0], [-1]], dtype=torch.int32))
