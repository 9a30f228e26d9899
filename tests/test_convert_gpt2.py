"""GPT-2 in and out, against transformers itself: a tiny random GPT2LMHeadModel (with a byte-level
BPE trained on Tiny Shakespeare) imported as a run directory computes HF's logits, tokenizes as
GPT2TokenizerFast does, decodes greedily to HF generate's tokens, and survives export and
re-import; what cannot be converted is refused in one line naming the file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from aiayn.api import import_pretrained, load
from aiayn.cli import main
from aiayn.data.bytelevel import END_OF_TEXT, ByteLevelTokenizer
from aiayn.data.corpus import multi30k_files, read_lines, tinyshakespeare_text
from aiayn.generate.options import DecodeOptions
from aiayn.generate.sampling import generate
from tests.hf_folders import assert_import_refused, edited

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytestmark = pytest.mark.usefixtures("one_thread")

ODD = ["naïve café", "Straße 東京 🤖", "tabs\tand\nnewlines", "  leading spaces", "<|endoftext|>x",
       "é" * 40, "\u200b zero width", "Ωmega ≠ omega", ""]  # fmt: skip


@pytest.fixture(scope="module")
def sentences(data_dir) -> list[str]:
    """200 real sentences: Multi30k German and English, Tiny Shakespeare lines."""
    de = read_lines(multi30k_files("val", "de", data_dir))[:70]
    en = read_lines(multi30k_files("val", "en", data_dir))[:70]
    lines = [x for x in tinyshakespeare_text(data_dir).split("\n") if x.strip()][:60]
    return de + en + lines


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, data_dir) -> Path:
    """A GPT2LMHeadModel of 2 layers, d_model 32, and its byte-level BPE (400 tokens), saved as
    transformers saves them (config.json, model.safetensors, tokenizer.json, vocab.json,
    merges.txt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("hf-gpt2")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tinyshakespeare_text(data_dir).split("\n"), trainer)
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    hf_tokenizer = transformers.GPT2TokenizerFast(
        tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
    )  # fmt: skip
    hf_tokenizer.save_pretrained(folder)
    backend.model.save(str(folder))  # GPT-2's original pair too: vocab.json, merges.txt
    end = hf_tokenizer.eos_token_id
    config = transformers.GPT2Config(
        vocab_size=len(hf_tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=end, eos_token_id=end,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # LayerNorms away from (1, 0), so a swapped one shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(hf_folder, tmp_path_factory) -> Path:
    return import_pretrained("hf-gpt2", hf_folder, tmp_path_factory.mktemp("imported") / "run")


def hf_model(folder: Path):
    return transformers.GPT2LMHeadModel.from_pretrained(folder).eval()


def padded_batch(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [tokenizer.encode(t)[:40] or [tokenizer.eos_id] for t in texts]
    longest = max(map(len, ids))
    tokens = torch.tensor([x + [tokenizer.eos_id] * (longest - len(x)) for x in ids])
    valid = torch.tensor([[True] * len(x) + [False] * (longest - len(x)) for x in ids])
    return tokens, valid


def test_imported_logits_equal_transformers_on_real_padded_sentences(hf_folder, run_dir,
                                                                     sentences):  # fmt: skip
    ours = load(run_dir)
    tokens, valid = padded_batch(ours.tokenizer, sentences[60:76])
    assert not valid.all()  # some rows are padded
    with torch.no_grad():
        expected = hf_model(hf_folder)(tokens, attention_mask=valid.long()).logits
        got = ours.model(tokens, valid)
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-4, rtol=1e-4)
    assert ours.config.model.activation == "gelu_tanh" and ours.config.model.norm_first


def test_tokenization_equals_gpt2_tokenizer_fast(hf_folder, run_dir, sentences, tmp_path):
    reference = transformers.GPT2TokenizerFast.from_pretrained(hf_folder)
    ours = load(run_dir).tokenizer
    texts = sentences + ODD
    expected = [reference(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ours.encode_batch(texts) == expected
    assert [ours.encode(t) for t in texts] == expected
    assert [ours.decode(ids) for ids in expected[:200]] == texts[:200]  # exact round trip
    # from GPT-2's two original files alone (no tokenizer.json)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(hf_folder / name, tmp_path / name)
    assert ByteLevelTokenizer.from_files(tmp_path).encode_batch(texts) == expected


def test_greedy_generation_gives_the_tokens_of_transformers_generate(hf_folder, run_dir,
                                                                      capsys):  # fmt: skip
    ours = load(run_dir)
    prompt = ours.tokenizer.encode("ROMEO: What light")
    with torch.no_grad():
        expected = hf_model(hf_folder).generate(
            torch.tensor([prompt]), do_sample=False, num_beams=1, max_new_tokens=30,
            pad_token_id=ours.tokenizer.eos_id,
        )[0, len(prompt):].tolist()  # fmt: skip
    options = DecodeOptions(temperature=0.0, max_new_tokens=30)
    got = generate(ours.model, torch.tensor(prompt), options).tolist()
    assert got == expected
    main(["generate", str(run_dir), "--prompt", "ROMEO: What light", "--temperature", "0",
          "--max-new-tokens", "30"])  # fmt: skip
    end = expected.index(ours.tokenizer.eos_id) if ours.tokenizer.eos_id in expected else None
    assert capsys.readouterr().out == "ROMEO: What light" + ours.tokenizer.decode(
        expected[:end]) + "\n"  # fmt: skip


def test_export_then_transformers_then_reimport_keep_the_logits(run_dir, tmp_path, sentences):
    ours = load(run_dir)
    main(["export", str(run_dir), "--format", "hf-gpt2", "-o", str(tmp_path / "hf")])
    tokens, valid = padded_batch(ours.tokenizer, sentences[:8])
    with torch.no_grad():
        mine = ours.model(tokens, valid)
        theirs = hf_model(tmp_path / "hf")(tokens, attention_mask=valid.long()).logits
    torch.testing.assert_close(theirs[valid], mine[valid], atol=1e-4, rtol=1e-4)
    reference = transformers.GPT2TokenizerFast.from_pretrained(tmp_path / "hf")
    assert reference("Straße 東京")["input_ids"] == ours.tokenizer.encode("Straße 東京")
    again = load(import_pretrained("hf-gpt2", tmp_path / "hf", tmp_path / "again"))
    for (name, a), b in zip(ours.model.state_dict().items(), again.model.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name


def test_the_imported_run_works_with_every_command(run_dir, tmp_path, capsys, sentences):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(sentences[140:160]) + "\n")
    main(["evaluate", str(run_dir), "--files", str(text)])
    assert "perplexity" in capsys.readouterr().out.lower()
    main(["attention", str(run_dir), "--source", "ROMEO: What", "-o", str(tmp_path / "maps"),
          "--layers", "0", "--heads", "0"])  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run_dir)])  # an imported run names no data of its own
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "data.valid_files is empty" in err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"activation_function": "gelu_fast"}, "activation_function 'gelu_fast': not supported"),
        ({"model_type": "gpt_neo"}, "model_type 'gpt_neo': not a GPT-2 model"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx True"),
        ({"vocab_size": 100}, "vocab_size 100: the tokenizer has 400 tokens, more than the model"),
    ],
)
def test_what_cannot_be_converted_is_refused_in_one_line(changes, message, hf_folder, tmp_path,
                                                         capsys):  # fmt: skip
    folder = edited(hf_folder, tmp_path, **changes)
    expected = f"{folder / 'config.json'}: {message}"
    assert_import_refused("hf-gpt2", folder, tmp_path / "run", expected, capsys)


def test_missing_files_and_an_occupied_run_dir_are_named(hf_folder, run_dir, tmp_path, capsys):
    folder = edited(hf_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        import_pretrained("hf-gpt2", folder, tmp_path / "run")
    for name in ("tokenizer.json", "merges.txt"):
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json and no merges.txt"):
        import_pretrained("hf-gpt2", folder, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds files; import into a new folder"):
        import_pretrained("hf-gpt2", hf_folder, run_dir)


def test_a_model_gpt2_cannot_express_is_not_exported(tmp_path):
    from tests.tiny_runs import tiny_run

    lm = tiny_run(tmp_path, translation=False, steps=2)  # scales its embeddings, uses ReLU
    with pytest.raises(ValueError, match=r"cannot export as hf-gpt2: scale_embeddings=True "
                       r"\(GPT-2: False\)"):  # fmt: skip
        load(lm).export(tmp_path / "hf", format="hf-gpt2")


def test_fine_tuning_an_imported_gpt2_lowers_the_loss_on_new_text(run_dir, tmp_path, data_dir):
    from aiayn.config import config_from_dict
    from aiayn.train.log import read_metrics
    from aiayn.train.loop import train

    text = tinyshakespeare_text(data_dir)
    (tmp_path / "train.txt").write_text(text[500_000:530_000])
    (tmp_path / "valid.txt").write_text(text[530_000:533_000])
    raw = {
        "data": dict(dataset="text", train_files=[str(tmp_path / "train.txt")],
                     valid_files=[str(tmp_path / "valid.txt")], seq_len=32, max_tokens=512),
        "train": dict(init_from=str(run_dir), max_steps=30, schedule="constant", lr=3e-3,
                      warmup_steps=0, eval_every=0, save_every=0, device="cpu",
                      precision="fp32", log_every=1),
    }  # fmt: skip
    train(config_from_dict(raw), run_dir=tmp_path / "tuned", progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "tuned") if r["kind"] == "train"]
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    tuned = load(tmp_path / "tuned")
    assert tuned.config.model == load(run_dir).config.model
    assert isinstance(tuned.tokenizer, ByteLevelTokenizer)


def test_pytorch_model_bin_loads_with_weights_only_and_a_planted_payload_is_refused(
    hf_folder, run_dir, tmp_path
):
    folder = edited(hf_folder, tmp_path)
    (folder / "model.safetensors").unlink()
    hf_model(hf_folder).save_pretrained(tmp_path / "bin", safe_serialization=False)
    shutil.copy(tmp_path / "bin" / "pytorch_model.bin", folder / "pytorch_model.bin")
    from_bin = load(import_pretrained("hf-gpt2", folder, tmp_path / "run"))
    for (name, a), b in zip(load(run_dir).model.state_dict().items(),
                            from_bin.model.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b), name

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"transformer.wte.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: not a plain tensor file \\(it holds "
                       "Python objects, which would run code when loaded; refused\\)"):  # fmt: skip
        import_pretrained("hf-gpt2", folder, tmp_path / "run2")


def test_a_gpt2_shaped_model_of_ours_goes_out_and_back_in(tmp_path, sentences):
    from aiayn.train.loop import train
    from tests.train.tiny_data import tiny_lm_config, write_text_corpus

    shape = {"norm_first": True, "positions": "learned", "activation": "gelu_tanh",
             "scale_embeddings": False, "init": "gpt2"}  # fmt: skip
    config = tiny_lm_config(write_text_corpus(tmp_path), model=shape, train={"max_steps": 10})
    train(config, run_dir=tmp_path / "ours", progress=False)
    ours = load(tmp_path / "ours")
    main(["export", str(tmp_path / "ours"), "--format", "hf-gpt2", "-o", str(tmp_path / "hf")])
    main(["import", "hf-gpt2", str(tmp_path / "hf"), "-o", str(tmp_path / "back")])
    back = load(tmp_path / "back")
    tokens, valid = padded_batch(ours.tokenizer, [s[:30] for s in sentences[140:148]])
    with torch.no_grad():
        expected = ours.model(tokens, valid)
        torch.testing.assert_close(back.model(tokens, valid)[valid], expected[valid])
        theirs = hf_model(tmp_path / "hf")(tokens, attention_mask=valid.long()).logits
    torch.testing.assert_close(theirs[valid], expected[valid], atol=1e-4, rtol=1e-4)
    prompt = "der hund"
    assert back.generate(prompt, temperature=0, max_new_tokens=12) == ours.generate(
        prompt, temperature=0, max_new_tokens=12)  # fmt: skip


def test_an_imported_model_streams_whole_characters(run_dir):
    # byte-level pieces may split a character: the stream holds it back until it is whole
    pytest.importorskip("fastapi", reason="the server needs the serve extra")
    import httpx

    from aiayn.serve import load_models
    from aiayn.serve.settings import ServeSettings
    from tests.serve.conftest import server_sent_events, serving

    models = load_models({"gpt2": run_dir})
    body = {"prompt": "Straße 東京 🤖", "max_new_tokens": 40, "seed": 1, "temperature": 1.5}
    expected = models["gpt2"].generate(body["prompt"], max_new_tokens=40, seed=1, temperature=1.5)
    with serving(models, ServeSettings()) as server, httpx.Client(base_url=server.url) as client:
        with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
            events = server_sent_events(response.read())
    pieces = [data["text"] for name, data in events if name == "token"]
    assert events[-1] == ("done", {"model": "gpt2", "text": expected})
    assert "".join(pieces) == expected and len(pieces) > 5
