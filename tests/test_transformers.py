"""flashtile as a Hugging Face transformers attention implementation (CPU, fp32).

Tiny randomly initialised models (nothing downloaded), each built twice with the
same weights: attn_implementation="flashtile" and "eager" (the reference).
"""

import copy
import socket

import pytest
import torch

transformers = pytest.importorskip("transformers")

import flashtile  # noqa: E402
from flashtile import autograd as autograd_layer  # noqa: E402
from flashtile.integrations import transformers as ft_hf  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    # every layer sliding, window 8 < the sequence lengths below
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=8),
    # alternating sliding (window 8) / full layers, attention logit softcapping
    "gemma2": lambda: Gemma2Config(**COMMON, head_dim=16, sliding_window=8,
                                   attn_logit_softcapping=5.0, final_logit_softcapping=30.0,
                                   query_pre_attn_scalar=16),
    # grouped-query attention, 8 query heads on 2 KV heads
    "qwen2": lambda: Qwen2Config(**{**COMMON, "num_attention_heads": 8}),
}


@pytest.fixture(scope="module", autouse=True)
def _registered():
    assert ft_hf.register() == "flashtile"
    with flashtile.use_backend("torch"):
        yield


def _pair(name):
    """(flashtile model, eager model) with the same random weights, in eval mode."""
    config = CONFIGS[name]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="flashtile")
    ref = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="eager")
    ref.load_state_dict(model.state_dict())
    assert model.config._attn_implementation == "flashtile"
    assert ref.config._attn_implementation == "eager"
    return model.eval(), ref.eval()


def _left_padded(batch=3, seqlen=24, pads=(0, 7, 13), seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seqlen), generator=gen)
    mask = torch.ones_like(ids)
    for b, p in enumerate(pads):
        mask[b, :p] = 0
        ids[b, :p] = COMMON["pad_token_id"]
    return ids, mask


class _FlashtileCalls:
    """Records flashtile's attention forward calls (eager Function and custom op share
    `flashtile.autograd._forward_impl`): True for a varlen call, False for a dense one."""

    def __init__(self):
        self.varlen = []

    def __enter__(self):
        self._real = autograd_layer._forward_impl

        def spy(*args, **kwargs):
            self.varlen.append(args[3] is not None)  # cu_seqlens_q
            return self._real(*args, **kwargs)

        autograd_layer._forward_impl = spy
        return self

    def __exit__(self, *exc):
        autograd_layer._forward_impl = self._real


def _max_rel_err(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_register_is_idempotent_and_offline(monkeypatch):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    def no_network(*args, **kwargs):
        raise AssertionError("flashtile's transformers integration tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for _ in range(3):
        assert ft_hf.register() == "flashtile"
    assert AttentionInterface._global_mapping["flashtile"] is ft_hf.flashtile_attention_forward
    assert AttentionMaskInterface._global_mapping["flashtile"] is flash_attention_mask
    model = AutoModelForCausalLM.from_config(CONFIGS["llama"](), attn_implementation="flashtile")
    assert model.config._attn_implementation == "flashtile"
    model.set_attn_implementation("eager")
    model.set_attn_implementation("flashtile")
    assert model.config._attn_implementation == "flashtile"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_padded_logits_match_eager(name):
    model, ref = _pair(name)
    ids, mask = _left_padded()
    calls = _FlashtileCalls()
    with torch.no_grad():
        with calls:
            out = model(input_ids=ids, attention_mask=mask).logits
        expected = ref(input_ids=ids, attention_mask=mask).logits
    # the padded batch is unpadded into varlen calls, one per layer
    assert calls.varlen == [True] * COMMON["num_hidden_layers"]
    valid = mask.bool()
    assert _max_rel_err(out[valid], expected[valid]) <= 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_generate_matches_eager(name):
    model, ref = _pair(name)
    ids, mask = _left_padded(batch=2, seqlen=12, pads=(0, 5), seed=2)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32,
                  do_sample=False, use_cache=True)
    with torch.no_grad():
        out = model.generate(**kwargs)
        expected = ref.generate(**kwargs)
    assert out.shape == (2, 12 + 32)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_step_matches_eager(name):
    model, ref = _pair(name)
    ids, mask = _left_padded(seed=3)
    # Position t predicts token t + 1: keep only predictions made at valid positions
    # (a padded position's output is arbitrary: 0 for flashtile, uniform for eager).
    prev_valid = torch.nn.functional.pad(mask[:, :-1], (1, 0))
    labels = ids.masked_fill(prev_valid == 0, -100)
    losses = []
    for m in (model, ref):
        m.train()
        loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    ref_grads = dict(ref.named_parameters())
    scale = max(p.grad.abs().max().item() for p in ref_grads.values())
    for pname, p in model.named_parameters():
        g, g_ref = p.grad, ref_grads[pname].grad
        assert g is not None and torch.isfinite(g).all(), pname
        # relative to the largest gradient entry: tiny gradients carry fp32 noise
        assert (g - g_ref).abs().max().item() <= 1e-4 * scale, pname


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_compile_fullgraph_dense(name):
    # Dense path (no padding mask, batch > 1): one graph through flashtile's
    # custom ops, forward and backward.
    model, _ = _pair(name)
    ids = torch.randint(3, VOCAB, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    try:
        out = torch.compile(model, fullgraph=True, backend=backend)(input_ids=ids).logits
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        out.sum().backward()
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    assert str(graphs[0].code).count("flashtile.attention_forward") == COMMON["num_hidden_layers"]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_compile_batch_one_breaks_only_in_transformers():
    # With batch size 1, transformers checks position_ids for packed sequences
    # (`_is_packed_sequence` in `_flash_attention_forward`), a branch on tensor
    # data: graph breaks that are transformers', none is flashtile's.
    model, _ = _pair("llama")
    ids = torch.randint(3, VOCAB, (1, 20), generator=torch.Generator().manual_seed(5))
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(model)(input_ids=ids)
    finally:
        torch._dynamo.reset()
    assert explanation.graph_break_count > 0
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1]
        assert frame.filename.endswith("modeling_flash_attention_utils.py"), reason
        assert frame.name == "_flash_attention_forward", reason


def test_loader_taken_over_by_another_flash_implementation(monkeypatch):
    # transformers' flash loader caches one implementation; if another one is
    # loaded, flashtile models put flashtile back at call time, and register()
    # does so for constructing new models.
    from transformers import modeling_flash_attention_utils as fa

    model, ref = _pair("llama")
    for slot in ft_hf._LOADER_GLOBALS:
        monkeypatch.setattr(fa, slot, None)
    monkeypatch.setattr(fa, "_loaded_implementation", "some-other-flash")
    ids, mask = _left_padded(seed=6)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert fa._loaded_implementation == "flashtile"
    assert _max_rel_err(out[mask.bool()], expected[mask.bool()]) <= 1e-4
    monkeypatch.setattr(fa, "_loaded_implementation", "some-other-flash")
    ft_hf.register()
    AutoModelForCausalLM.from_config(CONFIGS["llama"](), attn_implementation="flashtile")


def test_rejects_what_flashtile_cannot_do():
    model, _ = _pair("llama")
    attn = model.model.layers[0].self_attn
    q = torch.randn(1, 4, 5, 16)
    kv = torch.randn(1, 2, 5, 16)
    with pytest.raises(NotImplementedError, match="s_aux"):
        ft_hf.flashtile_attention_forward(attn, q, kv, kv, None, s_aux=torch.zeros(4))
    with pytest.raises(ValueError, match="4D"):
        ft_hf.flashtile_attention_forward(attn, q, kv, kv, torch.zeros(1, 1, 5, 5))
    out, weights = ft_hf.flashtile_attention_forward(attn, q, kv, kv, None, scaling=0.25)
    assert out.shape == (1, 5, 4, 16) and weights is None
    expected = flashtile.flash_attn_func(q.transpose(1, 2), kv.transpose(1, 2),
                                         kv.transpose(1, 2), softmax_scale=0.25, causal=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gpu_bf16_logits_and_compile(name):
    """On the GPU (Triton kernels), bf16 logits of left-padded batches meet the 2x rule
    against an fp32 eager reference, and fullgraph compile runs the dense path."""
    model, ref = _pair(name)
    ids, mask = _left_padded()
    ids, mask = ids.cuda(), mask.cuda()
    valid = mask.bool()
    with flashtile.use_backend("triton"), torch.no_grad():
        truth = ref.cuda().float()(ids, attention_mask=mask).logits[valid]
        base = ref.bfloat16()(ids, attention_mask=mask).logits[valid].float()
        ours = model.cuda().bfloat16()(ids, attention_mask=mask).logits[valid].float()
        err, base_err = (ours - truth).abs().max().item(), (base - truth).abs().max().item()
        assert err <= 2 * base_err + 1e-3, (err, base_err)
        dense = ids[:1].repeat(2, 1)
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(dense).logits.float(),
                                   model(dense).logits.float(), atol=2e-2, rtol=2e-2)
