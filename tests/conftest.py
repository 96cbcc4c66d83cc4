"""Shared fixtures. Every test starts with no BULKCAPTURE_* variable from the caller's shell."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red CI must be reproducible); locally hypothesis
# explores new ones on every run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith("BULKCAPTURE_"):
            monkeypatch.delenv(name)
    # The default ledger lives under XDG_STATE_HOME: never the developer's real one in a test.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def sandbox() -> Iterator[Callable[..., Any]]:
    """A factory of in-thread sandboxes, all stopped at teardown.

    ``sb = sandbox(auto_authorize=True, clock=FakeClock())`` takes ``SandboxConfig`` fields and
    returns a handle with ``.url``, ``.state``, ``.username``, ``.password`` (and ``.auth``).
    """
    from etl.sandbox import SandboxConfig, run_sandbox_in_thread

    with contextlib.ExitStack() as stack:

        def start(**config: Any) -> Any:
            return stack.enter_context(run_sandbox_in_thread(SandboxConfig(**config)))

        yield start
