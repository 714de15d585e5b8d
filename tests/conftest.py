"""Shared fixtures: a clean environment for every test, and the documented API fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.redact import SECRETS

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No COLLECTOR_* or CITRIX_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("COLLECTOR_", "CITRIX_")):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    """The process-wide secret registry starts empty: one test's short token garbles no other."""
    SECRETS.clear()
    yield
    SECRETS.clear()


def load_fixture(name: str) -> Any:
    """A documented API body from tests/fixtures (copied from shared/fixtures)."""
    return orjson.loads((FIXTURES / name).read_bytes())
