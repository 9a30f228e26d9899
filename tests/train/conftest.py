"""Fixtures of tests/train: tiny corpora (tiny_data.py), config factories, one thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from aiayn.config import RunConfig
from tests.train.tiny_data import tiny_config, tiny_lm_config, write_corpus, write_text_corpus


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine busy threads make
    them crawl; subprocesses started by the tests inherit OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("text"))


@pytest.fixture
def make_config(corpus) -> Callable[..., RunConfig]:
    """`make_config(train={"max_steps": 5})`: a tiny translation config with changes."""
    return lambda **sections: tiny_config(corpus, **sections)


@pytest.fixture
def make_lm_config(text_corpus) -> Callable[..., RunConfig]:
    """`make_lm_config(...)`: a tiny character language-model config with changes."""
    return lambda **sections: tiny_lm_config(text_corpus, **sections)
