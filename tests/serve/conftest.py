"""A real server on 127.0.0.1 for the tests of aiayn/serve: uvicorn in a thread of the test
process (so tests can reach the app's worker), over tiny runs made by `train`."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason="the server needs the serve extra: pip install 'aiayn[serve]'"
)
import uvicorn  # noqa: E402

import aiayn  # noqa: E402
from aiayn.serve.app import create_app  # noqa: E402
from aiayn.serve.settings import ServeSettings  # noqa: E402
from tests.tiny_runs import tiny_run  # noqa: E402


@pytest.fixture(scope="package")
def runs(tmp_path_factory) -> dict[str, Path]:
    return {
        "mt": tiny_run(tmp_path_factory.mktemp("mt"), translation=True),
        "lm": tiny_run(tmp_path_factory.mktemp("lm"), translation=False),
    }


@pytest.fixture(scope="package")
def models(runs) -> dict[str, aiayn.TextModel]:
    return {name: aiayn.load(run) for name, run in runs.items()}


class Server:
    """A running app: its base URL and the app (whose `state.worker` tests may block)."""

    def __init__(self, url: str, app) -> None:
        self.url, self.app = url, app

    @property
    def worker(self):
        return self.app.state.worker


@contextmanager
def serving(models: dict, settings: ServeSettings) -> Iterator[Server]:
    """`create_app(models, settings)` served by uvicorn on a free port until the block ends."""
    app = create_app(models, settings)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    # log_config=None: uvicorn leaves logging alone, so its records reach pytest's caplog
    config = uvicorn.Config(app, log_config=None, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Server(f"http://127.0.0.1:{listener.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def server_sent_events(body: bytes) -> list[tuple[str, dict]]:
    """(event, data) of each `event: NAME\ndata: JSON` block of a stream's body."""
    blocks = [block for block in body.decode().split("\n\n") if block]
    return [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in blocks
    ]
