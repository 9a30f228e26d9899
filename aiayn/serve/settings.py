"""The server's settings: where it listens, how it batches, and every limit a request meets.
One object, filled from `aiayn serve`'s flags (one per field, with the help below) and printed
at start-up."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _setting(default: object, help: str) -> object:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeSettings:
    """How `aiayn serve` listens, batches and limits requests; checked when made."""

    host: str = _setting("127.0.0.1", "interface to listen on (0.0.0.0: every interface)")
    port: int = _setting(8000, "port to listen on")
    max_batch_tokens: int = _setting(
        6000,
        "source tokens x beam per decoding batch; concurrent requests join a batch while it "
        "stays within this (1: each request alone)",
    )
    max_wait_ms: float = _setting(
        10.0, "how long the first request of a batch waits for others to join it"
    )
    max_queue: int = _setting(
        64, "requests waiting for the model; one more gets 503 with Retry-After at once"
    )
    max_body_bytes: int = _setting(
        1 << 20, "request body size; a larger body gets 413 before it is read in full"
    )
    max_text_chars: int = _setting(2000, "characters per sentence or prompt")
    max_sentences: int = _setting(64, "sentences per translation request")
    max_beam: int = _setting(8, "largest beam a request may ask for")
    max_output_tokens: int = _setting(
        512, "largest max_len_b, min_len and max_new_tokens a request may ask for"
    )
    max_len_a: float = _setting(4.0, "largest max_len_a (output tokens per source token)")
    max_temperature: float = _setting(10.0, "largest sampling temperature")
    shutdown_timeout_s: float = _setting(
        30.0, "on SIGTERM, how long requests in flight may take to finish"
    )

    def __post_init__(self) -> None:
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if setting.name not in ("host", "port", "max_wait_ms") and value <= 0:
                raise ValueError(f"{setting.name} must be positive, got {value}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    def summary(self) -> str:
        """One line per setting, as printed at start-up."""
        return "\n".join(
            f"  {setting.name:<20} {getattr(self, setting.name)}"
            for setting in dataclasses.fields(self)
        )
