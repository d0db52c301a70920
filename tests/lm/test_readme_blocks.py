"""The README's runnable blocks run as written (with the smallest embedded model standing in for the default one)."""

import re
from pathlib import Path

import pytest

from fermi_dspy.data import DataNotFoundError, load_users
from tests.lm.conftest import SMALLEST_MODEL

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(name: str) -> str:
    """The ```python block that follows `<!-- readme-test: name -->` in the README."""
    found = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"README.md has no block marked <!-- readme-test: {name} -->"
    return found.group(1)


def test_the_composition_block_runs_and_keeps_the_personalization(smallest_model_path, monkeypatch, capsys):
    try:
        load_users("panelists")
    except DataNotFoundError as exc:
        pytest.skip(f"the real data is not beside the checkout: {exc}")
    monkeypatch.setenv("FERMI_LOCAL_MODEL", SMALLEST_MODEL)  # fetched and verified by the fixture
    namespace: dict = {"__name__": "readme"}
    exec(compile(readme_block("compose"), "README.md:compose", "exec"), namespace)  # its own asserts must hold
    assert "personal.program.predict" in capsys.readouterr().out  # the personalized predictor, by its real name
    assert namespace["pipeline"].personal is not namespace["personal"]  # the optimizer compiled a copy
