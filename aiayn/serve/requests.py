"""What a request may say: the JSON bodies of `/v1/translate` and `/v1/generate`, read with
the limits of `ServeSettings` and refused with a status and a message naming the field.

Status codes: 413 body too large (refused before it is read in full, with or without
Content-Length), 415 not JSON, 400 not UTF-8 or malformed JSON, 422 a field of the wrong type
or past its limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, ValidationError

from aiayn.serve.settings import ServeSettings


class ApiError(Exception):
    """A request refused: its HTTP status, a one-line message, and the field it is about."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message, "status": self.status}
        if self.field is not None:
            body["field"] = self.field
        return body


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TranslateRequest(_Request):
    """POST /v1/translate. Decoding fields left out take the run's `decode` settings."""

    model: str | None = None
    """A served model's name; may be left out when one model is served."""
    text: str | None = None
    """One sentence (or give `texts`)."""
    texts: list[str] | None = None
    """Sentences, translated together; one output each, in order."""
    beam: int | None = None
    alpha: float | None = None
    max_len_a: float | None = None
    max_len_b: int | None = None
    min_len: int | None = None
    attention: bool = False
    """Also return every head's attention weights (one sentence only)."""


class GenerateRequest(_Request):
    """POST /v1/generate: continue a prompt with a language model."""

    model: str | None = None
    prompt: str = ""
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False
    """Send the continuation as Server-Sent Events, piece by piece."""


async def read_body(
    headers: dict[str, str], chunks: AsyncIterator[bytes], settings: ServeSettings
) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_body_bytes` (at once when
    Content-Length says so; else while it streams in) and with 415 unless it is JSON."""
    limit = settings.max_body_bytes
    too_large = f"request body is larger than the limit of {limit} bytes (max_body_bytes)"
    length = headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise ApiError(413, too_large)
    media, _, parameters = headers.get("content-type", "").partition(";")
    if media.strip().lower() != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {media.strip()!r}")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"')
    if parameters.strip() and charset not in ("utf-8", "utf8"):
        raise ApiError(415, f"the body must be UTF-8 JSON, got {parameters.strip()!r}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ApiError(413, too_large)
    return bytes(body)


MAX_JSON_DEPTH = 64  # a request nests 3 deep; json alone stops at the recursion limit
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of `text` nest, brackets inside strings not counted."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(body: bytes) -> object:
    """The JSON value of `body`; 400 naming the byte or line and column where it goes wrong.
    NaN and Infinity are not JSON and are refused, and so is nesting past `MAX_JSON_DEPTH`
    (json's own bound is the interpreter's recursion limit, which torch.compile raises)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the body is not UTF-8: byte {error.start} ({error.reason})") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ApiError(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as error:
        message = f"{error.msg} at line {error.lineno} column {error.colno}"
        raise ApiError(400, f"malformed JSON: {message}") from None
    except ValueError as error:
        raise ApiError(400, f"malformed JSON: {error}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None


def validate(kind: type[_Request], value: object) -> _Request:
    """`value` as a request of `kind`; 422 naming the first field that is wrong."""
    if not isinstance(value, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(value).__name__}")
    try:
        return kind.model_validate(value)
    except ValidationError as errors:
        error = errors.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise ApiError(422, f"{field}: {message}", field=field) from None


def check_range(
    field: str, value: float | None, low: float, high: float, *, above_low: bool = False
) -> None:
    """422 naming `field` and its limits unless low <= value <= high (low < value with
    `above_low`); None (left out) passes."""
    if value is None:
        return
    low_ok = value > low if above_low else value >= low
    if not (low_ok and value <= high and math.isfinite(value)):
        low_text = f"more than {low}" if above_low else f"at least {low}"
        raise ApiError(
            422, f"{field} must be {low_text} and at most {high}, got {value}", field=field
        )


def check_translate(request: TranslateRequest, settings: ServeSettings) -> list[str]:
    """The sentences of a translation request, with every limit checked."""
    if (request.text is None) == (request.texts is None):
        raise ApiError(422, "give either text (one sentence) or texts (a list)", field="text")
    texts = [request.text] if request.text is not None else request.texts
    field = "text" if request.text is not None else "texts"
    if not texts:
        raise ApiError(422, "texts is empty: give at least one sentence", field="texts")
    if len(texts) > settings.max_sentences:
        raise ApiError(
            422,
            f"texts holds {len(texts)} sentences, more than the limit of "
            f"{settings.max_sentences} (max_sentences)",
            field="texts",
        )
    for i, text in enumerate(texts):
        check_text_length(field if request.text is not None else f"texts.{i}", text, settings)
    if request.attention and len(texts) > 1:
        raise ApiError(422, "attention is given for one sentence only", field="attention")
    check_range("beam", request.beam, 1, settings.max_beam)
    check_range("alpha", request.alpha, 0, 10)
    check_range("max_len_a", request.max_len_a, 0, settings.max_len_a)
    check_range("max_len_b", request.max_len_b, 0, settings.max_output_tokens)
    check_range("min_len", request.min_len, 0, settings.max_output_tokens)
    return texts


def check_generate(request: GenerateRequest, settings: ServeSettings, vocab_size: int) -> None:
    """Every limit of a generation request."""
    check_text_length("prompt", request.prompt, settings)
    check_range("max_new_tokens", request.max_new_tokens, 1, settings.max_output_tokens)
    check_range("temperature", request.temperature, 0, settings.max_temperature)
    check_range("top_k", request.top_k, 0, vocab_size)
    check_range("top_p", request.top_p, 0, 1, above_low=True)
    check_range("seed", request.seed, 0, 2**63 - 1)


def check_text_length(field: str, text: str, settings: ServeSettings) -> None:
    if len(text) > settings.max_text_chars:
        raise ApiError(
            422,
            f"{field} has {len(text)} characters, more than the limit of "
            f"{settings.max_text_chars} (max_text_chars)",
            field=field,
        )
