"""The HTTP service over `aiayn.api`: `create_app(models, settings)` gives the FastAPI app,
`run(models, settings)` serves it with uvicorn until SIGTERM or Ctrl-C.

    GET  /              the page: translate or generate, and the attention view
    GET  /health        liveness, answered at once
    GET  /v1/models     what is served: names, kind, languages, parameters, limits
    POST /v1/translate  {"text": ...} or {"texts": [...]}, decoding options, "attention"
    POST /v1/generate   {"prompt": ...}, sampling options, "stream" (Server-Sent Events)

Every model call runs on one worker thread (`worker.ModelWorker`), which batches concurrent
translations; every refusal is a JSON body `{"error": ..., "status": ..., "field": ...}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from aiayn.api import TextModel
from aiayn.config import DecodeOptions
from aiayn.serve.requests import (
    ApiError,
    GenerateRequest,
    TranslateRequest,
    check_generate,
    check_translate,
    parse_json,
    read_body,
    validate,
)
from aiayn.serve.settings import ServeSettings
from aiayn.serve.worker import Job, ModelWorker, QueueFull, ShuttingDown

STATIC = Path(__file__).resolve().parent / "static"
TRANSLATE_FIELDS = ("beam", "alpha", "coverage", "max_len_a", "max_len_b", "min_len", "long_input")
"""The `DecodeOptions` fields `TextModel.translate` takes."""
PAGE_HEADERS = {
    # the page's own files only: nothing inline, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
log = logging.getLogger("aiayn.serve")


def create_app(models: dict[str, TextModel], settings: ServeSettings | None = None) -> FastAPI:
    """The service for `models` (name -> loaded model); only these names resolve."""
    if not models:
        raise ValueError("give at least one model to serve")
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.worker = ModelWorker(settings)
        yield
        await asyncio.to_thread(app.state.worker.close, settings.shutdown_timeout_s)

    app = FastAPI(title="aiayn", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        body = {"error": str(error.detail), "status": error.status_code}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def fault(request: Request, error: Exception) -> JSONResponse:
        # a bug, not a bad request: Starlette still logs it with its traceback
        return JSONResponse({"error": "internal error", "status": 500}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health() -> dict[str, object]:
        worker: ModelWorker = app.state.worker
        return {
            "status": "ok",
            "models": sorted(models),
            "waiting": worker.waiting,
            "worker": dataclasses.asdict(worker.stats),
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, object]:
        return {"models": [describe(name, model, settings) for name, model in models.items()]}

    def served(name: str | None, *, translation: bool) -> tuple[str, TextModel]:
        if name is None:
            if len(models) > 1:
                raise ApiError(422, f"name a model: one of {sorted(models)}", field="model")
            name = next(iter(models))
        if name not in models:
            raise ApiError(404, f"no model {name!r}; served: {sorted(models)}", field="model")
        model = models[name]
        if model.is_translation != translation:
            other = "/v1/translate" if model.is_translation else "/v1/generate"
            raise ApiError(422, f"{name!r} is served at {other}", field="model")
        return name, model

    def submit(job: Job) -> Future:
        try:
            return app.state.worker.submit(job)
        except QueueFull as error:
            raise ApiError(503, f"busy: {error}; retry", headers={"Retry-After": "1"}) from None
        except ShuttingDown as error:
            raise ApiError(503, str(error), headers={"Retry-After": "5"}) from None

    async def run(job: Job) -> object:
        future = submit(job)
        try:
            return await asyncio.wrap_future(future)
        except ValueError as error:  # the model refused the input (it names why)
            raise ApiError(422, str(error)) from None
        except asyncio.CancelledError:  # uvicorn's shutdown timeout ran out: say so, if we can
            message = "the server stopped before this request was done; retry"
            raise ApiError(503, message, headers={"Connection": "close"}) from None

    @app.post("/v1/translate", openapi_extra=_body_schema(TranslateRequest))
    async def translate(request: Request) -> dict[str, object]:
        body: TranslateRequest = await _read(request, TranslateRequest, settings)
        texts = check_translate(body, settings)
        name, model = served(body.model, translation=True)
        options = _options(
            model,
            settings,
            beam=body.beam,
            alpha=body.alpha,
            max_len_a=body.max_len_a,
            max_len_b=body.max_len_b,
            min_len=body.min_len,
            long_input="truncate",
        )
        counts = _token_counts(model, texts)
        limit = model.config.model.max_len - 1  # positions, less EOS
        kwargs = {field: getattr(options, field) for field in TRANSLATE_FIELDS}
        reply: dict[str, object] = {"model": name}
        if body.attention:
            job = Job(call=lambda: _with_attention(model, texts[0], kwargs))
            translation, maps = await run(job)
            reply["translations"], reply["attention"] = [translation], maps
        else:

            def run_batch(batch: list[str]) -> list[str]:
                return model.translate(batch, max_tokens=settings.max_batch_tokens, **kwargs)

            cost = sum(min(n, limit) + 1 for n in counts) * options.beam
            job = Job(key=(name, options), texts=texts, cost=cost, run_batch=run_batch)
            reply["translations"] = await run(job)
        reply["truncated"] = [n > limit for n in counts]
        return reply

    @app.post("/v1/generate", openapi_extra=_body_schema(GenerateRequest), response_model=None)
    async def generate(request: Request) -> dict[str, object] | StreamingResponse:
        body: GenerateRequest = await _read(request, GenerateRequest, settings)
        name, model = served(body.model, translation=False)
        check_generate(body, settings, model.config.model.vocab_size)
        options = _options(
            model,
            settings,
            max_new_tokens=body.max_new_tokens,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            seed=body.seed,
        )
        _token_counts(model, [body.prompt])  # refuses what cannot be encoded, before queueing
        kwargs = {
            field: getattr(options, field)
            for field in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
        }
        if not body.stream:
            text = await run(Job(call=lambda: model.generate(body.prompt, **kwargs)))
            return {"model": name, "text": text}
        return _stream(submit, model, body.prompt, kwargs, name)

    return app


def describe(name: str, model: TextModel, settings: ServeSettings) -> dict[str, object]:
    """What `/v1/models` says of one model."""
    config = model.config
    return {
        "name": name,
        "kind": "translation" if model.is_translation else "language-model",
        "source_language": config.data.src,
        "target_language": config.data.tgt,
        "parameters": model.parameters,
        "encoder_layers": config.model.n_encoder_layers,
        "decoder_layers": config.model.n_decoder_layers,
        "heads": config.model.n_heads,
        "vocab_size": config.model.vocab_size,
        "max_input_tokens": config.model.max_len - (1 if model.is_translation else 0),
        "max_text_chars": settings.max_text_chars,
        "precision": model.precision,
        "device": str(model.device),
        "decode": {
            field: getattr(config.decode, field)
            for field in (TRANSLATE_FIELDS if model.is_translation else _SAMPLING_FIELDS)
        },
    }


_SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_k", "top_p")


async def _read(request: Request, kind: type, settings: ServeSettings):
    """The request's body as a `kind`, or the ApiError that refuses it."""
    try:
        body = await read_body(dict(request.headers), request.stream(), settings)
    except ClientDisconnect:
        raise ApiError(400, "the client went away before sending its body") from None
    return validate(kind, parse_json(body))


def _options(model: TextModel, settings: ServeSettings, **changes: object) -> DecodeOptions:
    """The run's decoding settings with the request's changes; a run default past one of the
    server's limits (a request's own values were checked) is brought down to it."""
    try:
        options = model.decode_options(**changes)
    except ValueError as error:
        raise ApiError(422, str(error)) from None
    limits = {
        "beam": settings.max_beam,
        "max_len_a": settings.max_len_a,
        "max_len_b": settings.max_output_tokens,
        "min_len": settings.max_output_tokens,
        "max_new_tokens": settings.max_output_tokens,
        "temperature": settings.max_temperature,
    }
    over = {name: limit for name, limit in limits.items() if getattr(options, name) > limit}
    if "beam" in over and options.n_best > over["beam"]:
        over["n_best"] = over["beam"]
    return options.replace(**over) if over else options


def _token_counts(model: TextModel, texts: list[str]) -> list[int]:
    """Tokens per text (for the batch budget and `truncated`); 422 for text that cannot be
    encoded (a lone surrogate from a JSON escape), naming which."""
    try:
        return [len(ids) for ids in model.tokenizer.encode_batch(texts)]
    except ValueError as error:
        raise ApiError(422, str(error), field="texts" if len(texts) > 1 else None) from None


def _with_attention(model: TextModel, text: str, kwargs: dict) -> tuple[str, dict]:
    translation = model.translate([text], **kwargs)[0]
    if not translation.strip() or not text.strip():
        return translation, None
    maps = model.attention(text, target=translation)

    def weights(tensor: torch.Tensor | None) -> list | None:
        return None if tensor is None else tensor.float().round(decimals=4).tolist()

    return translation, {
        "source_tokens": maps.source_pieces,
        "output_tokens": maps.output_pieces,
        "input_tokens": maps.input_pieces,
        "layers": maps.cross.size(0),
        "heads": maps.cross.size(1),
        "cross": weights(maps.cross),
        "encoder_self": weights(maps.encoder_self),
        "decoder_self": weights(maps.decoder_self),
    }


class _Cancelled(Exception):
    """The client of a stream went away: stop generating."""


def _stream(
    submit: Callable[[Job], Future], model: TextModel, prompt: str, kwargs: dict, name: str
) -> StreamingResponse:
    """Server-Sent Events: `token` events with each new piece of text as it is generated,
    then `done` with the whole continuation (or `error`). Queued before the response starts,
    so a full queue is still a 503."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    gone = threading.Event()

    def push(event: str, data: dict) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (event, data))

    def on_text(piece: str) -> None:
        if gone.is_set():
            raise _Cancelled
        push("token", {"text": piece})

    def generate() -> None:
        try:
            push("done", {"model": name, "text": model.generate(prompt, on_text=on_text, **kwargs)})
        except _Cancelled:
            pass
        except ValueError as error:
            push("error", {"error": str(error), "status": 422})
        except Exception:
            log.exception("generation failed")
            push("error", {"error": "internal error", "status": 500})

    job = Job(call=generate)
    submit(job)

    async def send() -> AsyncIterator[str]:
        try:
            while True:
                event, data = await events.get()
                yield f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                if event != "token":
                    return
        finally:
            gone.set()
            job.future.cancel()  # not started yet: never will be

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(send(), media_type="text/event-stream", headers=headers)


def _body_schema(kind: type) -> dict:
    """The OpenAPI description of a body read by hand (so that /docs shows its fields)."""
    schema = kind.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or an OSError naming the
    address, before any model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def run(
    models: dict[str, TextModel], settings: ServeSettings, listener: socket.socket | None = None
) -> None:
    """Serve until SIGTERM or Ctrl-C: then stop accepting, let requests in flight finish (at
    most `shutdown_timeout_s`), finish the worker's queue, and return. `listener`: a socket
    from `listen` (default: one made here on the settings' host and port)."""
    import uvicorn

    listener = listener or listen(settings.host, settings.port)
    app = create_app(models, settings)
    config = uvicorn.Config(
        app, timeout_graceful_shutdown=settings.shutdown_timeout_s, log_level="info"
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again after restoring the
    # handler it found: make that handler record it, so the process exits 0 after a clean stop.
    before = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, before)
        listener.close()
