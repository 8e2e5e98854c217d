"""Shared test fixtures and paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "clixml"
SAMPLES = ROOT / "samples"


@pytest.fixture
def corpus_dir() -> Path:
    """The shared real-CLIXML corpus beside the checkout; skip when absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"real CLIXML corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def sandbox() -> Iterator[Any]:
    """A small emulated Exchange endpoint (30 mailboxes, seed 1) on 127.0.0.1 for remote
    tests; connect with sandbox.url / .username / .password. After the test it must have
    recorded no internal error."""
    from bridge.sandbox import Sandbox

    with Sandbox(mailboxes=30, seed=1) as endpoint:
        yield endpoint
    assert endpoint.internal_errors == []


@pytest.fixture(autouse=True)
def _private_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                     ) -> None:
    """Runs under test record their history in a temporary file, never the user's own."""
    folder = tmp_path_factory.mktemp("history")
    monkeypatch.setenv("PSBRIDGE_HISTORY", str(folder / "history.sqlite"))
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
