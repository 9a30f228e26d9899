"""Decoding tests run tiny models one step at a time: one thread is faster than several
contending for a shared CPU (by two orders of magnitude on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
