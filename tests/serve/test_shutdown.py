"""`aiayn serve` as a process: it prints its settings, and on SIGTERM stops accepting, lets the
request in flight finish, and exits 0, within `--shutdown-timeout-s` even when a request would
take longer; bad command lines are one-line errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from aiayn.cli import main
from aiayn.serve import parse_model_specs
from benchmarks.serve import start_server


def start(run_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`aiayn serve run_dir flags` on a free port, once it answers /health."""
    return start_server(str(run_dir), list(flags), threads=1)


def in_background(call) -> dict:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = call()
        except Exception as error:
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    result["thread"] = thread
    return result


def test_sigterm_finishes_the_request_in_flight_then_exits_0(runs, models):
    # The request waits 3 s for others to join its batch: it is in flight when SIGTERM comes.
    process, url = start(runs["mt"], "--max-wait-ms", "3000")
    try:
        body = {"text": "der hund läuft", "beam": 2}
        flight = in_background(lambda: httpx.post(f"{url}/v1/translate", json=body, timeout=60))
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{url}/health", timeout=5)
        flight["thread"].join(60)
        assert process.wait(60) == 0
    finally:
        process.kill()
    err = process.communicate()[1].decode()
    response = flight["value"]
    assert response.status_code == 200, response.text
    assert response.json()["translations"] == models["mt"].translate(["der hund läuft"], beam=2)
    assert "max_wait_ms          3000.0" in err  # the settings, printed at start-up
    assert "Traceback" not in err


def test_sigterm_waits_no_longer_than_the_shutdown_timeout(runs):
    process, url = start(runs["mt"], "--max-wait-ms", "60000", "--shutdown-timeout-s", "1")
    try:
        body = {"text": "a"}
        flight = in_background(lambda: httpx.post(f"{url}/v1/translate", json=body, timeout=90))
        time.sleep(1.0)
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert time.monotonic() - stopped < 20  # not the minute the request would wait
        flight["thread"].join(60)
    finally:
        process.kill()
    assert "Traceback" not in process.communicate()[1].decode()
    # the request cut off is told so (503), unless the connection closed first; never a 500
    if "value" in flight:
        assert flight["value"].status_code == 503, flight["value"].text
        assert "stopped before this request was done" in flight["value"].json()["error"]
    else:
        assert isinstance(flight["error"], httpx.TransportError)


@pytest.mark.parametrize(
    ("models", "words"),
    [
        (["a=x", "a=y"], "two models named 'a'"),
        (["a/b=x"], "a model name may hold"),
        (["nowhere/run"], "nowhere/run"),
    ],
)
def test_a_bad_command_line_is_one_line(capsys, models, words):
    with pytest.raises(SystemExit) as stop:
        main(["serve", *models])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_port_in_use_is_one_line_before_any_model_loads(capsys, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stop:
            main(["serve", str(tmp_path / "no-run-here"), "--port", str(port)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert err.count("\n") == 1


def test_a_run_is_named_after_its_folder_unless_named():
    assert parse_model_specs(["runs/m30k", "opus=imported/opus-mt"]) == {
        "m30k": Path("runs/m30k"),
        "opus": Path("imported/opus-mt"),
    }
