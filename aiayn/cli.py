"""The `aiayn` command line: a table of subcommands, each a short adapter that makes one call."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Callable, Sequence

from aiayn.api import (
    DEFAULT_MAX_TOKENS,
    EXPORT_FORMATS,
    IMPORT_FORMATS,
    TextModel,
    import_pretrained,
    load,
    quantize,
)
from aiayn.config import DecodeOptions
from aiayn.files import atomic_write
from aiayn.machine import (
    describe_machine,
    fit_threads_to_cores,
    keep_freed_memory,
    resolve_precision,
)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tiny Transformer on the copy task for a minute and decode examples",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="training time budget")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    from aiayn.train.copy_task import demo

    demo(seconds=args.seconds, seed=args.seed)


def add_machine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("machine", help="describe this machine and the precision `auto` picks on it")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(run=run_machine)


def run_machine(args: argparse.Namespace) -> None:
    import json

    from aiayn.train.distributed import resolve_device

    machine = describe_machine(resolve_device(args.device))
    precision, reason = resolve_precision("auto", machine)
    if args.json:
        print(json.dumps({**machine.to_dict(), "auto_precision": precision}))
        return
    print(machine.summary())
    print(f"precision: auto -> {precision} ({reason.removeprefix('auto: ')})")


def add_data(sub: argparse._SubParsersAction) -> None:
    from aiayn.data import prepare

    data = sub.add_parser("data", help="fetch a data set, train its tokenizer, show examples")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("dataset", choices=prepare.DATASETS)
    common.add_argument("--src", default="de", help="source language (multi30k, tatoeba)")
    common.add_argument("--tgt", default="en", help="target language (multi30k, tatoeba)")
    common.add_argument("--data-dir", help="data root (default: $AIAYN_DATA, else ~/.cache/aiayn)")
    common.add_argument("-o", "--out", help="tokenizer folder (default: data/<dataset>[-src-tgt])")
    p = actions.add_parser("prepare", parents=[common], help="fetch or find files, train tokenizer")
    p.add_argument("--vocab-size", type=int, default=prepare.DEFAULT_VOCAB_SIZE)
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    p.add_argument("--max-len", type=int, default=prepare.DEFAULT_MAX_LEN, help="in tokens")
    p.add_argument("--max-ratio", type=float, default=prepare.DEFAULT_MAX_RATIO)
    p.add_argument("--policy", choices=["skip", "truncate", "error"], default="skip")
    p.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading (nothing is downloaded into a given --data-dir)",
    )
    p.set_defaults(run=run_data_prepare)
    s = actions.add_parser("show", parents=[common], help="print encoded examples with pieces")
    s.add_argument("--split", default="val")
    s.add_argument("-n", type=int, default=3, help="number of sentences")
    s.set_defaults(run=run_data_show)
    t = actions.add_parser(
        "tokenizer", help="learn a joint vocabulary from text files (plain or .gz, streamed)"
    )
    t.add_argument("--files", nargs="+", required=True, help="both languages' training files")
    t.add_argument("-o", "--out", required=True, help="folder for the tokenizer file")
    t.add_argument("--vocab-size", type=int, default=prepare.DEFAULT_VOCAB_SIZE)
    t.add_argument("--model-type", choices=["bpe", "unigram", "char", "word"], default="bpe")
    t.add_argument(
        "--max-sentences", type=int, help="learn from a random sample of this many lines"
    )
    t.set_defaults(run=run_data_tokenizer)
    b = actions.add_parser(
        "binarize",
        help="tokenize line-aligned files once into memory-mapped shards (aiayn.data.binarized)",
    )
    b.add_argument("--source", required=True, help="source-language file (plain or .gz)")
    b.add_argument("--target", required=True, help="target-language file, line-aligned")
    b.add_argument("--tokenizer", required=True, help="folder with the tokenizer (a run's)")
    b.add_argument("-o", "--out", required=True, help="folder of the shards")
    b.add_argument("--split", default="train", help="split name (default: train)")
    b.add_argument("--shard-pairs", type=int, default=1_000_000, help="pairs per shard")
    b.add_argument("--workers", type=int, help="tokenizer processes (default: cores, at most 8)")
    b.set_defaults(run=run_data_binarize)


def run_data_prepare(args: argparse.Namespace) -> None:
    from aiayn.data import prepare

    out = args.out or prepare.default_out_dir(args.dataset, args.src, args.tgt)
    if args.dataset == "tinyshakespeare":
        report = prepare.prepare_language_model(
            out_dir=out, data_dir=args.data_dir, download=False if args.no_download else None
        )
    else:
        report = prepare.prepare_translation(
            dataset=args.dataset,
            src=args.src,
            tgt=args.tgt,
            out_dir=out,
            data_dir=args.data_dir,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            max_len=args.max_len,
            max_ratio=args.max_ratio,
            policy=args.policy,
            download=False if args.no_download else None,
        )
    print(report)


def run_data_tokenizer(args: argparse.Namespace) -> None:
    from pathlib import Path

    from aiayn.data.prepare import train_tokenizer_on_files

    print(train_tokenizer_on_files(
        [Path(f) for f in args.files], args.out, vocab_size=args.vocab_size,
        model_type=args.model_type, max_sentences=args.max_sentences,
    ))  # fmt: skip


def run_data_binarize(args: argparse.Namespace) -> None:
    import time

    from aiayn.data.binarized import binarize_pairs

    start = time.perf_counter()
    shards = binarize_pairs(
        args.source, args.target, args.tokenizer, args.out, split=args.split,
        shard_pairs=args.shard_pairs, workers=args.workers,
    )  # fmt: skip
    pairs, ids = sum(s.pairs for s in shards), sum(s.ids for s in shards)
    print(f"{args.out}: split {args.split}, {pairs:,} pairs, {ids:,} ids in {len(shards)} "
          f"shards, {time.perf_counter() - start:.1f} s")  # fmt: skip


def run_data_show(args: argparse.Namespace) -> None:
    from aiayn.data import prepare

    out = args.out or prepare.default_out_dir(args.dataset, args.src, args.tgt)
    print(
        prepare.show_examples(
            args.dataset,
            out_dir=out,
            src=args.src,
            tgt=args.tgt,
            split=args.split,
            n=args.n,
            data_dir=args.data_dir,
        )
    )


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a translation or language model from a YAML config (torchrun for DDP)",
    )
    p.add_argument("config", nargs="?", help="YAML config (default with --resume: RUN_DIR's)")
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.max_steps=2000 model.dropout=0.2",
    )
    p.add_argument("--run-dir", help="where checkpoints go (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="fine-tune: start from this run's weights and tokenizer (train.init_from)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved plan (processes, tokens per update, updates, checkpoints, "
        "memory per process) and exit: nothing is read, trained or written",
    )
    p.add_argument(
        "--world-size",
        type=int,
        help="with --dry-run: plan for this many processes (default: $WORLD_SIZE, else 1)",
    )
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> None:
    import os
    from pathlib import Path

    from aiayn.config import load_config
    from aiayn.train.checkpoint import CONFIG_FILE
    from aiayn.train.loop import NonFiniteLossError, default_run_dir, resume_command, train
    from aiayn.train.stop import Stopped, stop_exit_code

    if args.config is None and not (args.resume and args.run_dir):
        raise ValueError("give a CONFIG, or --resume with --run-dir to continue a run")
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
    overrides = [*args.set, *([f"train.init_from={args.init_from}"] if args.init_from else [])]
    config = load_config(args.config or run_dir / CONFIG_FILE, overrides)
    if args.dry_run:  # under torchrun every process plans; rank 0 prints
        plan = _train_plan(config, args.world_size or int(os.environ.get("WORLD_SIZE", "1")))
        if os.environ.get("RANK", "0") == "0":
            print(plan)
        return
    if args.world_size is not None:
        raise ValueError("--world-size plans a run (--dry-run); torchrun sets the real one")
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        result = train(config, run_dir=run_dir, resume=args.resume, progress=not args.no_progress)
    except NonFiniteLossError as error:
        raise SystemExit(f"aiayn train: stopped: {error}") from None
    except Stopped as stopped:  # before anything was trained, or by a second signal
        if main_rank:
            print(f"aiayn train: {stopped.message}", file=sys.stderr)
        raise SystemExit(stopped.exit_code) from None
    except KeyboardInterrupt:  # before train() took over SIGINT
        raise SystemExit(
            f"\naiayn train: interrupted; continue with: {resume_command(run_dir)}"
        ) from None
    if result.stopped_by is not None:  # the loop said where it saved
        raise SystemExit(stop_exit_code(_signal_number(result.stopped_by)))


def _train_plan(config, world_size: int):
    from aiayn.train.distributed import resolve_device
    from aiayn.train.plan import plan_training

    device = str(resolve_device(config.train.device))
    precision, _ = resolve_precision(config.train.precision, describe_machine(device))
    shown = device if config.train.device != "auto" else f"auto (here: {device})"
    return plan_training(config, world_size=world_size, device=shown, precision=precision)


def _signal_number(name: str) -> int:
    import signal

    return int(signal.Signals[name])


def add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average the last checkpoints of a run (§6.1)")
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, default=5, help="how many checkpoints (default 5)")
    p.add_argument(
        "--until", type=int, metavar="STEP", help="only checkpoints at or before this update"
    )
    p.add_argument("-o", "--out", help="output folder (default: RUN_DIR/averaged)")
    p.set_defaults(run=run_average)


def run_average(args: argparse.Namespace) -> None:
    from aiayn.train.average import average_checkpoints

    out = average_checkpoints(args.run_dir, last=args.last, until=args.until, out=args.out)
    print(f"wrote {out}")


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's loss, learning-rate and BLEU curves to PNG")
    p.add_argument("run_dir")
    p.add_argument("-o", "--out", help="output folder (default: RUN_DIR/plots)")
    p.set_defaults(run=run_plot)


def run_plot(args: argparse.Namespace) -> None:
    from aiayn.train.log import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(f"wrote {path}")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a training run's folder")
    p.add_argument(
        "--checkpoint",
        default="best",
        help="best, last, averaged, or a checkpoint folder (default: best)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    _precision_arguments(p)


def _precision_arguments(p: argparse.ArgumentParser) -> None:
    """--dtype / --quantize: what the model decodes in (`aiayn.model.precision`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        help="decode in this floating type (default: as stored; bf16 is fast only where the "
        "CPU has AVX512-BF16 or AMX, or on a GPU)",
    )
    group.add_argument(
        "--quantize",
        choices=["int8"],
        help="decode with int8 weights and dynamically quantized activations (CPU; "
        "`aiayn quantize` saves them in the run)",
    )


def _compile_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the decoder step (fp32 or bf16; tens of seconds on the first sentences, "
        "then ~3x faster steps at batch 1: for many sentences decoded few at a time)",
    )


def _precision(args: argparse.Namespace) -> str | None:
    return args.quantize or args.dtype


def _search_arguments(p: argparse.ArgumentParser) -> None:
    """Beam search options; unset ones take the run's `decode` section."""
    p.add_argument("--beam", type=int, help="beam size; 1 is greedy (run default: 4)")
    p.add_argument("--alpha", type=float, help="GNMT length penalty (run default: 0.6)")
    p.add_argument("--coverage", type=float, help="GNMT coverage penalty beta (default: 0)")
    p.add_argument("--max-len-a", type=float, help="max output length = a * source length + b")
    p.add_argument("--max-len-b", type=int, help="see --max-len-a")
    p.add_argument("--min-len", type=int, help="no EOS before this many tokens")
    p.add_argument(
        "--long-input",
        choices=["truncate", "error"],
        help="inputs longer than the model's positions: cut with a warning, or stop",
    )


def _bad_input_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-bad-input",
        choices=["error", "replace"],
        default="error",
        help="invalid UTF-8 in the input: stop naming file and line (default), or replace the "
        "bad bytes with U+FFFD and go on (the lines are counted on stderr)",
    )


def _load(args: argparse.Namespace) -> TextModel:
    """The run's model with the decoding flags given: each flag is named after its
    `DecodeOptions` field (`--max-len-a` -> `max_len_a`); unset flags keep the run's settings."""
    given = vars(args)
    options = {f.name: given.get(f.name) for f in dataclasses.fields(DecodeOptions)}
    keep_freed_memory()  # before the first large tensor: a search step's scores over the vocabulary
    model = load(args.run_dir, args.checkpoint, device=args.device, precision=_precision(args))
    if getattr(args, "compile", False):
        model.compile()
    return model.with_decode(**options)


def add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "translate", help="translate lines (stdin to stdout, or files); one output line per line"
    )
    _model_arguments(p)
    _compile_argument(p)
    _search_arguments(p)
    p.add_argument("-i", "--input", help="input file, plain or .gz (default: stdin)")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    _bad_input_argument(p)
    p.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"source tokens x beam per batch (default: {DEFAULT_MAX_TOKENS})",
    )
    p.set_defaults(run=run_translate)


def run_translate(args: argparse.Namespace) -> None:
    from aiayn.data.corpus import STDIN, read_lines

    model = _load(args)
    # The corpus reader: errors name the file (or <stdin>), line and byte.
    lines = read_lines(args.input or STDIN, on_bad_input=args.on_bad_input)
    outputs = model.translate(lines, max_tokens=args.max_tokens, progress=bool(args.input))
    result = "".join(line + "\n" for line in outputs)
    if args.output:
        atomic_write(args.output, result)  # a failure leaves no half file
    else:
        sys.stdout.write(result)


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a language model")
    _model_arguments(p)
    p.add_argument("--prompt", default="", help="text to continue (default: from BOS)")
    p.add_argument("--max-new-tokens", type=int, help="most new tokens (run default: 200)")
    p.add_argument("--temperature", type=float, help="0 is greedy (run default: 1.0)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely (0: all)")
    p.add_argument("--top-p", type=float, help="sample within probability mass p (1: all)")
    p.add_argument("--seed", type=int, help="seed for reproducible samples")
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> None:
    print(args.prompt + _load(args).generate(args.prompt))


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="BLEU and chrF (translation) or perplexity (language model) on a split"
    )
    _model_arguments(p)
    _search_arguments(p)
    p.add_argument(
        "--split",
        help="test2016, val, train (multi30k), test, val, train (tatoeba) or valid, train",
    )
    p.add_argument(
        "--files",
        nargs="+",
        metavar="FILE",
        help="SOURCE REFERENCE files (translation) or a text file (language model)",
    )
    p.add_argument("--output", help="write the hypotheses here, one per line")
    p.add_argument("--context", type=int, help="perplexity window (default: the model's max_len)")
    p.add_argument("--stride", type=int, help="perplexity stride (default: context / 2)")
    p.add_argument(
        "--columns",
        type=int,
        help="perplexity as PyTorch's word language model: the text cut into this many columns, "
        "each read in non-overlapping windows of --context (its tutorial: 10, --context 35)",
    )
    _bad_input_argument(p)
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    model = _load(args)
    result = model.evaluate(
        args.split,
        files=args.files or (),
        output=args.output,
        context=args.context,
        stride=args.stride,
        columns=args.columns,
        on_bad_input=args.on_bad_input,
        progress=True,
    )
    print(result)


def add_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="draw attention heatmaps (PNG) for one sentence")
    _model_arguments(p)
    p.add_argument("--source", required=True, help="the sentence (or text, language model)")
    p.add_argument("--target", help="its translation (default: the model's, greedy)")
    p.add_argument("-o", "--out", required=True, help="folder for the PNG files")
    p.add_argument("--layers", type=int, nargs="+", help="0-based layers (default: all)")
    p.add_argument("--heads", type=int, nargs="+", help="0-based heads (default: all)")
    p.set_defaults(run=run_attention)


def run_attention(args: argparse.Namespace) -> None:
    maps = _load(args).attention(args.source, target=args.target)
    for path in maps.plot(args.out, layers=args.layers, heads=args.heads):
        print(f"wrote {path}")


def add_serve(sub: argparse._SubParsersAction) -> None:
    from aiayn.serve.settings import ServeSettings

    p = sub.add_parser(
        "serve",
        help="serve models over HTTP: a JSON API and a page that shows attention",
        description="Serve run directories over HTTP (needs: pip install 'aiayn[serve]'). "
        "Each RUN_DIR is served under its folder's name, or NAME=RUN_DIR.",
    )
    p.add_argument("models", nargs="+", metavar="RUN_DIR", help="RUN_DIR or NAME=RUN_DIR")
    p.add_argument(
        "--checkpoint", default="best", help="best, last, averaged or int8 (default: best)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    _precision_arguments(p)
    _compile_argument(p)
    defaults = ServeSettings()
    for field in dataclasses.fields(ServeSettings):
        kind = type(getattr(defaults, field.name))
        p.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, field.name),
            help=f"{field.metadata['help']} (default: %(default)s)",
        )
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    try:
        from aiayn.serve import load_models, parse_model_specs
        from aiayn.serve.app import listen, run
        from aiayn.serve.settings import ServeSettings
    except ImportError as error:
        raise ImportError(f"{error}; install the server with: pip install 'aiayn[serve]'") from None
    given = vars(args)
    settings = ServeSettings(**{f.name: given[f.name] for f in dataclasses.fields(ServeSettings)})
    runs = parse_model_specs(args.models)
    listener = listen(settings.host, settings.port)  # a port in use: say so before loading
    allocator = keep_freed_memory()
    try:
        models = load_models(
            runs,
            checkpoint=args.checkpoint,
            device=args.device,
            precision=_precision(args),
            compile=args.compile,
        )
    except BaseException:
        listener.close()
        raise
    print(f"aiayn serve: {describe_machine().summary()}; {allocator}", file=sys.stderr)
    for name, model in models.items():
        print(f"  model {name}: {model.summary()}", file=sys.stderr)
    print(f"aiayn serve: settings\n{settings.summary()}", file=sys.stderr)
    print(f"aiayn serve: the page is at http://{settings.host}:{settings.port}/", file=sys.stderr)
    run(models, settings, listener)


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained model in another library's layout")
    _model_arguments(p)
    p.add_argument(
        "--format",
        default="hf-marian",
        choices=EXPORT_FORMATS,
        help="hf-marian (translation: transformers' MarianMTModel, CTranslate2's converter), "
        "hf-gpt2 (language model: GPT2LMHeadModel) or onnx (translation: encoder and decoder "
        "step graphs for onnxruntime); default hf-marian",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> None:
    print(f"wrote {_load(args).export(args.out, format=args.format)}")


def add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="save int8 weights of a run's checkpoint (RUN_DIR/int8; --checkpoint int8 loads them)",
    )
    p.add_argument("run_dir", help="a training run's folder")
    p.add_argument("--checkpoint", default="best", help="the fp32 weights (default: best)")
    p.add_argument("-o", "--out", help="output folder (default: RUN_DIR/int8)")
    p.set_defaults(run=run_quantize)


def run_quantize(args: argparse.Namespace) -> None:
    file = quantize(args.run_dir, args.checkpoint, args.out)
    print(f"wrote {file}; use it with --checkpoint {args.out or 'int8'}")


def add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="turn a pretrained model (a local folder) into an aiayn run directory"
    )
    p.add_argument(
        "format",
        choices=IMPORT_FORMATS,
        help="hf-marian: a MarianMTModel folder (OPUS-MT); marian: Marian-NMT's release files "
        "(*.npz, *.vocab.yml, source.spm, target.spm); hf-gpt2: a GPT2LMHeadModel folder",
    )
    p.add_argument("source", help="the folder to read (config.json, weights, tokenizer files)")
    p.add_argument("-o", "--out", required=True, help="the run directory to create")
    p.set_defaults(run=run_import)


def run_import(args: argparse.Namespace) -> None:
    out = import_pretrained(args.format, args.source, args.out)
    command = f"generate {out} --prompt ..." if args.format == "hf-gpt2" else f"translate {out}"
    print(f"wrote {out}; try: aiayn {command}")


# Each entry adds one subcommand; its `run` function takes the parsed arguments.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo,
    add_machine,
    add_data,
    add_train,
    add_average,
    add_plot,
    add_translate,
    add_generate,
    add_evaluate,
    add_attention,
    add_export,
    add_quantize,
    add_import,
    add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiayn", description="The Transformer of 'Attention Is All You Need'."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fit_threads_to_cores()
    plain_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(f"aiayn {args.command}")
    try:
        args.run(args)
    # bad input, a missing or broken file, a full disk, an optional package not installed
    except (ValueError, OSError, ImportError) as error:
        print(f"aiayn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves first: train/stop.py)
        print(f"\naiayn {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        warnings.formatwarning = plain_format


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n")) or type(error).__name__


def _one_line_warning(prefix: str) -> Callable[..., str]:
    """Warnings as `aiayn CMD: warning: message` lines, without the source line under them."""

    def format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
        return f"{prefix}: warning: {message}\n"

    return format_warning
