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


def edited(hf_folder: Path, tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


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
    with pytest.raises(SystemExit) as exit_info:
        main(["import", "hf-marian", str(folder), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"aiayn import: error: {folder / 'config.json'}: {message}")
    assert not (tmp_path / "run").exists()


def test_missing_vocabulary_files_are_named(hf_folder, tmp_path):
    folder = edited(hf_folder, tmp_path)
    (folder / "target.spm").unlink()
    with pytest.raises(FileNotFoundError, match="no target.spm"):
        import_pretrained("hf-marian", folder, tmp_path / "run")
    (folder / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="no vocab.json and no \\*.vocab.yml"):
        import_pretrained("hf-marian", folder, tmp_path / "run")
