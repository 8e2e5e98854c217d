"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(autouse=True)
def _private_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                     ) -> None:
    """Runs under test record their history in a temporary file, never the user's own."""
    folder = tmp_path_factory.mktemp("history")
    monkeypatch.setenv("PSBRIDGE_HISTORY", str(folder / "history.sqlite"))
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
