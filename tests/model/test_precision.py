"""Inference precisions: bf16 and int8 stay close to fp32 on every model variant, int8 weights
survive the trip through plain tensors exactly, and the conversions refuse what they cannot do."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from aiayn.model.precision import (
    inference_precision,
    int8_tensors,
    load_int8_tensors,
    to_inference_precision,
)
from aiayn.model.transformer import build_model
from tests.model.conftest import VARIANTS, VOCAB

pytestmark = pytest.mark.usefixtures("one_thread")


def logits(model, tokens):
    if model.config.kind == "encoder-decoder":
        return model(tokens, tokens[:, :7]).float()
    return model(tokens).float()


def relative_error(x, reference):
    return float((x - reference).norm() / reference.norm())


@pytest.fixture
def tokens():
    return torch.randint(4, VOCAB, (3, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.03), ("int8", 0.05)])
def test_reduced_precision_logits_stay_near_fp32(model, tokens, precision, tolerance):
    with torch.no_grad():
        reference = logits(model, tokens)
        to_inference_precision(model, precision)
        assert inference_precision(model) == precision
        reduced = logits(model, tokens)
    # Not equal (else the conversion did nothing), but within a few percent.
    assert 0 < relative_error(reduced, reference) < tolerance


def test_int8_converts_every_linear_map_and_keeps_embeddings_fp32(model):
    linear_maps = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    to_inference_precision(model, "int8")
    modules = dict(model.named_modules())
    assert linear_maps and all(isinstance(modules[n], DynamicInt8Linear) for n in linear_maps)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_int8_tensors_round_trip_exactly(model, tokens):
    to_inference_precision(model, "int8")
    tensors = int8_tensors(model)
    weights = [k for k in tensors if k.endswith(".weight_int8")]
    assert weights and all(tensors[k].dtype == torch.int8 for k in weights)
    assert all(tensors[k.replace("_int8", "_scale")].dtype == torch.float32 for k in weights)
    assert not any("_packed_params" in k for k in tensors)
    # Tied embeddings are stored once; every tensor is its own (safetensors needs that).
    pointers = [t.untyped_storage().data_ptr() for t in tensors.values()]
    assert len(set(pointers)) == len(pointers)

    torch.manual_seed(123)  # other random weights, replaced by the loaded ones
    fresh = to_inference_precision(build_model(model.config).eval(), "int8")
    with torch.no_grad():
        assert not torch.equal(logits(fresh, tokens), logits(model, tokens))
        load_int8_tensors(fresh, tensors, source="weights.safetensors")
        assert torch.equal(logits(fresh, tokens), logits(model, tokens))


def test_load_int8_tensors_names_what_does_not_fit():
    config = VARIANTS["post-norm"]
    tensors = int8_tensors(to_inference_precision(build_model(config).eval(), "int8"))
    other = to_inference_precision(build_model(config.replace(d_ff=48)).eval(), "int8")
    with pytest.raises(ValueError, match=r"w\.safetensors does not fit.*linear1\.weight_int8"):
        load_int8_tensors(other, tensors, source="w.safetensors")
    del tensors["out_proj.weight_scale"]
    fresh = to_inference_precision(build_model(config).eval(), "int8")
    with pytest.raises(ValueError, match=r"missing \['out_proj\.weight_scale'\]"):
        load_int8_tensors(fresh, tensors, source="w.safetensors")


def test_conversions_refuse_what_they_cannot_do():
    model = build_model(VARIANTS["post-norm"]).eval()
    with pytest.raises(ValueError, match="unknown precision 'int4'; choose from fp32, bf16, int8"):
        to_inference_precision(model, "int4")
    to_inference_precision(model, "bf16")
    with pytest.raises(ValueError, match="already bf16"):
        to_inference_precision(model, "int8")
    meta = build_model(VARIANTS["post-norm"]).to("meta")
    with pytest.raises(ValueError, match="int8 decoding runs on the CPU only, not meta"):
        to_inference_precision(meta, "int8")


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch):
    monkeypatch.setattr("aiayn.model.precision.cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16 .* --quantize int8 is the fast choice"):
        to_inference_precision(build_model(VARIANTS["post-norm"]).eval(), "bf16")


def test_a_torch_without_torch_ao_costs_int8_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # import fails, as if removed
    model = build_model(VARIANTS["post-norm"]).eval()
    with pytest.raises(ValueError, match=r"int8 needs torch.ao, which torch .* lacks"):
        to_inference_precision(model, "int8")
    assert inference_precision(model) == "fp32"
    assert inference_precision(to_inference_precision(model, "bf16")) == "bf16"
