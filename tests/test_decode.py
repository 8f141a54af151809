"""flash_attn_with_kvcache on the Triton backend (split-KV decoding kernel) and
merge_attention_states.

The kernel cases follow flash_attn's kvcache tests (new k/v appended in place,
rotary, paged or contiguous caches, leftpad, cache_batch_idx, GQA, causal /
window / softcap / ALiBi, num_splits), small enough for Triton's interpreter:
without a GPU the kernels run there (fp16 and fp32; bf16 tl.dot is not emulated).
Outputs are held to FlashAttention's rule against the float64 `attention_ref`:
max error <= 2 x that of the same reference run in the inputs' dtype. Cases
marked `gpu` are long caches that only make sense on a CUDA device.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import os

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import flashtile  # noqa: E402
from accuracy import rounding_atol  # noqa: E402
from flashtile.kernels.config import KernelConfig  # noqa: E402
from flashtile.kernels.decode import (  # noqa: E402
    decode_attention, num_splits_heuristic, resident_programs)
from flashtile.merge import merge_attention_states  # noqa: E402
from flashtile.reference import attention_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array:DeprecationWarning")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def rotary_ref(x, positions, base_angles, interleaved):
    """RoPE in float64 through complex multiplication (independent of flashtile.rotary).
    x (B, S, H, D), positions (B, S); returns float64."""
    rd = 2 * base_angles.shape[0]
    x = x.double()
    if rd == 0:
        return x
    rot = x[..., :rd]
    if interleaved:
        pairs = torch.complex(rot[..., 0::2], rot[..., 1::2])
    else:
        pairs = torch.complex(rot[..., : rd // 2], rot[..., rd // 2:])
    angle = positions.to(x.device)[..., None, None].double() * base_angles.double().to(x.device)
    pairs = pairs * torch.polar(torch.ones_like(angle), angle)
    if interleaved:
        rot = torch.stack((pairs.real, pairs.imag), dim=-1).flatten(-2)
    else:
        rot = torch.cat((pairs.real, pairs.imag), dim=-1)
    return torch.cat((rot, x[..., rd:]), dim=-1)


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_rule(ours, ref, base, head_dim, name, factor=2.0):
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    err, berr = _err(ours, ref), _err(base, ref)
    bound = factor * berr + rounding_atol(ref, head_dim)
    assert err <= bound, f"{name}: error {err:.3e} > {factor} x baseline {berr:.3e} (+atol)"


def assert_lse(ours, ref, base):
    assert not torch.isnan(ours).any(), "lse: NaN"
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(ours), inf), "lse: -inf rows differ from the reference"
    assert (ours[inf] < 0).all()
    err, berr = _err(ours[~inf], ref[~inf]), _err(base[~inf], ref[~inf])
    assert err <= 2 * berr + 1e-4, f"lse: error {err:.3e} > 2 x baseline {berr:.3e}"


def same(a, b):
    """Bitwise equal, NaN included."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _physical(logical, table, n_blocks, page):
    """Scatter a logical (B, S, Hk, D) cache into pages (n_blocks, page, Hk, D)."""
    phys = torch.randn(n_blocks, page, *logical.shape[2:], dtype=torch.float64,
                       device=logical.device).to(logical.dtype)
    B, S = logical.shape[:2]
    pos = torch.arange(S, device=logical.device)
    for b in range(B):
        phys[table[b, pos // page].long(), pos % page] = logical[b]
    return phys


def _logical(phys, table, S):
    page = phys.shape[1]
    pos = torch.arange(S, device=phys.device)
    return torch.stack([phys[table[b, pos // page].long(), pos % page]
                        for b in range(table.shape[0])])


# ----------------------------------------------------------------------------
# the kvcache grid
# ----------------------------------------------------------------------------

MASKS = [
    dict(),
    dict(causal=True),
    dict(window_size=(9, 2)),
    dict(softcap=2.0),
    dict(alibi=True),
    dict(causal=True, softcap=2.0, alibi=True),
    dict(causal=True, window_size=(40, 0)),
    dict(window_size=(33, 5), alibi=True),
]


def run_case(Sq, Sk, rotary_fraction, paged, new_kv, num_splits, *, mask, leftpad,
             batch_idx, interleaved, dtype=torch.float16, D=32, H=6, Hk=2, B=3, page=16,
             seed=0, starved=False, backend="triton"):
    """One flash_attn_with_kvcache call on `backend` against the reference.

    Sk is the cache capacity in keys; each sequence gets a random number of keys
    already in it (the last one a full cache after the append) and, with new_kv,
    Sq new keys appended in place. starved: sequence 1 holds only 3 keys (causal
    rows with no key to see).
    """
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    new = Sq if new_kv else 0
    q = rand(B, Sq, H, D)
    k_full, v_full = rand(B, Sk, Hk, D), rand(B, Sk, Hk, D)
    k_new, v_new = rand(B, new, Hk, D), rand(B, new, Hk, D)
    seqlens = torch.randint(0, Sk - new + 1, (B,), generator=gen)
    seqlens[-1] = Sk - new
    if starved and new == 0:
        seqlens[1] = 3
    pad = torch.zeros(B, dtype=torch.int64)
    if leftpad:
        pad = (torch.rand(B, generator=gen) * seqlens.clamp(min=1)).long().clamp(max=seqlens)
    seqlens, pad = seqlens.to(torch.int32), pad.to(torch.int32)
    # Slots outside each sequence's live keys hold garbage: NaN must not leak into the output.
    cols = torch.arange(Sk)[None]
    dead = ((cols < pad.long()[:, None]) | (cols >= (seqlens + new).long()[:, None])).to(DEVICE)
    k_full[dead], v_full[dead] = float("nan"), float("nan")

    rd = int(rotary_fraction * D) // 2 * 2
    angles = 1.0 / (10000 ** (torch.arange(0, rd, 2).double() / max(rd, 1)))
    cos = sin = None
    if rd:
        t = torch.arange(Sk + Sq).double()[:, None] * angles  # q may sit past the cache
        cos, sin = torch.cos(t).float().to(DEVICE), torch.sin(t).float().to(DEVICE)

    if paged:
        n_pages = math.ceil(Sk / page)
        n_blocks = B * n_pages + 3  # spare pages stay untouched
        table = torch.randperm(n_blocks, generator=gen)[: B * n_pages].view(B, n_pages)
        table = table.to(torch.int32).to(DEVICE)
        k_cache = _physical(k_full, table, n_blocks, page)
        v_cache = _physical(v_full, table, n_blocks, page)
        rows = None
    else:
        table = None
        n_rows = B + 2 if batch_idx else B
        k_cache, v_cache = rand(n_rows, Sk, Hk, D), rand(n_rows, Sk, Hk, D)
        rows = torch.randperm(n_rows, generator=gen)[:B] if batch_idx else torch.arange(B)
        k_cache[rows.to(DEVICE)] = k_full
        v_cache[rows.to(DEVICE)] = v_full
    k_before, v_before = k_cache.clone(), v_cache.clone()

    causal = mask.get("causal", False)
    window = mask.get("window_size", (-1, -1))
    softcap = mask.get("softcap", 0.0)
    alibi = None
    if mask.get("alibi"):
        alibi = (torch.rand(B, H, generator=gen) * 0.3).to(DEVICE)
        if seed % 2:
            alibi = alibi[0].contiguous()  # (H,) form

    # fp32 cases are checked against an fp32 baseline, so they need full fp32 dots
    # (on a GPU the default TF32 is coarser than the baseline; the interpreter is exact).
    precision = _ieee() if dtype == torch.float32 else contextlib.nullcontext()
    with flashtile.use_backend(backend), precision:
        out, lse = flashtile.flash_attn_with_kvcache(
            q, k_cache, v_cache, k_new if new else None, v_new if new else None,
            rotary_cos=cos, rotary_sin=sin,
            cache_seqlens=seqlens.to(DEVICE),
            cache_batch_idx=rows.to(torch.int32).to(DEVICE) if batch_idx and not paged else None,
            cache_leftpad=pad.to(DEVICE) if leftpad else None, block_table=table,
            causal=causal, window_size=window, softcap=softcap, alibi_slopes=alibi,
            rotary_interleaved=interleaved, num_splits=num_splits, return_softmax_lse=True)

    # 1. the cache after the append: rotated new keys at seqlens[b] ..., nothing else moved
    k_exp, v_exp = k_full.clone(), v_full.clone()
    for b in range(B):
        n = int(seqlens[b])
        if new:
            kn = rotary_ref(k_new[b:b + 1], torch.arange(n, n + new)[None], angles,
                            interleaved)
            k_exp[b, n:n + new], v_exp[b, n:n + new] = kn[0].to(dtype), v_new[b]
    if paged:
        got_k, got_v = _logical(k_cache, table, Sk), _logical(v_cache, table, Sk)
        used = torch.zeros(k_cache.shape[0], dtype=torch.bool)
        used[table.flatten().long().cpu()] = True
        same(k_cache[~used.to(DEVICE)], k_before[~used.to(DEVICE)])
    else:
        got_k, got_v = k_cache[rows.to(DEVICE)], v_cache[rows.to(DEVICE)]
        others = torch.ones(k_cache.shape[0], dtype=torch.bool)
        others[rows] = False
        same(k_cache[others.to(DEVICE)], k_before[others.to(DEVICE)])
    same(got_v, v_exp)
    if rd and new:
        torch.testing.assert_close(got_k, k_exp, rtol=2e-3, atol=2e-3, equal_nan=True)
    else:
        same(got_k, k_exp)

    # 2. attention against the reference (float64) and the baseline (same dtype)
    local = causal or tuple(window) != (-1, -1)
    steps = torch.arange(Sq)[None] * int(local)
    q_pos = seqlens.long()[:, None] + steps  # cache indices, as in flash_attn (not - leftpad)
    q_ro = rotary_ref(q, q_pos.to(DEVICE), angles, interleaved)  # float64
    k_exp, v_exp = k_exp.nan_to_num(0.0), v_exp.nan_to_num(0.0)  # the reference multiplies 0 * v
    opts = dict(key_padding_mask=~dead, key_leftpad=pad.to(DEVICE), causal=causal,
                window_size=window, softcap=softcap, alibi_slopes=alibi)
    ref, ref_lse = attention_ref(q_ro, k_exp, v_exp, **opts)
    base, base_lse = attention_ref(q_ro.to(dtype), k_exp, v_exp, upcast=False, **opts)
    base = base.nan_to_num(0.0)  # the low-precision baseline itself may NaN on empty rows
    assert out.shape == q.shape and out.dtype == dtype
    assert lse.shape == (B, H, Sq) and lse.dtype == torch.float32
    assert_rule(out, ref, base, D, "out")
    assert_lse(lse.double(), ref_lse, base_lse.double())


CASES = []
for i, (shape, rf, paged, new_kv, ns) in enumerate(itertools.product(
        [(1, 128), (1, 339), (3, 100), (17, 80)], [0.0, 0.5, 1.0], [False, True],
        [True, False], [0, 1, 3])):
    CASES.append(pytest.param(
        *shape, rf, paged, new_kv, ns, i,
        id=f"sq{shape[0]}-sk{shape[1]}-rot{rf}-{'paged' if paged else 'dense'}-"
           f"{'new' if new_kv else 'nonew'}-split{ns}-m{i % len(MASKS)}"))


@pytest.mark.parametrize("Sq,Sk,rotary_fraction,paged,new_kv,num_splits,index", CASES)
def test_kvcache_decode(Sq, Sk, rotary_fraction, paged, new_kv, num_splits, index):
    # The secondary options cycle with coprime periods, so every pairing occurs.
    run_case(Sq, Sk, rotary_fraction, paged, new_kv, num_splits,
             mask=MASKS[index % len(MASKS)], leftpad=bool(index % 3 == 1),
             batch_idx=bool(index % 5 in (0, 3)), interleaved=bool(index % 2),
             dtype=torch.float32 if index % 11 == 4 else torch.float16,
             D=(32, 40)[index % 7 == 6], seed=index, starved=index % 3 == 0)


@pytest.mark.parametrize("mask", range(len(MASKS)))
def test_kvcache_decode_mqa_and_gqa8(mask):
    """MQA (8:1, a whole 8-head group in one tile) and GQA 8:2, head dim 64."""
    run_case(1, 200, 0.5, mask % 2 == 1, True, 0, mask=MASKS[mask], leftpad=mask % 3 == 0,
             batch_idx=False, interleaved=False, H=8, Hk=1 + mask % 2, D=64, seed=mask)


@pytest.mark.parametrize("num_splits", [2, 1000])
def test_chunked_prefill(num_splits):
    """A 40-token chunk (120 packed rows) appended to and attending over the cache;
    more splits than key tiles are harmless."""
    run_case(40, 96, 1.0, num_splits == 2, True, num_splits, mask=MASKS[1], leftpad=True,
             batch_idx=True, interleaved=True, B=2, seed=7)


def test_many_splits_merge_in_chunks():
    """40 splits: more than one merge chunk (16 splits per chunk in the interpreter);
    the starved sequence leaves most splits empty (LSE -inf) and must still merge."""
    run_case(1, 700, 0.5, False, True, 40, mask=MASKS[0], leftpad=False, batch_idx=False,
             interleaved=False, B=2, seed=11, starved=True)


@pytest.mark.parametrize("page", [16, 48])
@pytest.mark.parametrize("block_n,block_m", [(32, 16), (64, 32)])
def test_page_gather_path(page, block_n, block_m):
    """Pages smaller than (or not a multiple of) BLOCK_N: a page index per key row."""
    gen = torch.Generator().manual_seed(page + block_n)
    B, Sq, H, Hk, D, S = 2, 5, 6, 2, 32, 150
    n_pages = math.ceil(S / page)
    table = torch.randperm(B * n_pages + 2, generator=gen)[: B * n_pages].view(B, n_pages)
    table = table.to(torch.int32).to(DEVICE)
    k_log = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE, torch.float16)
    v_log = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE, torch.float16)
    kc = _physical(k_log, table, B * n_pages + 2, page)
    vc = _physical(v_log, table, B * n_pages + 2, page)
    q = torch.randn(B, Sq, H, D, generator=gen).to(DEVICE, torch.float16)
    hi = torch.tensor([97, 150], dtype=torch.int32)
    lo = torch.tensor([10, 0], dtype=torch.int32)
    for num_splits, window in ((1, (-1, 0)), (3, (20, 0)), (2, (-1, -1))):
        out, lse = decode_attention(
            q, kc, vc, hi.to(DEVICE), cache_leftpad=lo.to(DEVICE), block_table=table,
            softmax_scale=D ** -0.5, window_left=window[0], window_right=window[1],
            num_splits=num_splits, config=KernelConfig(block_m, block_n, 4, 2))
        cols = torch.arange(S)[None]
        opts = dict(key_padding_mask=((cols >= lo[:, None]) & (cols < hi[:, None])).to(DEVICE),
                    key_leftpad=lo.to(DEVICE), window_size=window)
        ref, ref_lse = attention_ref(q, k_log, v_log, **opts)
        base, base_lse = attention_ref(q, k_log, v_log, upcast=False, **opts)
        assert_rule(out, ref, base, D, "out")
        assert_lse(lse.double(), ref_lse, base_lse.double())


def test_kernel_partials_merge_like_merge_attention_states():
    """The kernel's split partials, merged by merge_attention_states, give the
    kernel's own merged output (the two merges compute the same function)."""
    gen = torch.Generator().manual_seed(3)
    B, Sq, H, Hk, D, S = 2, 3, 6, 2, 32, 120
    q = torch.randn(B, Sq, H, D, generator=gen).to(DEVICE)
    kc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    vc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    seqlens = torch.tensor([50, 120], dtype=torch.int32, device=DEVICE)
    out, lse, (o_part, l_part) = decode_attention(
        q, kc, vc, seqlens, softmax_scale=D ** -0.5, window_right=0, window_left=30,
        num_splits=4, return_partials=True, fp32_precision="ieee")
    assert torch.isneginf(l_part).any()  # some splits miss the window entirely
    n, bhk, rows = l_part.shape
    merged, merged_lse = merge_attention_states(o_part.view(n, bhk, rows, 1, D),
                                                l_part.view(n, bhk, 1, rows))
    G = H // Hk
    mine = out.view(B, Sq, Hk, G, D).permute(0, 2, 1, 3, 4).reshape(bhk, rows, D)
    mine_lse = lse.view(B, Hk, G, Sq).permute(0, 1, 3, 2).reshape(bhk, 1, rows)
    torch.testing.assert_close(mine, merged[:, :, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine_lse, merged_lse, atol=1e-5, rtol=1e-5)
    ref, _ = attention_ref(q, kc, vc, key_padding_mask=(torch.arange(S, device=DEVICE)[None]
                                                        < seqlens[:, None].long()),
                           causal=True, window_size=(30, 0))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_decode_steps_reuse_their_launch_plan():
    """Steps with the same shapes and options reuse one memoised plan (decode.py's
    `_PLANS`) on new values and lengths; each step matches the reference."""
    from flashtile.kernels import decode
    decode._PLANS._plans.clear()
    gen = torch.Generator().manual_seed(4)
    B, H, Hk, D, S = 2, 4, 2, 32, 96
    kc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    vc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    for lens in ([40, 96], [41, 7], [90, 1]):
        q = torch.randn(B, 1, H, D, generator=gen).to(DEVICE)
        seqlens = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
        out, _ = decode_attention(q, kc, vc, seqlens, softmax_scale=D ** -0.5, window_right=0,
                                  num_splits=3, fp32_precision="ieee")
        keep = torch.arange(S, device=DEVICE)[None] < seqlens[:, None].long()
        ref, _ = attention_ref(q, kc, vc, key_padding_mask=keep, causal=True)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert len(decode._PLANS) == 1


def test_torch_and_triton_paths_agree():
    """Same call on both backends (fp32): same cache, same output."""
    gen = torch.Generator().manual_seed(5)
    B, Sq, H, Hk, D, S = 2, 2, 4, 2, 32, 64
    q = torch.randn(B, Sq, H, D, generator=gen).to(DEVICE)
    kc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    vc = torch.randn(B, S, Hk, D, generator=gen).to(DEVICE)
    kn = torch.randn(B, Sq, Hk, D, generator=gen).to(DEVICE)
    vn = torch.randn(B, Sq, Hk, D, generator=gen).to(DEVICE)
    seqlens = torch.tensor([10, 40], dtype=torch.int32, device=DEVICE)
    results = []
    for name in ("torch", "triton"):
        k2, v2 = kc.clone(), vc.clone()
        with flashtile.use_backend(name), _ieee():
            out, lse = flashtile.flash_attn_with_kvcache(
                q, k2, v2, kn, vn, cache_seqlens=seqlens, causal=True, softcap=3.0,
                return_softmax_lse=True, num_splits=2)
        results.append((out, lse, k2, v2))
    (o1, l1, k1, v1), (o2, l2, k2, v2) = results
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)


class _ieee:
    """Full fp32 dots (no TF32) for the duration."""

    def __enter__(self):
        flashtile.set_fp32_precision("ieee")

    def __exit__(self, *exc):
        flashtile.set_fp32_precision(None)


def test_num_splits_heuristic():
    # enough programs to fill the machine: never split
    assert num_splits_heuristic(256 * 8, 2 * 132, 512) == 1
    # one sequence, 8 KV heads on 132 SMs: split, about one full wave of 2 x SMs
    s = num_splits_heuristic(8, 2 * 132, 512)
    assert 31 <= s <= 33 and 8 * s <= 2 * 132
    # one resident program per SM (128-key d128 tiles): 16 splits, 128 of 132 slots
    assert num_splits_heuristic(8, 132, 512) == 16
    assert resident_programs(KernelConfig(16, 128, 4, 3), 128, 2) == 1
    assert resident_programs(KernelConfig(16, 64, 4, 3), 128, 2) == 2
    # short cache: at most one split per key block
    assert num_splits_heuristic(8, 2 * 132, 3) <= 3
    assert num_splits_heuristic(1, 8, 1) == 1


# ----------------------------------------------------------------------------
# merge_attention_states
# ----------------------------------------------------------------------------

def _random_cuts(n, parts, gen):
    cuts = sorted(torch.randperm(n - 1, generator=gen)[: parts - 1].add(1).tolist())
    return [0] + cuts + [n]


@pytest.mark.parametrize("parts", [2, 3, 7])
@pytest.mark.parametrize("causal", [False, True])
def test_merge_random_splits_equal_full_attention(parts, causal):
    gen = torch.Generator().manual_seed(parts)
    B, Sq, Sk, H, Hk, D = 2, 5, 61, 4, 2, 16
    q = torch.randn(B, Sq, H, D, generator=gen, dtype=torch.float64)
    k = torch.randn(B, Sk, Hk, D, generator=gen, dtype=torch.float64)
    v = torch.randn(B, Sk, Hk, D, generator=gen, dtype=torch.float64)
    full, full_lse = attention_ref(q, k, v, causal=causal)
    cuts = _random_cuts(Sk, parts, gen)
    outs, lses = [], []
    for a, b in zip(cuts, cuts[1:]):
        o, lse = _attention_on_keys(q, k, v, a, b, causal)  # keys a..b-1 of the range
        outs.append(o.float())
        lses.append(lse.float())
    out, lse = merge_attention_states(outs, lses)
    torch.testing.assert_close(out.double(), full, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(lse.double(), full_lse, atol=2e-6, rtol=1e-5)
    # stacked form, and folding two at a time, give the same
    out2, lse2 = merge_attention_states(torch.stack(outs), torch.stack(lses))
    torch.testing.assert_close(out2, out)
    acc_o, acc_l = outs[0], lses[0]
    for o, l in zip(outs[1:], lses[1:]):
        acc_o, acc_l = merge_attention_states(acc_o, acc_l, o, l)
    torch.testing.assert_close(acc_o, out, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(acc_l, lse, atol=2e-6, rtol=1e-5)


def _attention_on_keys(q, k, v, a, b, causal):
    """float64 attention of q over keys a..b-1 only, keeping the full range's
    bottom-right causal alignment (rows that see none of them: out 0, lse -inf)."""
    Sq, Sk = q.shape[1], k.shape[1]
    H, Hk = q.shape[2], k.shape[2]
    kk = k.repeat_interleave(H // Hk, dim=2)
    vv = v.repeat_interleave(H // Hk, dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q, kk) / math.sqrt(q.shape[-1])
    j = torch.arange(Sk)[None, :]
    i = torch.arange(Sq)[:, None]
    keep = (j >= a) & (j < b)
    if causal:
        keep = keep & (j <= i + Sk - Sq)
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bjhd->bihd", p, vv), lse


def test_merge_neg_inf_parts():
    gen = torch.Generator().manual_seed(0)
    B, S, H, D = 2, 3, 2, 8
    out_a = torch.randn(B, S, H, D, generator=gen)
    out_b = torch.randn(B, S, H, D, generator=gen)
    lse_a = torch.randn(B, H, S, generator=gen)
    lse_b = torch.randn(B, H, S, generator=gen)
    # part a saw no key for some rows: its output there is garbage (NaN) and must not leak
    lse_a[0, 1, 2] = float("-inf")
    out_a[0, 2, 1] = float("nan")
    # both parts empty for one row
    lse_a[1, 0, 0] = lse_b[1, 0, 0] = float("-inf")
    out_b[1, 0, 0] = float("nan")
    out, lse = merge_attention_states(out_a, lse_a, out_b, lse_b)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    torch.testing.assert_close(out[0, 2, 1], out_b[0, 2, 1])
    assert lse[0, 1, 2] == lse_b[0, 1, 2]
    assert torch.equal(out[1, 0, 0], torch.zeros(D)) and lse[1, 0, 0] == float("-inf")
    # everything -inf: zeros and -inf
    ninf = torch.full_like(lse_a, float("-inf"))
    out, lse = merge_attention_states([out_a, out_b, out_a], [ninf, ninf, ninf])
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    # one part only is the identity (finite rows)
    out, lse = merge_attention_states([out_b], [lse_b])
    ok = ~torch.isneginf(lse_b).transpose(-1, -2)
    torch.testing.assert_close(out[ok], out_b[ok])
    # fp16 outputs stay fp16, the LSE is fp32
    out, lse = merge_attention_states(out_a.half(), lse_a, out_b.half(), lse_b)
    assert out.dtype == torch.float16 and lse.dtype == torch.float32


def test_merge_shape_errors():
    o = torch.zeros(2, 3, 4, 8)
    with pytest.raises(ValueError):
        merge_attention_states(o, torch.zeros(2, 3, 4), o, torch.zeros(2, 3, 4))  # (B, S, H)
    with pytest.raises(ValueError):
        merge_attention_states([o, o], [torch.zeros(2, 4, 3)])


# ----------------------------------------------------------------------------
# long caches: GPU only
# ----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("shape", [(16, 20000), (1, 131072)], ids=["sq16-sk20k", "sq1-sk128k"])
@pytest.mark.parametrize("mask", [0, 1, 5, 6])
def test_kvcache_decode_long_gpu(shape, paged, mask):
    Sq, Sk = shape
    for num_splits in (0, 1):
        run_case(Sq, Sk, 0.5, paged, True, num_splits, mask=MASKS[mask], leftpad=mask == 1,
                 batch_idx=not paged, interleaved=False, dtype=torch.bfloat16, D=128, H=8,
                 Hk=2, B=2, page=256, seed=mask)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 128), (1, 339), (3, 1024), (64, 800)],
                         ids=lambda s: f"sq{s[0]}-sk{s[1]}")
@pytest.mark.parametrize("rotary_fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("new_kv", [True, False])
def test_kvcache_grid_gpu(shape, rotary_fraction, paged, new_kv):
    """flash_attn's kvcache grid at d = 128 in bf16 on the GPU: both split modes, pages
    of 16 and 256, leftpad and the masks cycling with the parameters."""
    Sq, Sk = shape
    index = 7 * Sk + 3 * Sq + int(10 * rotary_fraction) + 2 * paged + new_kv
    for num_splits in (0, 1):
        run_case(Sq, Sk, rotary_fraction, paged, new_kv, num_splits,
                 mask=MASKS[index % len(MASKS)], leftpad=index % 3 == 1,
                 batch_idx=not paged and index % 2 == 0, interleaved=index % 2 == 1,
                 dtype=torch.bfloat16, D=128, H=8, Hk=2, B=3,
                 page=(16, 256)[index % 2], seed=index, starved=index % 4 == 0)


# flash_attn's kvcache grid on the PyTorch path (what runs on a CPU without the
# interpreter): every (Sq, Sk) of the issue, rotary fractions, paged or not, new k/v or
# none, both num_splits settings; the two long caches with one rotary fraction each.
TORCH_GRID = [
    pytest.param(sq, sk, rf, paged, new_kv, id=f"sq{sq}-sk{sk}-rot{rf}-"
                 f"{'paged' if paged else 'dense'}-{'new' if new_kv else 'nonew'}")
    for (sq, sk) in [(1, 128), (1, 339), (3, 1024), (64, 800), (16, 20000), (1, 131072)]
    for rf in ([0.0, 0.5, 1.0] if sk <= 1024 else [0.5])
    for paged in (False, True) for new_kv in (True, False)]


@pytest.mark.parametrize("Sq,Sk,rotary_fraction,paged,new_kv", TORCH_GRID)
def test_kvcache_grid_torch_path(Sq, Sk, rotary_fraction, paged, new_kv):
    index = 7 * Sk + 3 * Sq + int(10 * rotary_fraction) + 2 * paged + new_kv
    for num_splits in (0, 1):
        run_case(Sq, Sk, rotary_fraction, paged, new_kv, num_splits,
                 mask=MASKS[index % len(MASKS)], leftpad=index % 3 == 1,
                 batch_idx=not paged and index % 2 == 0, interleaved=index % 2 == 1,
                 B=2, page=(16, 48)[index % 2], seed=index, starved=index % 4 == 0,
                 backend="torch")


@pytest.mark.gpu
@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_batch_heads_past_the_grid_limit(num_splits):
    """4100 x 16 = 65600 (batch, KV head) pairs: more than CUDA's 65535 on grid axes 1
    and 2, so the decode and merge kernels keep (batch * KV head, rows) on axis 0."""
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    B, Sk, Hk, D = 4100, 100, 16, 64
    q = torch.randn(B, 1, 2 * Hk, D, generator=gen, device=DEVICE).to(torch.bfloat16)
    k, v = (torch.randn(B, Sk, Hk, D, generator=gen, device=DEVICE).to(torch.bfloat16)
            for _ in range(2))
    seqlens = torch.randint(1, Sk + 1, (B,), generator=gen, device=DEVICE, dtype=torch.int32)
    out, lse = flashtile.flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens,
                                                 num_splits=num_splits, return_softmax_lse=True)
    for b in (0, 1, 2047, 4098, 4099):  # a full float64 reference would take ~50 GB
        n = int(seqlens[b])
        qb = q[b:b + 1]
        kb, vb = (x[b:b + 1, :n].repeat_interleave(2, dim=2) for x in (k, v))  # GQA 2
        ref, ref_lse = attention_ref(qb, kb, vb)
        base, base_lse = attention_ref(qb, kb, vb, upcast=False)
        assert_rule(out[b:b + 1], ref, base, D, f"out[{b}]")
        assert_lse(lse[b:b + 1], ref_lse, base_lse)
