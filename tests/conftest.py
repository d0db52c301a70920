"""Shared test setup: offline LiteLLM settings, no disk cache, and scripted LMs for Fermi."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import pytest

from tests.scripted import topic_examples


@pytest.fixture(autouse=True, scope="session")
def _no_disk_cache():
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield


@pytest.fixture
def examples():
    """Synthetic topic questions (not real data): the person supports guns and taxes, not the rest."""
    return topic_examples(["guns", "taxes", "unions", "nukes", "zoos", "polls"] * 2, supported={"guns", "taxes"})
