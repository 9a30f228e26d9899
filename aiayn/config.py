"""The run's configuration: frozen dataclasses for data and training (§5), grouped with the
ModelConfig and generate's DecodeOptions in a RunConfig; YAML load/save that names file and
dotted key on every error, and dotted `key=value` overrides (`train.max_steps=100`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aiayn.files import atomic_write
from aiayn.generate.options import DecodeOptions
from aiayn.model.config import ModelConfig

Dataset = Literal[
    "multi30k", "tatoeba", "parallel", "binarized", "tinyshakespeare", "wikitext2", "text"
]
TokenizerType = Literal["bpe", "unigram", "char", "word"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["noam", "inverse_sqrt", "cosine", "constant"]
BestMetric = Literal["auto", "bleu", "chrf", "loss"]
Strategy = Literal["ddp", "fsdp"]
TRANSLATION_DATASETS = ("multi30k", "tatoeba", "parallel", "binarized")


@dataclass(frozen=True)
class DataConfig:
    """What to train on and how to cut it into batches."""

    dataset: Dataset = "multi30k"
    """`multi30k` (de/en/fr/cs captions), `tatoeba` (es-en or de-en sentence pairs,
    `aiayn.data.tatoeba`), `parallel` (your own line-aligned files), `binarized` (the shards
    `aiayn data binarize` wrote into `data_dir`, read from disk as batches need them),
    `tinyshakespeare` (characters), `wikitext2` (WikiText-2's word-level files, local) or `text`
    (your own text files, language modelling)."""
    src: str = "de"
    """Source language (multi30k, tatoeba)."""
    tgt: str = "en"
    """Target language (multi30k, tatoeba)."""
    data_dir: str | None = None
    """Data root for the named data sets; None: `$AIAYN_DATA`, else `~/.cache/aiayn`. For
    `binarized`, the folder of shards (with its `train` and `valid` splits and tokenizer)."""
    train_files: tuple[str, ...] = ()
    """`parallel`: (source file, target file); `text`: (text file,)."""
    valid_files: tuple[str, ...] = ()
    """Validation files, laid out as `train_files`."""
    tokenizer: str | None = None
    """An existing `tokenizer.model`; None trains one on the training data into the run dir."""
    tokenizer_type: TokenizerType = "bpe"
    """Vocabulary to train: `bpe` (§5.1), `unigram`, `char`, or `word` (white-space words, a
    newline is `<eos>`, WikiText's `<unk>` kept: `aiayn.data.wordlevel`)."""
    vocab_size: int = 8000
    """Pieces of a trained tokenizer (shared by source and target, §3.4); the model's
    `vocab_size` is set to the tokenizer's size. For `char` and `word` an upper bound (the most
    frequent are kept)."""
    max_len: int | None = None
    """Training pairs with a side longer than this (EOS/BOS included) are dropped; None: the
    model's `max_len`."""
    max_ratio: float = 9.0
    """Training pairs whose length ratio exceeds this are dropped (misalignments)."""
    max_tokens: int = 4096
    """Token budget per batch and side, padding included (the paper: ~25,000, §5.1)."""
    seq_len: int = 256
    """Language modelling: tokens per training window."""
    bucket_size: int | None = None
    """Examples per length-sorted bucket (None: the whole set, as fairseq)."""

    def __post_init__(self) -> None:
        files = {"parallel": 2, "text": 1}.get(self.dataset, 0)
        for name in ("train_files", "valid_files"):
            given = getattr(self, name)  # none given: a run without data (an imported model)
            if files and given and len(given) != files:
                raise ValueError(f"dataset {self.dataset!r} needs {files} {name}, got {given}")
        for name in ("vocab_size", "max_len", "max_tokens", "seq_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def translation(self) -> bool:
        """True for parallel corpora (an encoder-decoder), False for language modelling."""
        return self.dataset in TRANSLATION_DATASETS


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (§5.3 optimizer and schedule, §5.4 regularisation) and its run."""

    seed: int = 0
    """Seeds initialisation, dropout and the batch order."""
    max_steps: int = 100_000
    """Stop after this many updates (the paper: 100k for the base model)."""
    max_epochs: int | None = None
    """Also stop after this many passes over the training data."""
    device: str = "auto"
    """`auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`."""
    strategy: Strategy = "ddp"
    """Under torchrun: `ddp`, the whole model on every process, or `fsdp`, weights, gradients
    and Adam's moments sharded over the processes (FSDP2, one group per layer); see
    `aiayn/train/parallel.py`. Checkpoints are the same either way. One process: no effect."""
    activation_checkpointing: bool = False
    """Keep only each layer's input for the backward pass and recompute the rest there: the
    same gradients, less memory, about a third more compute."""
    precision: Precision = "auto"
    """`auto`: bf16 where the device multiplies bf16 natively (CPUs with AVX512-BF16, AMX or ARM
    BF16; GPUs of compute capability 8.0+), fp16 on GPUs of capability 7.x, else fp32 (see
    `aiayn/machine.py`); or `bf16` autocast (CPU or GPU), `fp16` autocast with a GradScaler (GPU
    only), `fp32`."""
    resolved_precision: ResolvedPrecision | None = None
    """Written by `aiayn train` into the run's config.yaml: what `precision` resolved to on the
    machine that trained; a value given here is replaced."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam's beta_1, beta_2 (§5.3)."""
    adam_eps: float = 1e-9
    """Adam's epsilon (§5.3)."""
    weight_decay: float = 0.0
    schedule: Schedule = "noam"
    """`noam` (Eq. 3), `inverse_sqrt` (fairseq), `cosine` (to `min_lr` at `max_steps`), or
    `constant`; all but `noam` warm up linearly to `lr`."""
    lr_scale: float = 1.0
    """Factor on Eq. 3's learning rate (tensor2tensor's `learning_rate`)."""
    lr: float = 5e-4
    """Peak learning rate of `inverse_sqrt`, `cosine` and `constant`."""
    min_lr: float = 0.0
    """Floor of `cosine`."""
    warmup_steps: int = 4000
    """Linear warm-up (§5.3: 4000)."""
    label_smoothing: float = 0.1
    """epsilon_ls (§5.4)."""
    tokens_per_update: int | None = None
    """Accumulate gradients of ceil(tokens_per_update / (max_tokens * processes)) batches per
    update; None: one batch per process and update."""
    clip_norm: float = 0.0
    """Clip the gradient norm to this; 0 turns clipping off (the paper does not clip)."""
    eval_every: int = 1000
    """Validate (and save) every this many updates; 0: only at the end of each epoch."""
    eval_each_epoch: bool = True
    """Also validate at the end of every epoch."""
    bleu: bool = True
    """Translation: greedy-decode the validation set for BLEU and chrF at each validation."""
    bleu_max_sentences: int | None = None
    """Decode only the first this many validation sentences (None: all)."""
    best_metric: BestMetric = "auto"
    """Score that picks checkpoint-best; `auto`: BLEU when computed, else validation loss."""
    save_every: int = 1000
    """Also save every this many updates (besides each validation); 0: only at validations."""
    keep_last: int = 5
    """Step checkpoints to keep (checkpoint-best is kept besides)."""
    log_every: int = 10
    """Append a training record to metrics.jsonl every this many updates."""
    max_nonfinite: int = 10
    """Stop when this many updates in a row had a non-finite loss or gradient."""
    init_from: str | None = None
    """Fine-tune: start from the weights (`best`) and tokenizer of this run directory (one
    `aiayn import` made, or any other); model fields left at their defaults are taken from it,
    dropout may be changed, any other difference is an error naming the field."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "keep_last", "log_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every", "clip_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as `RUN_DIR/config.yaml` and enough to rebuild the model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeOptions = field(default_factory=DecodeOptions)

    def __post_init__(self) -> None:
        kind = "encoder-decoder" if self.data.translation else "decoder-only"
        if self.model.kind != kind:
            raise ValueError(
                f"data.dataset {self.data.dataset!r} needs model.kind {kind!r}, "
                f"got {self.model.kind!r}"
            )
        longest = self.data.max_len if self.data.translation else self.data.seq_len
        if longest is not None and longest > self.model.max_len:
            what = "data.max_len" if self.data.translation else "data.seq_len"
            raise ValueError(f"{what} ({longest}) exceeds model.max_len ({self.model.max_len})")

    def replace(self, **sections: object) -> RunConfig:
        """A copy with whole sections replaced (`config.replace(train=...)`)."""
        return dataclasses.replace(self, **sections)


FINE_TUNABLE = ("dropout", "attention_dropout", "activation_dropout")
"""Model fields a fine-tuning run may set differently from the run it starts from."""


def merge_model_config(given: ModelConfig, base: ModelConfig, *, source: str) -> ModelConfig:
    """The model of a run that starts from another (`train.init_from`): `base`, with the
    fine-tunable fields (dropout) of `given`. A field of `given` that differs from `base` and
    from the default is an error naming it: the weights could not fit.

    Raises:
        ValueError: Names the field, both values and `source`.
    """
    default = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        mine, theirs = getattr(given, f.name), getattr(base, f.name)
        if f.name in FINE_TUNABLE or mine == theirs or mine == getattr(default, f.name):
            continue
        raise ValueError(
            f"model.{f.name} is {mine!r}, but train.init_from {source} has {theirs!r}; leave "
            f"model.{f.name} out to take it from there"
        )
    return base.replace(**{name: getattr(given, name) for name in FINE_TUNABLE})


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a RunConfig from YAML, then apply dotted `key=value` overrides.

    Missing keys take the dataclass defaults. Unknown keys, wrong types and invalid values raise
    `ValueError` naming the file and the dotted key, or the override (`--set key=value`) when
    the key came from one.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    overridden = {apply_override(raw, override): override for override in overrides}
    return config_from_dict(raw, source=str(path), overridden=overridden)


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write every field (defaults included) as YAML; `load_config` reads it back equal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain dicts, lists and scalars (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_differences(old: Any, new: Any) -> dict[str, str]:
    """Dotted keys whose values differ between two configs -> `'old -> new'`."""
    flat_old, flat_new = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    return {
        key: f"{flat_old.get(key)} -> {flat_new.get(key)}"
        for key in sorted(flat_old.keys() | flat_new.keys())
        if flat_old.get(key) != flat_new.get(key)
    }


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_from_dict(
    raw: Mapping[str, Any], *, source: str = "<dict>", overridden: Mapping[str, str] | None = None
) -> RunConfig:
    """Build a RunConfig from nested mappings, checking keys and types; errors name `source`,
    or for a dotted key in `overridden` the override that set it. With `train.init_from`, model
    keys not given are taken from that run's config.yaml."""
    sources = _Sources(source, dict(overridden or {}))
    return _build(RunConfig, _model_from_init(raw, sources), sources, "")


def _model_from_init(raw: Mapping[str, Any], sources: _Sources) -> Mapping[str, Any]:
    """`raw` with the model keys it lacks filled from the run `train.init_from` names."""
    train = raw.get("train")
    init_from = train.get("init_from") if isinstance(train, Mapping) else None
    model = raw.get("model") or {}
    if not init_from or not isinstance(model, Mapping):
        return raw
    missing = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in model]
    if not missing:
        return raw
    file = Path(init_from) / "config.yaml"
    if not file.is_file():
        where = sources.of("train.init_from")
        raise ValueError(
            f"{where}: train.init_from {init_from} is not a run directory (no {file.name})"
        )
    try:
        base = yaml.safe_load(file.read_text(encoding="utf-8"))["model"]
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise ValueError(f"{file}: not a run configuration ({error})") from None
    return {**raw, "model": {**{k: base[k] for k in missing if k in base}, **model}}


def apply_override(raw: dict[str, Any], override: str) -> str:
    """Set `section.key=value` in nested dicts; the value is parsed as YAML (`1e-3` is a number).
    Returns the dotted key."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {override}: not of the form section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {override}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ValueError(f"--set {override}: not a valid YAML value ({error.problem})") from None
    return key.strip()


@dataclass(frozen=True)
class _Sources:
    """Where config values came from: a file, and the command line's `--set` overrides."""

    file: str
    overridden: dict[str, str]
    """Dotted key -> the `key=value` override that set it."""

    def of(self, dotted: str) -> str:
        """The source of one key (or section: a section some override reaches into)."""
        if dotted in self.overridden:
            return f"--set {self.overridden[dotted]}"
        inside = [o for k, o in self.overridden.items() if k.startswith(dotted + ".")]
        if dotted and inside:
            return f"{self.file} with --set {' '.join(inside)}"
        return self.file


def _build(cls: type, raw: Any, sources: _Sources, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{sources.of(where)}: {where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{sources.of(prefix + str(key))}: unknown key {prefix}{key}{hint} "
                f"(allowed: {', '.join(names)})"
            )
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], value, sources, f"{prefix}{key}.")
        else:
            values[key] = _check(hints[key], value, f"{sources.of(prefix + key)}: {prefix}{key}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        source = sources.of(prefix.rstrip(".")) if prefix else sources.file
        if not prefix and sources.overridden:
            source = f"{sources.file} with --set {' '.join(sources.overridden.values())}"
        raise ValueError(f"{source}: {where}: {error}") from None


def _check(hint: Any, value: Any, where: str) -> Any:
    """`value` converted to `hint` (int -> float, list -> tuple, '1e-3' -> float) or an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(arg, value, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has a wrong type")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_check(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    return _check_scalar(hint, value, where)


def _check_scalar(hint: type, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # PyYAML reads `1e-3` (no dot) as a string
        except ValueError:
            pass
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
