"""Shared fixtures. Every test starts with no BULKCAPTURE_* variable from the caller's shell."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith("BULKCAPTURE_"):
            monkeypatch.delenv(name)
    # The default ledger lives under XDG_STATE_HOME: never the developer's real one in a test.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
