"""The HTTP API on a real server (uvicorn on 127.0.0.1) over tiny runs: every endpoint equals
the Python API, every limit and malformed request gets its status and a JSON error naming the
field (never a 500, never a traceback in the log), concurrent translations are batched with
outputs equal to one-at-a-time decoding, a full queue answers 503 at once, and the event loop
stays free while the model works."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import torch

from aiayn.serve import load_models
from aiayn.serve.requests import ApiError, parse_json
from aiayn.serve.settings import ServeSettings
from aiayn.serve.worker import Job, ModelWorker
from tests.serve.conftest import server_sent_events, serving

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ServeSettings(
    max_body_bytes=4096,
    max_text_chars=80,
    max_sentences=4,
    max_beam=4,
    max_output_tokens=50,
    max_len_a=2.0,
    max_temperature=2.0,
    max_queue=2,
    max_wait_ms=0,
)


@pytest.fixture(scope="module")
def server(models):
    with serving(models, SETTINGS) as running:
        yield running


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@contextmanager
def blocked(worker: ModelWorker) -> Iterator[None]:
    """Keep the model worker busy (on a job that waits) until the block ends."""
    gate, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        gate.wait(60)

    worker.submit(Job(call=hold))
    assert running.wait(10)
    try:
        yield
    finally:
        gate.set()


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def errors_logged(caplog) -> list[logging.LogRecord]:
    """The server's log records of errors or exceptions so far (uvicorn's and ours)."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_health_and_the_models_served(client, models):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["lm", "mt"]
    assert health["waiting"] == 0 and health["worker"].keys() == {
        "requests",
        "batches",
        "largest_batch",
    }
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed.keys() == {"mt", "lm"}
    mt, lm = listed["mt"], listed["lm"]
    assert (mt["kind"], lm["kind"]) == ("translation", "language-model")
    assert (mt["source_language"], mt["target_language"]) == ("de", "en")
    assert mt["parameters"] == sum(p.numel() for p in models["mt"].model.parameters())
    assert mt["max_input_tokens"] == 39 and lm["max_input_tokens"] == 32  # positions 40 and 32
    assert mt["precision"] == "fp32" and mt["device"] == "cpu"
    assert mt["decode"]["beam"] == models["mt"].config.decode.beam
    assert mt["heads"] == 2 and mt["decoder_layers"] == 2


def test_translations_equal_the_python_api(client, models):
    texts = ["der hund läuft", "katze", "", "rot blau haus im garten"]
    reply = client.post("/v1/translate", json={"model": "mt", "texts": texts, "beam": 2}).json()
    assert reply["translations"] == models["mt"].translate(texts, beam=2)
    assert reply["truncated"] == [False] * 4 and reply["model"] == "mt"
    one = client.post("/v1/translate", json={"text": "katze", "model": "mt"}).json()
    assert one["translations"] == models["mt"].translate(["katze"])  # the run's beam


def test_models_loaded_with_the_decoder_step_compiled_serve_the_same_translations(runs, models):
    compiled = load_models(runs, compile=True)
    assert compiled["mt"].compiled is not None and compiled["lm"].compiled is None
    texts = ["der hund läuft", "katze", "rot blau haus im garten"]
    with (
        serving(compiled, SETTINGS) as server,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):
        for beam in (1, 2):
            body = {"model": "mt", "texts": texts, "beam": beam}
            reply = client.post("/v1/translate", json=body).json()
            assert reply["translations"] == models["mt"].translate(texts, beam=beam)
        # dynamo raised the interpreter's recursion limit while compiling: the depth bound holds
        deep = post(client, "/v1/translate", b"[" * 1500 + b"]" * 1500)
        assert deep.status_code == 400 and "nested deeper than" in deep.json()["error"]


def test_json_nesting_is_bounded_whatever_the_recursion_limit():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # as torch.compile leaves it
    try:
        with pytest.raises(ApiError, match="nested deeper than 64 levels") as refused:
            parse_json(b"[" * 1500 + b"]" * 1500)
        assert refused.value.status == 400
    finally:
        sys.setrecursionlimit(limit)
    assert parse_json(b"[" * 64 + b"]" * 64) is not None  # at the bound: parsed
    text = '[{"x": "' + "[" * 100 + '\\" {' + '"}]'  # brackets and an escaped quote in a string
    assert parse_json(text.encode()) == [{"x": "[" * 100 + '" {'}]


def test_an_input_longer_than_the_positions_is_cut_and_says_so(client, models):
    long = "der hund läuft im garten " * 3  # 75 characters: 75 tokens of a 40-position model
    reply = client.post("/v1/translate", json={"model": "mt", "texts": [long, "katze"]}).json()
    assert reply["truncated"] == [True, False]
    with pytest.warns(UserWarning, match="positions"):
        assert reply["translations"] == models["mt"].translate([long, "katze"])


def test_attention_of_one_sentence_equals_the_python_api(client, models):
    reply = client.post(
        "/v1/translate", json={"model": "mt", "text": "der hund", "beam": 1, "attention": True}
    ).json()
    maps = models["mt"].attention("der hund", target=reply["translations"][0])
    got = reply["attention"]
    assert got["source_tokens"] == maps.source_pieces and got["output_tokens"] == maps.output_pieces
    assert got["input_tokens"] == maps.input_pieces
    assert (got["layers"], got["heads"]) == (2, 2)
    for kind in ("cross", "encoder_self", "decoder_self"):
        weights = torch.tensor(got[kind])
        assert weights.shape == getattr(maps, kind).shape
        torch.testing.assert_close(weights, getattr(maps, kind), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-3, rtol=0
        )
    cross = torch.tensor(got["cross"])
    assert cross.shape[-2:] == (len(got["output_tokens"]), len(got["source_tokens"]))


def test_generation_plain_and_streamed_equals_the_python_api(client, models):
    body = {"model": "lm", "prompt": "der hund ", "max_new_tokens": 20, "seed": 3}
    expected = models["lm"].generate("der hund ", max_new_tokens=20, seed=3)
    assert client.post("/v1/generate", json=body).json() == {"model": "lm", "text": expected}
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        parsed = server_sent_events(response.read())
    assert [name for name, _ in parsed] == ["token"] * (len(parsed) - 1) + ["done"]
    assert len(parsed) > 2  # token by token, not all at once
    assert "".join(data["text"] for name, data in parsed if name == "token") == expected
    assert parsed[-1][1] == {"model": "lm", "text": expected}


def test_a_run_default_past_a_limit_is_brought_down_to_it(client, models):
    assert models["lm"].config.decode.max_new_tokens == 200  # the server allows 50
    reply = client.post("/v1/generate", json={"model": "lm", "prompt": "der ", "temperature": 0})
    expected = models["lm"].generate("der ", temperature=0, max_new_tokens=50)
    assert reply.json()["text"] == expected
    assert len(models["lm"].tokenizer.encode(expected)) <= 50


def post(client: httpx.Client, path: str, body: object, content_type: str = "application/json"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"Content-Type": content_type})


LONG = "x" * 81
REFUSALS = [
    # (path, body, status, field, words of the message)
    ("/v1/translate", {"model": "mt", "text": "a", "beam": 5}, 422, "beam", "at most 4"),
    ("/v1/translate", {"model": "mt", "text": "a", "beam": 0}, 422, "beam", "at least 1"),
    ("/v1/translate", {"model": "mt", "texts": ["a"] * 5}, 422, "texts", "limit of 4"),
    ("/v1/translate", {"model": "mt", "texts": []}, 422, "texts", "at least one"),
    ("/v1/translate", {"model": "mt", "text": LONG}, 422, "text", "limit of 80"),
    ("/v1/translate", {"model": "mt", "texts": ["a", LONG]}, 422, "texts.1", "limit of 80"),
    (
        "/v1/translate",
        {"model": "mt", "text": "a", "max_len_b": 51},
        422,
        "max_len_b",
        "at most 50",
    ),
    (
        "/v1/translate",
        {"model": "mt", "text": "a", "max_len_a": 2.5},
        422,
        "max_len_a",
        "at most 2.0",
    ),
    ("/v1/translate", {"model": "mt", "text": "a", "min_len": -1}, 422, "min_len", "at least 0"),
    ("/v1/translate", {"model": "mt", "text": "a", "alpha": -0.5}, 422, "alpha", "at least 0"),
    ("/v1/translate", {"model": "mt", "text": "a", "beam": "4"}, 422, "beam", "integer"),
    ("/v1/translate", {"model": "mt", "text": "a", "beam": 2.5}, 422, "beam", "integer"),
    ("/v1/translate", {"model": "mt", "text": "a", "beems": 2}, 422, "beems", "unknown field"),
    ("/v1/translate", {"model": "mt", "text": "a", "texts": ["b"]}, 422, "text", "either"),
    ("/v1/translate", {"model": "mt"}, 422, "text", "either"),
    (
        "/v1/translate",
        {"model": "mt", "texts": ["a", "b"], "attention": True},
        422,
        "attention",
        "one sentence",
    ),
    ("/v1/translate", {"model": "mt", "texts": [1]}, 422, "texts.0", "string"),
    ("/v1/translate", {"text": "a"}, 422, "model", "name a model"),
    ("/v1/translate", {"model": "../mt", "text": "a"}, 404, "model", "no model '../mt'"),
    ("/v1/translate", {"model": "lm", "text": "a"}, 422, "model", "/v1/generate"),
    ("/v1/generate", {"model": "mt", "prompt": "a"}, 422, "model", "/v1/translate"),
    ("/v1/generate", {"model": "lm", "prompt": LONG}, 422, "prompt", "limit of 80"),
    ("/v1/generate", {"model": "lm", "max_new_tokens": 51}, 422, "max_new_tokens", "at most 50"),
    ("/v1/generate", {"model": "lm", "max_new_tokens": 0}, 422, "max_new_tokens", "at least 1"),
    ("/v1/generate", {"model": "lm", "temperature": 2.5}, 422, "temperature", "at most 2.0"),
    ("/v1/generate", {"model": "lm", "temperature": -1}, 422, "temperature", "at least 0"),
    ("/v1/generate", {"model": "lm", "top_p": 0}, 422, "top_p", "more than 0"),
    ("/v1/generate", {"model": "lm", "top_p": 1.5}, 422, "top_p", "at most 1"),
    ("/v1/generate", {"model": "lm", "top_k": -1}, 422, "top_k", "at least 0"),
    ("/v1/generate", {"model": "lm", "top_k": 10**6}, 422, "top_k", "at most 25"),
    ("/v1/generate", {"model": "lm", "seed": -1}, 422, "seed", "at least 0"),
    ("/v1/generate", {"model": "lm", "stream": "yes"}, 422, "stream", "boolean"),
    ("/v1/translate", [{"model": "mt"}], 422, None, "JSON object"),
    ("/v1/translate", b'{"model": "mt", "text": "a"', 400, None, "malformed JSON: Expecting"),
    ("/v1/translate", b'{"model": "mt", "text": "a", "alpha": NaN}', 400, None, "NaN is not JSON"),
    ("/v1/translate", b"[" * 1500 + b"]" * 1500, 400, None, "malformed JSON"),
    ("/v1/translate", b'{"text": "caf\xe9"}', 400, None, "not UTF-8: byte 13"),
    ("/v1/translate", b"", 400, None, "malformed JSON"),
    ("/v1/translate", {"model": "mt", "text": "a\ud800"}, 422, None, "lone surrogate"),
]


@pytest.mark.parametrize(("path", "body", "status", "field", "words"), REFUSALS)
def test_a_bad_request_is_refused_naming_the_field_and_the_limit(
    client, caplog, path, body, status, field, words
):
    if isinstance(body, dict) and "a\ud800" in body.values():  # json.dumps escapes it: \ud800
        body = b'{"model": "mt", "text": "a\\ud800"}'
    with caplog.at_level(logging.INFO):
        response = post(client, path, body)
        time.sleep(0.1)  # an exception is logged after the answer is sent
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status"] == status and words in error["error"], error
    assert error.get("field") == field
    assert not errors_logged(caplog)


@pytest.mark.parametrize(
    ("content_type", "words"),
    [("text/plain", "application/json"), ("", "application/json"),
     ("application/json; charset=latin-1", "UTF-8")],
)  # fmt: skip
def test_a_body_that_is_not_json_is_415(client, content_type, words):
    response = post(client, "/v1/translate", {"model": "mt", "text": "a"}, content_type)
    assert response.status_code == 415 and words in response.json()["error"]


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/v2/nothing").json() == {"error": "Not Found", "status": 404}
    response = client.get("/v1/translate")
    assert response.status_code == 405 and response.json()["status"] == 405


def test_a_fault_of_ours_is_a_json_500_and_logged_with_its_traceback(
    client, models, caplog, monkeypatch
):
    # the counterpart of the test above: the log it reads does show a traceback when one occurs
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models["mt"], "translate", broken)
    with caplog.at_level(logging.INFO):
        response = client.post("/v1/translate", json={"model": "mt", "text": "katze"})
        assert response.status_code == 500
        assert response.json() == {"error": "internal error", "status": 500}
        wait_until(lambda: errors_logged(caplog))  # logged after the answer is sent
    assert "a bug" in caplog.text and "Traceback" in caplog.text


def raw_request(url: str, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request by hand (headers, then body parts) and read what comes back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head)
        for part in body_parts:
            connection.sendall(part)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def test_a_large_body_is_413_before_it_is_read(server):
    # Content-Length says 10 MB; 10 bytes are sent and the answer comes without the rest.
    head = (
        b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    reply = raw_request(server.url, head, [b'{"text": "'])
    assert reply.startswith(b"HTTP/1.1 413") and b"max_body_bytes" in reply


def test_a_large_chunked_body_is_413_while_it_streams(server):
    # No Content-Length: chunks past the 4096-byte limit, and the body never ends.
    head = (
        b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    reply = raw_request(server.url, head, [chunk] * 5)
    assert reply.startswith(b"HTTP/1.1 413") and b"max_body_bytes" in reply


def test_concurrent_translations_are_batched_and_equal_one_at_a_time(models):
    texts = ["der hund läuft", "katze", "rot blau haus im garten", "im garten", "der", "blau",
             "haus haus", "hund im haus", "der hund", "katze rot", "garten", "läuft"]  # fmt: skip
    beams = [1 if i % 3 else 2 for i in range(len(texts))]  # two groups of decoding options
    settings = ServeSettings(max_queue=64, max_wait_ms=0)
    with (
        serving(models, settings) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        with ThreadPoolExecutor(len(texts)) as pool, blocked(server.worker):
            # every request waits behind the busy worker, so the next batches gather them all
            futures = [
                pool.submit(
                    client.post, "/v1/translate", json={"model": "mt", "text": t, "beam": b}
                )
                for t, b in zip(texts, beams, strict=True)
            ]
            wait_until(lambda: server.worker.waiting == len(texts))
        replies = [f.result().json()["translations"][0] for f in futures]
        stats = server.worker.stats
    alone = [models["mt"].translate([t], beam=b)[0] for t, b in zip(texts, beams, strict=True)]
    assert replies == alone
    # the blocking job, then one batch per group of options: 8 with beam 1, 4 with beam 2
    assert (stats.batches, stats.largest_batch, stats.requests) == (3, 8, 13)


def test_a_full_queue_answers_503_at_once_and_the_queued_requests_finish(server, client):
    with ThreadPoolExecutor(2) as pool:
        with blocked(server.worker):
            queued = [
                pool.submit(client.post, "/v1/translate", json={"model": "mt", "text": "katze"})
                for _ in range(2)
            ]
            wait_until(lambda: server.worker.waiting == 2)
            start = time.monotonic()
            response = client.post("/v1/translate", json={"model": "mt", "text": "hund"})
            assert time.monotonic() - start < 5
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert "max_queue" in response.json()["error"]
            streamed = client.post("/v1/generate", json={"model": "lm", "stream": True})
            assert streamed.status_code == 503  # a stream is queued before it starts
        assert [f.result().status_code for f in queued] == [200, 200]


def test_the_event_loop_answers_while_the_model_works(server, client):
    with blocked(server.worker):
        start = time.monotonic()
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/v1/models").status_code == 200
        assert client.get("/").status_code == 200
        assert time.monotonic() - start < 5


def test_the_page_is_served_with_a_policy_against_injected_scripts(client):
    page = client.get("/")
    assert page.status_code == 200 and "<textarea" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    script = client.get("/static/app.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
