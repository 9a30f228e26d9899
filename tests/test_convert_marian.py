"""OPUS-MT's form in HuggingFace (MarianMTModel) in and out, against transformers itself: a tiny
random Marian model with two SentencePiece models trained on Multi30k German and English and
their shared vocabulary, imported as a run directory, computes HF's logits, tokenizes as
MarianTokenizer does, decodes greedily to HF generate's tokens, and survives export and
re-import; variants we cannot compute are refused in one line naming the field."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from aiayn.api import import_pretrained, load
from aiayn.cli import main
from aiayn.data.corpus import multi30k_files, read_lines
from aiayn.generate.options import DecodeOptions
from aiayn.generate.search import decode
from tests.hf_folders import assert_import_refused, edited

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ODD = ["naïve café", "Straße 東京 🤖", "  leading  spaces", "é" * 30, "\u200b zero width",
       ">>fra<< ein Hund", "Ωmega ≠ omega", ""]  # fmt: skip


@pytest.fixture(scope="module")
def sentences(data_dir) -> dict[str, list[str]]:
    return {lang: read_lines(multi30k_files("val", lang, data_dir))[:100] for lang in ("de", "en")}


def train_spm(lines: list[str], vocab_size: int) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", minloglevel=2, character_coverage=1.0,
    )  # fmt: skip
    return model.getvalue()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, data_dir) -> Path:
    """MarianMTModel (2+2 layers, d_model 32, swish) with source.spm (de), target.spm (en) and
    vocab.json as OPUS-MT ships them: </s> 0, <unk> 1, ..., <pad> last."""
    folder = tmp_path_factory.mktemp("hf-marian")
    train = {lang: read_lines(multi30k_files("train", lang, data_dir))[:3000]
             for lang in ("de", "en")}  # fmt: skip
    vocab = {"</s>": 0, "<unk>": 1}
    for name, lang in (("source.spm", "de"), ("target.spm", "en")):
        proto = train_spm(train[lang], 250)
        (folder / name).write_bytes(proto)
        processor = spm.SentencePieceProcessor(model_proto=proto)
        for i in range(processor.get_piece_size()):
            piece = processor.id_to_piece(i)
            if not processor.is_control(i) and not processor.is_unknown(i):
                vocab.setdefault(piece, len(vocab))
    vocab[">>fra<<"] = len(vocab)
    vocab["<pad>"] = pad = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = transformers.MarianTokenizer(
        source_spm=str(folder / "source.spm"), target_spm=str(folder / "target.spm"),
        vocab=str(folder / "vocab.json"), source_lang="de", target_lang="en",
    )  # fmt: skip
    tokenizer.save_pretrained(folder)
    config = transformers.MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        activation_function="swish", scale_embedding=True, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad, bad_words_ids=[[pad]], forced_eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config)
    with torch.no_grad():  # LayerNorms away from (1, 0) and a logits bias, so a slip shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, pad] = 0.0  # as OPUS-MT's converted models have it
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(hf_folder, tmp_path_factory) -> Path:
    return import_pretrained("hf-marian", hf_folder, tmp_path_factory.mktemp("imported") / "run")


def hf_model(folder: Path):
    return transformers.MarianMTModel.from_pretrained(folder).eval()


def batch(ids: list[list[int]], pad: int, start: int | None = None):
    rows = [([start] if start is not None else []) + x for x in ids]
    longest = max(map(len, rows))
    tokens = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
    valid = torch.tensor([[True] * len(r) + [False] * (longest - len(r)) for r in rows])
    return tokens, valid


def test_imported_logits_equal_transformers_on_real_padded_sentences(hf_folder, run_dir,
                                                                     sentences):  # fmt: skip
    ours = load(run_dir)
    vocabulary, eos, pad = ours.tokenizer, ours.config.model.eos_id, ours.config.model.pad_id
    src, src_valid = batch([vocabulary.encode(s)[:30] + [eos] for s in sentences["de"][:12]], pad)
    tgt_in, tgt_valid = batch([vocabulary.encode(t, target=True)[:30]
                               for t in sentences["en"][:12]], pad, start=pad)  # fmt: skip
    assert not src_valid.all() and not tgt_valid.all()
    with torch.no_grad():
        expected = hf_model(hf_folder)(
            input_ids=src, attention_mask=src_valid.long(), decoder_input_ids=tgt_in,
            decoder_attention_mask=tgt_valid.long(),
        ).logits  # fmt: skip
        got = ours.model(src, tgt_in, src_valid, tgt_valid)
    torch.testing.assert_close(got[tgt_valid], expected[tgt_valid], atol=1e-4, rtol=1e-4)
    model = ours.config.model
    assert (model.sinusoid_layout, model.activation, model.output_bias) == ("halves", "silu", True)
    assert (model.eos_id, model.bos_id) == (0, model.pad_id)


def test_tokenization_equals_marian_tokenizer(hf_folder, run_dir, sentences):
    reference = transformers.MarianTokenizer.from_pretrained(hf_folder)
    ours = load(run_dir).tokenizer
    eos = ours.eos_id
    sources, targets = sentences["de"] + ODD, sentences["en"] + ODD
    assert [ours.encode(s) + [eos] for s in sources] == reference(sources)["input_ids"]
    assert [x + [eos] for x in ours.encode_batch(targets, target=True)] == reference(
        text_target=targets)["input_ids"]  # fmt: skip
    ids = reference(text_target=sentences["en"])["input_ids"]
    assert [ours.decode(x) for x in ids] == reference.batch_decode(ids, skip_special_tokens=True)


def test_greedy_translation_gives_the_tokens_of_transformers_generate(hf_folder, run_dir,
                                                                       sentences, capsys,
                                                                       monkeypatch):  # fmt: skip
    ours = load(run_dir)
    eos, pad = ours.config.model.eos_id, ours.config.model.pad_id
    texts = [s for s in sentences["de"] if len(ours.tokenizer.encode(s)) < 40][:6]  # positions
    src, src_valid = batch([ours.tokenizer.encode(s) + [eos] for s in texts], pad)
    with torch.no_grad():
        generated = hf_model(hf_folder).generate(
            src, attention_mask=src_valid.long(), do_sample=False, num_beams=1, max_new_tokens=12
        )  # fmt: skip
    expected = [[t for t in row[1:].tolist() if t not in (eos, pad)] for row in generated]
    options = DecodeOptions(beam=1, max_len_a=0.0, max_len_b=12)
    got = decode(ours.model, src, src_valid, options)
    assert [[t for t in row if t != eos] for row in got] == expected
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("\n".join(texts).encode())))
    main(["translate", str(run_dir), "--beam", "1", "--max-len-a", "0", "--max-len-b", "12"])
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert lines == [ours.tokenizer.decode(x) for x in expected]


def test_export_then_transformers_then_reimport_keep_the_logits(run_dir, tmp_path, sentences):
    ours = load(run_dir)
    main(["export", str(run_dir), "--format", "hf-marian", "-o", str(tmp_path / "hf")])
    eos, pad = ours.config.model.eos_id, ours.config.model.pad_id
    src, src_valid = batch([ours.tokenizer.encode(s) + [eos] for s in sentences["de"][:4]], pad)
    tgt_in, _ = batch([ours.tokenizer.encode(t, target=True) for t in sentences["en"][:4]], pad,
                      start=pad)  # fmt: skip
    with torch.no_grad():
        mine = ours.model(src, tgt_in, src_valid)
        theirs = hf_model(tmp_path / "hf")(input_ids=src, attention_mask=src_valid.long(),
                                           decoder_input_ids=tgt_in).logits  # fmt: skip
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)
    again = load(import_pretrained("hf-marian", tmp_path / "hf", tmp_path / "again"))
    for (name, a), b in zip(ours.model.state_dict().items(), again.model.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert again.tokenizer.encode_batch(sentences["de"]) == ours.tokenizer.encode_batch(
        sentences["de"])  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"normalize_before": True}, "normalize_before True: this Marian variant"),
        ({"normalize_embedding": True}, "normalize_embedding True: this Marian variant"),
        ({"share_encoder_decoder_embeddings": False}, "share_encoder_decoder_embeddings False"),
        ({"decoder_vocab_size": 7}, "decoder_vocab_size 7: differs from vocab_size"),
        ({"activation_function": "tanh"}, "activation_function 'tanh': not supported"),
        ({"model_type": "bart"}, "model_type 'bart': not a Marian model"),
        ({"eos_token_id": 5}, "eos_token_id 5: the vocabulary says 0"),
    ],
)
def test_variants_we_cannot_compute_are_refused_in_one_line(changes, message, hf_folder, tmp_path,
                                                            capsys):  # fmt: skip
    folder = edited(hf_folder, tmp_path, **changes)
    expected = f"{folder / 'config.json'}: {message}"
    assert_import_refused("hf-marian", folder, tmp_path / "run", expected, capsys)


def test_missing_vocabulary_files_are_named(hf_folder, tmp_path):
    folder = edited(hf_folder, tmp_path)
    (folder / "target.spm").unlink()
    with pytest.raises(FileNotFoundError, match="no target.spm"):
        import_pretrained("hf-marian", folder, tmp_path / "run")
    (folder / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="no vocab.json and no \\*.vocab.yml"):
        import_pretrained("hf-marian", folder, tmp_path / "run")


def fine_tune_config(run_dir: Path, tmp_path: Path, data_dir: Path, **train):
    """Fine-tuning on 300 Multi30k training pairs the tiny model has never seen."""
    from aiayn.config import config_from_dict

    files = []
    for split, rows in (("train", slice(5000, 5300)), ("valid", slice(5300, 5320))):
        for lang in ("de", "en"):
            lines = read_lines(multi30k_files("train", lang, data_dir))[rows]
            (tmp_path / f"{split}.{lang}").write_text("\n".join(lines) + "\n")
            files.append(str(tmp_path / f"{split}.{lang}"))
    raw = {
        "model": {"dropout": 0.0},  # the rest comes from the imported run
        "data": dict(dataset="parallel", train_files=files[:2], valid_files=files[2:],
                     max_tokens=1024, max_len=60),
        "train": dict(init_from=str(run_dir), schedule="constant", warmup_steps=0, eval_every=0,
                      save_every=0, bleu=False, device="cpu", precision="fp32", log_every=1,
                      **train),
    }  # fmt: skip
    return config_from_dict(raw)


def test_fine_tuning_starts_from_the_imported_weights_and_lowers_the_loss(run_dir, tmp_path,
                                                                           data_dir):  # fmt: skip
    from aiayn.train.log import read_metrics
    from aiayn.train.loop import train

    imported = load(run_dir)
    still = fine_tune_config(run_dir, tmp_path, data_dir, max_steps=1, lr=0.0)
    train(still, run_dir=tmp_path / "lr0", progress=False)
    after = load(tmp_path / "lr0", "last")  # a zero learning rate: the weights it started from
    assert after.config.model == imported.config.model.replace(dropout=0.0)
    for (name, a), b in zip(imported.model.state_dict().items(),
                            after.model.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    tuned = fine_tune_config(run_dir, tmp_path, data_dir, max_steps=30, lr=3e-3)
    train(tuned, run_dir=tmp_path / "tuned", progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "tuned") if r["kind"] == "train"]
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    assert load(tmp_path / "tuned").translate(["Ein Hund."], beam=2)[0] != ""


def test_fine_tuning_refuses_a_model_that_does_not_fit(run_dir, tmp_path, data_dir, capsys):
    from aiayn.config import save_config

    config = fine_tune_config(run_dir, tmp_path, data_dir, max_steps=1)
    save_config(config.replace(model=config.model.replace(d_model=64, n_heads=4)),
                tmp_path / "c.yaml")  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "ft"), "--init-from",
              str(run_dir), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"model.d_model is 64, but train.init_from {run_dir} has 32" in err


def test_the_shipped_fine_tuning_config_takes_the_imported_model(run_dir):
    from aiayn.config import load_config

    path = Path(__file__).resolve().parent.parent / "configs" / "finetune-opus-mt-multi30k.yaml"
    config = load_config(path, [f"train.init_from={run_dir}", "data.max_len=60"])
    assert config.model == load(run_dir).config.model.replace(dropout=0.1)
    assert config.data.dataset == "multi30k" and config.train.lr == 5e-5


# Marian-NMT's own names for the tensors of one layer, and transformers' (from the issue's list)
NPZ_NAMES = {f"self_{w}{x}": f"self_attn.{x if x != 'o' else 'out'}_proj.{n}"
             for w, n in (("W", "weight"), ("b", "bias")) for x in "qkvo"}  # fmt: skip
NPZ_NAMES |= {k.replace("self_", "context_"): v.replace("self_attn", "encoder_attn")
              for k, v in NPZ_NAMES.items()}  # fmt: skip
NPZ_NAMES |= {
    "self_Wo_ln_scale": "self_attn_layer_norm.weight",
    "self_Wo_ln_bias": "self_attn_layer_norm.bias",
    "context_Wo_ln_scale": "encoder_attn_layer_norm.weight",
    "context_Wo_ln_bias": "encoder_attn_layer_norm.bias",
    "ffn_W1": "fc1.weight", "ffn_b1": "fc1.bias", "ffn_W2": "fc2.weight", "ffn_b2": "fc2.bias",
    "ffn_ffn_ln_scale": "final_layer_norm.weight", "ffn_ffn_ln_bias": "final_layer_norm.bias",
}  # fmt: skip
MARIAN_OPTIONS = {
    "type": "transformer", "dim-emb": 32, "enc-depth": 2, "dec-depth": 2, "transformer-heads": 4,
    "transformer-dim-ffn": 64, "transformer-ffn-activation": "swish",
    "transformer-preprocess": "", "transformer-postprocess": "dan",
    "transformer-postprocess-emb": "d", "tied-embeddings-all": True,
    "transformer-train-position-embeddings": False, "right-left": False,
}  # fmt: skip


def write_npz(hf_folder: Path, folder: Path, **option_changes) -> Path:
    """The tiny model as OPUS-MT's release files: one .npz with Marian's names, (in, out)
    matrices, (1, n) rows and its options as 0-terminated YAML bytes; a .vocab.yml without
    <pad>; the two SentencePiece models."""
    import numpy as np
    import safetensors.torch
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    hf = safetensors.torch.load_file(hf_folder / "model.safetensors")
    pad = json.loads((hf_folder / "config.json").read_text())["pad_token_id"]
    arrays = {"Wemb": hf["model.shared.weight"][:pad].numpy(),
              "decoder_ff_logit_out_b": hf["final_logits_bias"][:, :pad].numpy()}  # fmt: skip
    for side in ("encoder", "decoder"):
        for i in range(2):
            for marian, theirs in NPZ_NAMES.items():
                name = f"model.{side}.layers.{i}.{theirs}"
                if name in hf:
                    tensor = hf[name]
                    value = tensor.T if tensor.dim() == 2 else tensor.reshape(1, -1)
                    arrays[f"{side}_l{i + 1}_{marian}"] = value.numpy()
    options = yaml.safe_dump({**MARIAN_OPTIONS, **option_changes}).encode() + b"\0"
    arrays["special:model.yml"] = np.frombuffer(options, dtype=np.int8)
    np.savez(folder / "opus.spm32k-spm32k.transformer.model1.npz", **arrays)
    vocab = json.loads((hf_folder / "vocab.json").read_text())
    vocab.pop("<pad>")
    lines = [f"{json.dumps(piece, ensure_ascii=False)}: {i}" for piece, i in vocab.items()]
    (folder / "opus.spm32k-spm32k.vocab.yml").write_text("\n".join(lines) + "\n")
    for name in ("source.spm", "target.spm"):
        shutil.copy(hf_folder / name, folder / name)
    return folder


def test_marian_release_files_import_to_the_same_model_as_transformers(
    hf_folder, run_dir, tmp_path, sentences
):
    folder = write_npz(hf_folder, tmp_path / "npz")
    main(["import", "marian", str(folder), "-o", str(tmp_path / "run")])
    npz, hf = load(tmp_path / "run"), load(run_dir)
    assert npz.config.model == hf.config.model.replace(max_len=512)
    assert npz.tokenizer.vocab == hf.tokenizer.vocab  # <pad> appended as transformers does
    eos, pad = hf.config.model.eos_id, hf.config.model.pad_id
    src, src_valid = batch([hf.tokenizer.encode(s)[:30] + [eos] for s in sentences["de"][:8]], pad)
    tgt_in, _ = batch([hf.tokenizer.encode(t, target=True)[:30] for t in sentences["en"][:8]],
                      pad, start=pad)  # fmt: skip
    with torch.no_grad():
        expected = hf_model(hf_folder)(input_ids=src, attention_mask=src_valid.long(),
                                       decoder_input_ids=tgt_in).logits  # fmt: skip
        got = npz.model(src, tgt_in, src_valid)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transformer-preprocess": "n"}, "transformer-preprocess 'n' is not supported"),
        ({"tied-embeddings-all": False}, "tied-embeddings-all False is not supported"),
        ({"transformer-ffn-activation": "tanh"}, "transformer-ffn-activation 'tanh' is not"),
    ],
)
def test_marian_options_we_cannot_compute_are_refused(changes, message, hf_folder, tmp_path,
                                                      capsys):  # fmt: skip
    folder = write_npz(hf_folder, tmp_path / "npz", **changes)
    expected = f"{next(folder.glob('*.npz'))}: special:model.yml: {message}"
    assert_import_refused("marian", folder, tmp_path / "run", expected, capsys)


def test_an_imported_model_is_served_like_a_trained_one(run_dir):
    pytest.importorskip("fastapi", reason="the server needs the serve extra")
    import httpx

    from aiayn.serve import load_models
    from aiayn.serve.settings import ServeSettings
    from tests.serve.conftest import serving

    models = load_models({"opus": run_dir})
    texts = [t for t in ODD if t.strip()]
    with serving(models, ServeSettings()) as server, httpx.Client(base_url=server.url) as client:
        listed = client.get("/v1/models").json()["models"]
        assert [(m["name"], m["kind"]) for m in listed] == [("opus", "translation")]
        reply = client.post("/v1/translate", json={"texts": texts, "beam": 2}).json()
        assert reply["translations"] == models["opus"].translate(texts, beam=2)
        body = {"text": "ein Hund", "beam": 1, "attention": True}
        maps = client.post("/v1/translate", json=body).json()["attention"]
    assert maps["source_tokens"][-1] == "</s>" and len(maps["cross"][0][0][0]) == len(
        maps["source_tokens"]
    )
