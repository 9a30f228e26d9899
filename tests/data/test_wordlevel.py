"""The word-level vocabulary of PyTorch's word language model example (white-space words, a
newline is <eos>, WikiText's <unk> is the unknown id), WikiText-2 as a named data set, and a
word-level language model trained and scored with the example's protocol."""

from __future__ import annotations

import json

import pytest

from aiayn.config import config_from_dict
from aiayn.data.corpus import wikitext2_text
from aiayn.data.splits import read_split
from aiayn.data.tokenizer import EOS_ID, UNK_ID, load_tokenizer
from aiayn.data.wordlevel import WORD_LEVEL_FILE, WordTokenizer

WIKI = " = Valkyria Chronicles = \n \n The game 's <unk> began in 2010 . \n"


def test_words_newlines_and_unk_as_the_pytorch_example_reads_them(tmp_path):
    tokenizer = WordTokenizer.train(WIKI.split("\n"), path=tmp_path / WORD_LEVEL_FILE)
    ids = tokenizer.encode(WIKI)
    # the example: for each line, line.split() + ['<eos>']; empty lines give a lone <eos>
    expected = [w for line in WIKI.split("\n")[:-1] for w in line.split() + ["<eos>"]]
    assert [tokenizer.id_to_piece(i) for i in ids] == expected
    assert ids.count(EOS_ID) == 3 and tokenizer.encode("<unk> zebra") == [UNK_ID, UNK_ID]
    assert tokenizer.encode("The game") == [tokenizer.encode(w)[0] for w in ("The", "game")]
    assert tokenizer.decode(tokenizer.encode("The game\n's")) == "The game 's"
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, WordTokenizer) and loaded.encode(WIKI) == ids
    vocab = json.loads((tmp_path / WORD_LEVEL_FILE).read_text())["model"]["vocab"]
    assert [vocab[t] for t in ("<pad>", "<unk>", "<s>", "<eos>")] == [0, 1, 2, 3]


def test_the_most_frequent_words_are_kept_first():
    tokenizer = WordTokenizer.train(["b a b c b a"], vocab_size=6)
    assert tokenizer.vocab_size == 6 and tokenizer.pieces("b a c") == ["b", "a", "<unk>"]


def test_a_vocabulary_file_that_is_not_one_is_named(tmp_path):
    (tmp_path / WORD_LEVEL_FILE).write_text("{}")
    with pytest.raises(ValueError, match=f"{WORD_LEVEL_FILE}: not a word-level tokenizers file"):
        load_tokenizer(tmp_path)


def test_wikitext2_splits_are_read_where_the_user_put_them(tmp_path):
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    (folder / "valid.txt").write_text(WIKI)
    assert read_split("wikitext2", "valid", data_dir=tmp_path) == WIKI
    with pytest.raises(FileNotFoundError, match="train.txt: not found; put WikiText-2's train.txt"):
        wikitext2_text("train", tmp_path)
    with pytest.raises(ValueError, match="has splits train, valid, test; got 'val'"):
        read_split("wikitext2", "val", data_dir=tmp_path)


@pytest.mark.integration
def test_the_real_validation_file_has_the_published_token_counts(data_dir):
    text = wikitext2_text("valid", data_dir)
    ids = WordTokenizer.train(text.split("\n")).encode(text)
    assert len(ids) == 217_646 and ids.count(UNK_ID) == 11_718  # data README, with <eos>


def test_a_word_level_language_model_trains_and_is_scored_as_the_example(tmp_path, capsys):
    import aiayn
    from aiayn.cli import main
    from aiayn.train.loop import train

    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    lines = [" ".join(f"w{(i * 7 + j) % 23}" for j in range(8)) for i in range(300)]
    for split, part in (("train", lines[:240]), ("valid", lines[240:270]), ("test", lines[270:])):
        (folder / f"{split}.txt").write_text("\n".join(part) + "\n")
    config = config_from_dict({
        "model": dict(kind="decoder-only", n_encoder_layers=0, n_decoder_layers=1, d_model=16,
                      n_heads=2, d_ff=32, max_len=12, dropout=0.0),
        "data": dict(dataset="wikitext2", data_dir=str(tmp_path), tokenizer_type="word",
                     vocab_size=1000, seq_len=12, max_tokens=120),
        "train": dict(max_steps=60, schedule="constant", lr=1e-2, warmup_steps=5, eval_every=0,
                      save_every=0, device="cpu", precision="fp32", label_smoothing=0.0),
    })  # fmt: skip
    train(config, run_dir=tmp_path / "run", progress=False)
    model = aiayn.load(tmp_path / "run", "last")
    assert isinstance(model.tokenizer, WordTokenizer) and model.tokenizer.vocab_size == 27
    result = model.evaluate("test", columns=2, context=12).perplexity
    assert result.columns == 2 and result.perplexity < 5  # 24 words in a fixed cycle: learned
    assert result.n_tokens == 2 * ((30 * 9) // 2 - 1)  # 30 lines of 8 words + <eos>
    main(["evaluate", str(tmp_path / "run"), "--checkpoint", "last", "--split", "test",
          "--columns", "2", "--context", "12"])  # fmt: skip
    out = capsys.readouterr().out
    assert f"perplexity {result.perplexity:.3f}" in out and "cut into 2 columns" in out
