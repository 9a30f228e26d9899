"""Scaled dot-product attention (Eq. 1) and multi-head attention against torch's references."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from aiayn.model.attention import MultiHeadAttention, attention, keeping_weights
from aiayn.model.masks import causal_mask, padding_mask


def random_qkv(batch=3, heads=4, q_len=5, k_len=7, d_head=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, d_head, generator=g)
    k = torch.randn(batch, heads, k_len, d_head, generator=g)
    v = torch.randn(batch, heads, k_len, d_head, generator=g)
    return q, k, v


def masks(batch=3, heads=4, q_len=5, k_len=7):
    valid = torch.ones(batch, k_len, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 1:] = False
    arbitrary = torch.rand(batch, heads, q_len, k_len, generator=torch.Generator().manual_seed(1))
    return {
        "none": None,
        "padding": padding_mask(valid),
        "causal": causal_mask(q_len, k_len),
        "causal+padding": causal_mask(q_len, k_len) & padding_mask(valid),
        "arbitrary": arbitrary > 0.5,
    }


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", list(masks()))
def test_reference_path_equals_fused_path(name):
    q, k, v = random_qkv()
    mask = masks()[name]
    reference, weights = attention(q, k, v, mask, need_weights=True)
    fused, none = attention(q, k, v, mask, need_weights=False)
    assert none is None
    assert relative_error(fused, reference) < 1e-5
    assert weights.shape == (3, 4, 5, 7)
    if mask is not None:
        assert (weights[~mask.expand_as(weights)] == 0).all()


def test_weights_are_a_softmax_over_allowed_keys():
    q, k, v = random_qkv()
    mask = masks()["causal+padding"]
    out, weights = attention(q, k, v, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5))
    expected = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5 + (~mask) * -1e9, dim=-1) @ v
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("need_weights", [True, False])
def test_fully_masked_rows_give_zeros_not_nan(need_weights):
    q, k, v = random_qkv()
    q.requires_grad_(True)
    mask = torch.ones(3, 1, 5, 7, dtype=torch.bool)
    mask[0, :, 2] = False  # query 2 of sentence 0 may attend to nothing
    mask[1] = False  # sentence 1 attends to nothing at all
    out, _ = attention(q, k, v, mask, need_weights=need_weights)
    assert torch.isfinite(out).all()
    assert (out[0, :, 2] == 0).all() and (out[1] == 0).all()
    assert (out[0, :, 1] != 0).any()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.ones(3, 4, 5, 7), "dtype torch.float32"),
        (torch.ones(3, 7, dtype=torch.bool), "shape (3, 7)"),
        (torch.ones(3, 4, 5, 6, dtype=torch.bool), "shape (3, 4, 5, 6)"),
    ],
)
def test_mask_errors_state_the_convention(bad, message):
    q, k, v = random_qkv()
    with pytest.raises(ValueError, match="broadcastable to") as error:
        attention(q, k, v, bad)
    assert message in str(error.value)
    assert "(3, 4, 5, 7)" in str(error.value) and "True = may attend" in str(error.value)


def copy_into_torch_mha(ours: MultiHeadAttention, d_model: int, n_heads: int):
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("cross", [False, True])
def test_multi_head_attention_equals_torch(cross):
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, 4).eval()
    ref = copy_into_torch_mha(ours, 32, 4)
    x = torch.randn(2, 5, 32)
    memory = torch.randn(2, 6, 32) if cross else x
    valid = torch.ones(2, memory.size(1), dtype=torch.bool)
    valid[1, 3:] = False
    out, weights = ours(x, memory if cross else None, padding_mask(valid), need_weights=True)
    ref_out, ref_weights = ref(
        x, memory, memory, key_padding_mask=~valid, average_attn_weights=False
    )
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)


def test_kept_weights_for_attention_maps():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    mha.keep_weights = True
    x = torch.randn(1, 4, 16)
    mha(x, mask=causal_mask(4))
    assert mha.weights.shape == (1, 2, 4, 4)
    assert (mha.weights[0, :, 0, 1:] == 0).all()


@pytest.mark.parametrize("native_bf16", [True, False])
def test_fast_path_is_sdpa_in_fp32_and_in_bf16_the_faster_one_for_the_cpu(monkeypatch, native_bf16):
    module = importlib.import_module("aiayn.model.attention")  # the package exports a function
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: native_bf16)
    calls = []
    sdpa = module.F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].dtype)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(module.F, "scaled_dot_product_attention", counting_sdpa)
    q, k, v = random_qkv()
    mask = masks()["causal+padding"]
    fp32, _ = attention(q, k, v, mask, need_weights=False)
    bf16, weights = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, need_weights=False)
    # native bf16: the formula below 256 keys; emulated bf16: the fused kernel
    assert calls == ([torch.float32] if native_bf16 else [torch.float32, torch.bfloat16])
    assert weights is None and bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("native_bf16", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_decoding_step_takes_sdpa_for_few_rows_and_the_formula_for_many(
    monkeypatch, native_bf16, dtype
):
    """One query per row without gradients (a cached decoding step): SDPA while (batch x heads)
    rows x keys are few, the formula beyond (4,096 in fp32, 1,280 in native bf16), the same
    output either way; emulated bf16 always takes SDPA."""
    module = importlib.import_module("aiayn.model.attention")
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: native_bf16)
    calls = []
    sdpa = module.F.scaled_dot_product_attention
    monkeypatch.setattr(
        module.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw)
    )
    limit = 4096 if dtype == torch.float32 else 1280
    for batch, expect_sdpa in ((limit // (4 * 16) - 1, True), (limit // (4 * 16), False)):
        q, k, v = (t.to(dtype) for t in random_qkv(batch=batch, heads=4, q_len=1, k_len=16))
        valid = torch.ones(batch, 16, dtype=torch.bool)
        valid[0, 9:] = False  # a padded source, as in encoder-decoder attention
        mask = padding_mask(valid)
        calls.clear()
        with torch.no_grad():
            out, _ = attention(q, k, v, mask, need_weights=False)
        assert bool(calls) == (expect_sdpa or (dtype == torch.bfloat16 and not native_bf16))
        reference, _ = attention(q.float(), k.float(), v.float(), mask, need_weights=True)
        tolerance = 1e-5 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(out.float(), reference, atol=tolerance, rtol=tolerance)


def test_keeping_weights_keeps_them_inside_and_restores_the_modules_after(monkeypatch):
    modules = [MultiHeadAttention(16, 2).eval(), MultiHeadAttention(16, 2).eval()]
    modules[1].keep_weights = True  # already on: stays on afterwards
    x = torch.randn(2, 5, 16)
    with pytest.raises(RuntimeError, match="stop"), keeping_weights(modules):
        for module in modules:
            _, expected = module(x, need_weights=True)
            module(x)
            torch.testing.assert_close(module.weights, expected)
        raise RuntimeError("stop")
    assert [m.keep_weights for m in modules] == [False, True]
    assert all(m.weights is None for m in modules)


def test_on_the_cpu_sdpa_backends_are_left_as_they_are():
    from aiayn.model.attention import no_cudnn_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with no_cudnn_attention(torch.randn(1, 1, 2, 4)):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_a_smaller_key_size_projects_queries_and_keys_to_d_k_and_scales_by_its_root():
    """Table 3 (B): d_k below d_model / h, values keep d_v = d_model / h."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, d_k=3).eval()
    assert mha.q_proj.weight.shape == mha.k_proj.weight.shape == (12, 32)
    assert mha.v_proj.weight.shape == mha.out_proj.weight.shape == (32, 32)
    x = torch.randn(2, 5, 32)
    out, weights = mha(x, need_weights=True)
    q = mha.q_proj(x).view(2, 5, 4, 3).transpose(1, 2)
    k = mha.k_proj(x).view(2, 5, 4, 3).transpose(1, 2)
    v = mha.v_proj(x).view(2, 5, 4, 8).transpose(1, 2)
    expected_weights = (q @ k.transpose(-2, -1) / 3**0.5).softmax(-1)
    expected = mha.out_proj((expected_weights @ v).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, expected)
    fused, _ = mha(x)  # the SDPA path with d_k != d_v
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_compiles_as_one_graph(dtype):
    """torch.compile traces multi-head attention whole (fullgraph raises at any graph break):
    the CPU's native-bf16 check that picks the bf16 path is a constant to it, not file reads
    that would split the graph in every layer. The eager backend: tracing only, no kernels."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=16, n_heads=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 16, dtype=dtype)
    mha = mha.to(dtype)
    compiled = torch.compile(mha, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected, _ = mha(x, mask=causal_mask(5))
        out, _ = compiled(x, mask=causal_mask(5))
    torch.testing.assert_close(out, expected)
