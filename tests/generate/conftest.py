"""Decoding tests run tiny models one step at a time: one thread is faster than several
contending for a shared CPU (by two orders of magnitude on a loaded 2-core machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every decoding test runs under tests/conftest.py's `one_thread`."""
