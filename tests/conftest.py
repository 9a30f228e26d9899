"""Fixtures shared by every test folder: the real data sets of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data root: `$AIAYN_DATA`, else `<repo>/../shared/data`; skips when neither exists."""
    if os.environ.get("AIAYN_DATA"):
        root = Path(os.environ["AIAYN_DATA"])
        if not (root / "multi30k").is_dir():
            pytest.skip(f"AIAYN_DATA={root} has no multi30k/ folder (see ../shared/data)")
        return root
    if not (SHARED_DATA / "multi30k").is_dir():
        pytest.skip(f"real data not found: set AIAYN_DATA (no {SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one torch thread than on several contending for a shared CPU
    (by orders of magnitude on a loaded 2-core machine). Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
