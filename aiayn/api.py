"""The one place text meets the model: `load(run_dir)` returns a `TextModel` that translates,
generates, evaluates and draws attention maps. The command line and the server sit on it.

    import aiayn
    model = aiayn.load("runs/multi30k")
    model.translate(["Ein Hund läuft im Schnee."], beam=4)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from aiayn.config import DataConfig, RunConfig, save_config
from aiayn.data.corpus import OnBadInput, read_parallel, read_text
from aiayn.data.splits import TEST_SPLIT, read_split
from aiayn.data.tokenizer import TextTokenizer, Tokenizer, load_tokenizer
from aiayn.evaluate.attention_maps import AttentionMaps, attention_weights
from aiayn.evaluate.metrics import CorpusScore, bleu, chrf
from aiayn.evaluate.perplexity import (
    Perplexity,
    column_perplexity,
    sliding_window_perplexity,
)
from aiayn.files import atomic_write
from aiayn.generate.compiled import CompiledStep
from aiayn.generate.options import DecodeOptions
from aiayn.generate.sampling import generate as generate_ids
from aiayn.model.precision import inference_precision
from aiayn.model.transformer import LanguageModel, Transformer, build_model
from aiayn.train.checkpoint import (
    CONFIG_FILE,
    IMPORTED_DIR,
    INT8_DIR,
    TrainerState,
    load_model,
    resolve_weights,
    save_checkpoint,
    save_int8,
)
from aiayn.translate import DEFAULT_MAX_TOKENS, encode_sources, fit_to_positions, translate_texts


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> TextModel:
    """A run's model, tokenizer and decoding settings, ready to use.

    Args:
        run_dir: A training run's folder (config.yaml, tokenizer.model, checkpoints).
        checkpoint: `best`, `last`, `averaged`, `int8` (what `aiayn.api.quantize` wrote), or
            a checkpoint folder / .safetensors file.
        device: Where to run (`cpu`, `cuda`, `cuda:1`, or `auto`).
        precision: Decode in `fp32`, `bf16` or `int8` (`aiayn.model.precision`); None: as the
            weights are stored (fp32, or int8 for the `int8` checkpoint).
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_model(run_dir, checkpoint, device=device, precision=precision)
    tokenizer = load_tokenizer(run_dir)
    if tokenizer.vocab_size > config.model.vocab_size:
        raise ValueError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} pieces, the model only "
            f"{config.model.vocab_size}"
        )
    return TextModel(model, tokenizer, config)


def quantize(
    run_dir: str | Path, checkpoint: str = "best", out_dir: str | Path | None = None
) -> Path:
    """Quantize a run's fp32 weights to int8 (`aiayn.model.precision`) and save them as
    safetensors in `out_dir` (default: RUN_DIR/int8, which `load(run_dir, "int8")` reads).
    Returns the file written."""
    run_dir = Path(run_dir)
    source = resolve_weights(run_dir, checkpoint)
    model, _ = load_model(run_dir, checkpoint, precision="int8")
    out_dir = run_dir / INT8_DIR if out_dir is None else Path(out_dir)
    return save_int8(model, out_dir, source=os.path.relpath(source, run_dir))


IMPORT_FORMATS = ("hf-marian", "marian", "hf-gpt2")
EXPORT_FORMATS = ("hf-marian", "hf-gpt2", "onnx")


def import_pretrained(format: str, source: str | Path, out_dir: str | Path) -> Path:
    """Convert a pretrained model into an ordinary run directory: `config.yaml`, the tokenizer,
    and `checkpoint-imported/model.safetensors` (what `best` loads), so that `load`, every
    command and fine-tuning work on it unchanged.

    Args:
        format: `hf-marian` (a local transformers MarianMTModel folder: OPUS-MT), `marian`
            (Marian-NMT's own release files: *.npz, *.vocab.yml, source.spm, target.spm) or
            `hf-gpt2` (a GPT2LMHeadModel folder).
        source: The folder to read.
        out_dir: The run directory to create (it must not hold anything yet).

    Raises:
        ValueError: An unknown format, an existing `out_dir`, or a model we cannot express
            (the message names the file and field).
        FileNotFoundError: A file the format needs is missing.
    """
    if format not in IMPORT_FORMATS:
        raise ValueError(f"unknown import format {format!r}; choose from {IMPORT_FORMATS}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already holds files; import into a new folder")
    if format in ("hf-marian", "marian"):
        from aiayn.convert.marian import import_hf_marian, import_marian_npz

        read = import_hf_marian if format == "hf-marian" else import_marian_npz
        model, tokenizer = read(source)
        data = DataConfig(dataset="parallel", max_len=min(256, model.config.max_len))
    else:
        from aiayn.convert.gpt2 import import_hf_gpt2

        model, tokenizer = import_hf_gpt2(source)
        data = DataConfig(dataset="text", seq_len=min(256, model.config.max_len))
    config = RunConfig(model=model.config, data=data)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_to(out_dir)
    save_checkpoint(out_dir / IMPORTED_DIR, model, TrainerState())
    save_config(config, out_dir / CONFIG_FILE)  # last: a folder with it is a complete run
    return out_dir


@dataclass
class Evaluation:
    """Scores of a model on one test set, with everything needed to reproduce them."""

    name: str
    """What was scored: split or files."""
    sentences: int
    seconds: float
    precision: str = "fp32"
    """What the model decoded in (`aiayn.model.precision`)."""
    bleu: CorpusScore | None = None
    """sacreBLEU on detokenised, cased output against the raw references."""
    chrf: CorpusScore | None = None
    bleu_lowercase_13a: CorpusScore | None = None
    """BLEU of lowercased text, tokenised by sacrebleu's 13a tokeniser: near, not equal to,
    the lowercased Moses-tokenised BLEU most Multi30k papers report."""
    perplexity: Perplexity | None = None
    hypotheses: list[str] | None = None

    def __str__(self) -> str:
        lines = [
            f"{self.name}: {self.sentences} segments in {self.seconds:.1f} s, {self.precision}"
        ]
        if self.bleu is not None:
            lines.append(f"BLEU  {self.bleu.score:6.2f}  {self.bleu.signature}")
        if self.chrf is not None:
            lines.append(f"chrF2 {self.chrf.score:6.2f}  {self.chrf.signature}")
        if self.bleu_lowercase_13a is not None:
            lines.append(
                f"BLEU  {self.bleu_lowercase_13a.score:6.2f}  "
                f"{self.bleu_lowercase_13a.signature}  (lowercased, 13a-tokenised; for "
                "comparison with tokenised lowercased Multi30k figures, not identical to them)"
            )
        if self.perplexity is not None:
            lines.append(str(self.perplexity))
        return "\n".join(lines)


class TextModel:
    """A trained model with its tokenizer and decoding settings: text in, text out.

    Decoding options left as None take the run's `decode` section (`DecodeOptions`).
    """

    def __init__(
        self,
        model: Transformer | LanguageModel,
        tokenizer: TextTokenizer,
        config: RunConfig,
        compiled: CompiledStep | None = None,
    ) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device = next(model.parameters()).device
        self.compiled = compiled

    def with_decode(self, **changes: object) -> TextModel:
        """The same model and tokenizer with some `DecodeOptions` fields changed (None: kept)."""
        decode = self.decode_options(**changes)
        config = self.config.replace(decode=decode)
        return TextModel(self.model, self.tokenizer, config, self.compiled)

    def compile(self, *, capacity: int | None = None, autotune: bool = True) -> TextModel:
        """Compile the decoder step (`aiayn.generate.compiled.CompiledStep`) for `translate` and
        `evaluate`, in place; returns self. It pays for many sentences, few at a time (a
        server, batch 1: ~3x the eager steps at the Multi30k size, docs/benchmarks.md), after
        tens of seconds of compiling on the first sentences; fp32 or bf16 only."""
        self._need(translation=True)
        self.compiled = CompiledStep(self.model, capacity=capacity, autotune=autotune)
        return self

    def export(self, out_dir: str | Path, *, format: str = "hf-marian") -> Path:
        """Write the model in another library's layout: `hf-marian` (transformers'
        MarianMTModel, which CTranslate2's converter reads; aiayn/convert/marian.py) for a
        translation model, `hf-gpt2` (GPT2LMHeadModel; aiayn/convert/gpt2.py) for a language
        model, `onnx` (encoder and decoder step with its cache; aiayn/convert/onnx.py) for a
        translation model."""
        if format not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {format!r}; choose from {EXPORT_FORMATS}")
        if self.precision != "fp32":
            raise ValueError(
                f"export writes fp32 weights; load the model in fp32, not {self.precision}"
            )
        if format == "onnx":
            from aiayn.convert.onnx import export_onnx

            self._need(translation=True)
            return export_onnx(self.model, self.tokenizer, out_dir)
        if format == "hf-gpt2":
            from aiayn.convert.gpt2 import export_hf_gpt2

            self._need(translation=False)
            return export_hf_gpt2(self.model, self.tokenizer, out_dir)
        from aiayn.convert.marian import export_hf_marian
        from aiayn.data.marian_vocab import MarianVocabulary

        self._need(translation=True)
        if isinstance(self.tokenizer, MarianVocabulary):
            return export_hf_marian(self.model, out_dir, vocabulary=self.tokenizer)
        if not isinstance(self.tokenizer, Tokenizer):
            raise ValueError("hf-marian export needs a SentencePiece or Marian vocabulary")
        proto = self.tokenizer.processor.serialized_model_proto()
        return export_hf_marian(self.model, out_dir, tokenizer_model=proto)

    @property
    def is_translation(self) -> bool:
        return self.config.model.kind == "encoder-decoder"

    @property
    def parameters(self) -> int:
        """The trained model's parameter count (tied weights once), whatever the precision."""
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(self.config.model).parameters())

    def summary(self) -> str:
        """One line: what the model does, its size, precision and device."""
        data = self.config.data
        if self.is_translation:
            languages = f" {data.src}->{data.tgt}" if data.src and data.tgt else ""
            kind = f"translation{languages}"
        else:
            kind = "language model"
        compiled = ", decoder step compiled" if self.compiled is not None else ""
        where = f"{self.precision} on {self.device}{compiled}"
        return f"{kind}, {self.parameters:,} parameters, {where}"

    @property
    def precision(self) -> str:
        """What the model decodes in: `fp32`, `bf16` or `int8` (`aiayn.model.precision`)."""
        return inference_precision(self.model)

    def translate(
        self,
        sources: Sequence[str],
        *,
        beam: int | None = None,
        alpha: float | None = None,
        coverage: float | None = None,
        max_len_a: float | None = None,
        max_len_b: int | None = None,
        min_len: int | None = None,
        long_input: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        progress: bool = False,
        use_cache: bool = True,
    ) -> list[str]:
        """Translate sentences; one output per input, in input order.

        Sentences are sorted by length and decoded in batches of about `max_tokens` (source
        tokens times beam size); an empty (or blank) line gives an empty output. `beam=1` is
        greedy decoding. A sentence longer than the model's positions is cut with a warning
        (`long_input="truncate"`) or refused (`"error"`). `use_cache=False` recomputes every
        prefix at every step (the reference the key/value cache is measured against).
        """
        self._need(translation=True)
        if isinstance(sources, str):
            raise TypeError("translate takes a list of sentences; wrap one sentence in a list")
        options = self.decode_options(
            beam=beam,
            alpha=alpha,
            coverage=coverage,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            min_len=min_len,
            long_input=long_input,
        )
        return translate_texts(
            self.model,
            self.tokenizer,
            sources,
            options,
            max_tokens=max_tokens,
            use_cache=use_cache,
            progress=progress,
            compiled=self.compiled if use_cache else None,
        )

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        long_input: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """Continue `prompt` with a language model; returns the continuation only.

        Temperature 0 is greedy. Stops at EOS or after `max_new_tokens`; past the model's
        positions it conditions on the last `max_len` tokens. A prompt longer than the
        positions keeps its end (with a warning) or is refused (`long_input="error"`).
        An empty prompt starts from BOS. `on_text` receives the continuation piece by piece
        as it is generated (text held back while a character's bytes are incomplete, and
        given at the end if they never complete); the pieces add up to the returned text
        unless detokenising a later token changes earlier text.
        An exception raised in `on_text` stops generation and propagates.
        """
        self._need(translation=False)
        options = self.decode_options(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            long_input=long_input,
        )
        max_len = self.config.model.max_len  # a prompt may fill every position (no EOS)
        ids = fit_to_positions(
            self.tokenizer.encode(prompt),
            max_len,
            options.long_input,
            "prompt",
            positions=max_len,
            keep_end=True,
        )
        prompt_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        eos = self.config.model.eos_id
        before = self.tokenizer.decode(ids)
        step, sent = None, ""
        if on_text is not None:
            produced: list[int] = []

            def step(rows: torch.Tensor, chosen: torch.Tensor) -> None:
                nonlocal sent
                if int(chosen[0]) == eos:
                    return
                produced.append(int(chosen[0]))
                text = self._continuation(ids, before, produced)
                if text.startswith(sent) and len(text) > len(sent) and text[-1] != "\ufffd":
                    on_text(text[len(sent) :])
                    sent = text

        new = generate_ids(self.model, prompt_ids, options, on_step=step).tolist()
        text = self._continuation(ids, before, new[: new.index(eos)] if eos in new else new)
        if on_text is not None and text.startswith(sent) and len(text) > len(sent):
            on_text(text[len(sent) :])  # what was held back: bytes that never became a character
        return text

    def _continuation(self, prompt: list[int], before: str, new: list[int]) -> str:
        """The text `new` adds after the prompt (whose text is `before`): the difference of
        the decoded texts, so that pieces joining across the boundary come out right."""
        text = self.tokenizer.decode(prompt + new)
        return text[len(before) :] if text.startswith(before) else self.tokenizer.decode(new)

    def attention(self, source: str, *, target: str | None = None, beam: int = 1) -> AttentionMaps:
        """Every head's attention weights for one sentence (a translation of `source`, or
        `target` if given, cut with a warning to the decoder's positions), with the subword
        pieces on each axis. For a language model, `source` is the text."""
        piece = self.tokenizer.id_to_piece
        eos, bos = self.config.model.eos_id, self.config.model.bos_id
        max_len = self.config.model.max_len
        src_ids = encode_sources(self.tokenizer, [source], max_len=max_len, policy="error")[0]
        if not self.is_translation:
            if not src_ids:
                raise ValueError("attention maps of a language model need some text")
            tokens = torch.tensor([src_ids], device=self.device)
            weights = attention_weights(self.model, None, tokens)
            pieces = [piece(i) for i in src_ids]
            return AttentionMaps(pieces, pieces, pieces, None, weights["decoder_self"], None)
        if target is None:
            target = self.translate([source], beam=beam)[0]
        # the decoder reads BOS and the output: at most max_len positions
        target_ids = fit_to_positions(
            self.tokenizer.encode(target, target=True),
            max_len - 1,
            "truncate",
            "target",
            positions=max_len,
        )
        out_ids = [*target_ids, eos]
        src = torch.tensor([[*src_ids, eos]], device=self.device)
        tgt_in = torch.tensor([[bos, *out_ids[:-1]]], device=self.device)
        weights = attention_weights(self.model, src, tgt_in)
        return AttentionMaps(
            source_pieces=[piece(i) for i in src[0].tolist()],
            output_pieces=[piece(i) for i in out_ids],
            input_pieces=[piece(i) for i in tgt_in[0].tolist()],
            **weights,
        )

    def evaluate(
        self,
        split: str | None = None,
        *,
        files: Sequence[str | Path] = (),
        beam: int | None = None,
        alpha: float | None = None,
        output: str | Path | None = None,
        context: int | None = None,
        stride: int | None = None,
        columns: int | None = None,
        on_bad_input: OnBadInput = "error",
        progress: bool = False,
    ) -> Evaluation:
        """Score the model on a split of its data set (`test2016`, `val`, ...) or on files:
        (source, reference) for translation, one text file for a language model.

        Translation: sacreBLEU and chrF on detokenised, cased output, and BLEU on lowercased
        13a-tokenised text; `output` keeps the hypotheses, one per line; decoding follows
        `self.config.decode` (see `with_decode`) with `beam` and `alpha` if given. Language
        model: perplexity with sliding windows of `context` tokens (default: the model's
        positions) moved by `stride` (default: half of it), or with `columns`, PyTorch's word
        language model protocol (`aiayn.evaluate.perplexity.column_perplexity`: the text cut
        into `columns` parts, each read in non-overlapping windows of `context`). Invalid UTF-8
        in the files is an error naming file and line, or replaced with U+FFFD
        (`on_bad_input="replace"`).
        """
        start = time.perf_counter()
        if not files:
            split = split or self._default_split()
        name = split or " ".join(str(f) for f in files)
        if self.is_translation:
            sources, references = self._parallel_text(split, files, on_bad_input)
            hyps = self.translate(sources, beam=beam, alpha=alpha, progress=progress)
            if output is not None:  # whole or not at all
                atomic_write(output, "".join(h + "\n" for h in hyps))
            return Evaluation(
                name=name,
                sentences=len(sources),
                seconds=time.perf_counter() - start,
                precision=self.precision,
                bleu=bleu(hyps, references),
                chrf=chrf(hyps, references),
                bleu_lowercase_13a=bleu(hyps, references, tokenize="13a", lowercase=True),
                hypotheses=hyps,
            )
        if beam is not None or alpha is not None or output is not None:
            raise ValueError("a language model is scored by perplexity: no beam, alpha, output")
        text = self._lm_text(split, files, on_bad_input)
        tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        context = context or self.config.model.max_len
        if columns is not None:
            if stride is not None:
                raise ValueError("columns reads non-overlapping windows: give no stride")
            result = column_perplexity(self.model, tokens, columns=columns, context=context)
        else:
            stride = stride or max(1, context // 2)
            result = sliding_window_perplexity(self.model, tokens, context=context, stride=stride)
        seconds = time.perf_counter() - start
        return Evaluation(name, 1, seconds, self.precision, perplexity=result)

    def decode_options(self, **changes: object) -> DecodeOptions:
        """The run's decoding settings with the given (non-None) changes, checked."""
        return self.config.decode.replace(**changes)

    def _need(self, *, translation: bool) -> None:
        if translation != self.is_translation:
            have = "translation model" if self.is_translation else "language model"
            action = "translate" if translation else "generate"
            raise ValueError(f"this run holds a {have}; it cannot {action}")

    def _default_split(self) -> str:
        """What `evaluate` scores when given neither a split nor files."""
        return TEST_SPLIT[self.config.data.dataset]

    def _split(self, split: str, on_bad_input: OnBadInput) -> list[tuple[str, str]] | str:
        data = self.config.data
        return read_split(
            data.dataset,
            split,
            src=data.src,
            tgt=data.tgt,
            data_dir=data.data_dir,
            train_files=data.train_files,
            valid_files=data.valid_files,
            on_bad_input=on_bad_input,
        )

    def _parallel_text(
        self, split: str | None, files: Sequence[str | Path], on_bad_input: OnBadInput
    ) -> tuple[list[str], list[str]]:
        if files and len(files) != 2:
            raise ValueError(f"give (source file, reference file), got {list(files)}")
        if files:
            pairs = read_parallel(*files, on_bad_input=on_bad_input)
        else:
            pairs = self._split(split, on_bad_input)
        return [source for source, _ in pairs], [target for _, target in pairs]

    def _lm_text(
        self, split: str | None, files: Sequence[str | Path], on_bad_input: OnBadInput
    ) -> str:
        if files:
            return "".join(read_text(f, on_bad_input=on_bad_input) for f in files)
        return self._split(split, on_bad_input)
