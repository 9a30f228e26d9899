"""On a CUDA GPU: the model computes what it computes on the CPU, training learns in every
precision the GPU offers, a run resumes where it stopped, and a model trained on the GPU
translates the same on the GPU and on the CPU. Skipped without CUDA (CI has none); run on a GPU
machine with `python -m pytest tests/train/test_cuda.py` (docs/benchmarks.md records where).
"""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

import aiayn
from aiayn.machine import describe_machine, resolve_precision
from aiayn.model import build_model
from aiayn.model.config import ModelConfig
from aiayn.train.checkpoint import latest_checkpoint, load_model
from aiayn.train.log import read_metrics
from aiayn.train.loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DEVICE = "cuda"


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 matrix multiplies in fp32 (no TF32), so CPU and GPU agree to float rounding."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("kind", ["encoder-decoder", "decoder-only"])
def test_the_gpu_computes_the_cpu_logits(kind):
    torch.manual_seed(0)
    layers = dict(n_encoder_layers=2) if kind == "encoder-decoder" else dict(n_encoder_layers=0)
    config = ModelConfig(kind=kind, vocab_size=300, d_model=64, n_heads=4, d_ff=128,
                         n_decoder_layers=2, max_len=64, **layers)  # fmt: skip
    model = build_model(config).eval()
    src = torch.randint(4, 300, (3, 11))
    src[0, 8:] = config.pad_id  # padding exercises the masks
    tgt = torch.randint(4, 300, (3, 9))
    with torch.no_grad():
        args = (src, tgt) if kind == "encoder-decoder" else (tgt,)
        on_cpu = model(*args)
        on_gpu = model.to(DEVICE)(*(a.to(DEVICE) for a in args))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "auto"])
def test_training_on_the_gpu_learns_in_every_precision(make_config, tmp_path, precision):
    config = make_config(train={"max_steps": 60, "device": DEVICE, "precision": precision})
    result = train(config, run_dir=tmp_path, progress=False)
    assert result.step == 60
    curve = losses(tmp_path)
    assert all(torch.isfinite(torch.tensor(curve)))
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5
    resolved = resolve_precision(precision, describe_machine(DEVICE))[0]
    machine = [r for r in read_metrics(tmp_path) if r["kind"] == "machine"][-1]
    assert machine["precision"] == resolved and torch.cuda.get_device_name() in str(machine)
    model, _ = load_model(tmp_path, "last")  # saved from the GPU, read on the CPU
    assert next(model.parameters()).device.type == "cpu"


def test_a_gpu_run_resumes_to_the_weights_of_the_whole_run(make_config, tmp_path):
    """20 + 20 updates against 40 in one go, on the GPU; equal to float tolerance, not bit for
    bit: CUDA's backward kernels sum in an order of their choosing (atomics)."""
    config = make_config(train={"max_steps": 40, "save_every": 10, "device": DEVICE})
    train(config, run_dir=tmp_path / "whole", progress=False)
    half = make_config(train={"max_steps": 20, "save_every": 10, "device": DEVICE})
    train(half, run_dir=tmp_path / "halves", progress=False)
    train(config, run_dir=tmp_path / "halves", resume=True, progress=False)
    assert latest_checkpoint(tmp_path / "halves").name == "checkpoint-00000040"
    file = "checkpoint-00000040/model.safetensors"
    whole = safetensors.torch.load_file(tmp_path / "whole" / file)
    halves = safetensors.torch.load_file(tmp_path / "halves" / file)
    assert whole.keys() == halves.keys()
    for name in whole:
        torch.testing.assert_close(halves[name], whole[name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses(tmp_path / "halves"), losses(tmp_path / "whole"),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    from tests.train.tiny_data import tiny_config, write_corpus

    folder = tmp_path_factory.mktemp("gpu-run")
    (folder / "corpus").mkdir()
    config = tiny_config(write_corpus(folder / "corpus"),
                         model={"dropout": 0.0},
                         train={"max_steps": 150, "device": DEVICE})  # fmt: skip
    train(config, run_dir=folder / "run", progress=False)
    sources = (folder / "corpus" / "valid.de").read_text().splitlines()
    return folder / "run", sources


def test_a_gpu_model_translates_the_same_on_gpu_and_cpu_with_and_without_cache(gpu_run):
    run_dir, sources = gpu_run
    on_cpu = aiayn.load(run_dir, "last", device="cpu")
    on_gpu = aiayn.load(run_dir, "last", device=DEVICE)
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    for beam in (1, 4):
        expected = on_cpu.translate(sources, beam=beam)
        assert on_gpu.translate(sources, beam=beam) == expected
        assert on_gpu.translate(sources, beam=beam, use_cache=False) == expected
    assert any(expected), "the tiny model should translate something"


def test_bf16_decodes_on_the_gpu_and_int8_is_refused_there(gpu_run):
    run_dir, sources = gpu_run
    fp32 = aiayn.load(run_dir, "last", device=DEVICE).translate(sources)
    bf16 = aiayn.load(run_dir, "last", device=DEVICE, precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    same = sum(a == b for a, b in zip(bf16.translate(sources), fp32, strict=True))
    assert same >= len(sources) // 2  # bf16 rounds; most greedy outputs survive it
    with pytest.raises(ValueError, match="int8"):
        aiayn.load(run_dir, "last", device=DEVICE, precision="int8")


def test_attention_on_the_gpu_keeps_sdpa_off_cudnn_and_computes_the_formula(monkeypatch):
    """cuDNN's SDPA kernel builds a plan per new shape (docs/benchmarks.md, H200): aiayn's fused
    path runs with it switched off, and only for the call."""
    from aiayn.model import attention as module

    seen, fused = [], module.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return fused(*args, **kwargs)

    monkeypatch.setattr(module.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 16, device=DEVICE, dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool, device=DEVICE)
    mask[1, ..., 3:] = False
    out, _ = module.attention(q, k, v, mask, need_weights=False)
    formula, _ = module.attention(q, k, v, mask, need_weights=True)
    assert seen == [False] and torch.backends.cuda.cudnn_sdp_enabled()
    torch.testing.assert_close(out.float(), formula.float(), rtol=2e-2, atol=2e-2)
