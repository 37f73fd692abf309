"""Fixtures for the KRL tests."""

from __future__ import annotations

import pytest
from krl_fakes import FakeContext


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()
