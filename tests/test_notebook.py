"""The quickstart notebook runs top to bottom, headless, with the real local LM."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.integration
def test_quickstart_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from fermi_dspy.data import DataError, default_data_dir
    from fermi_dspy.lm.models import DEFAULT_MODEL, cached_model_path

    try:
        default_data_dir()
    except DataError as exc:
        pytest.skip(f"real data not available: {exc}")
    if cached_model_path(DEFAULT_MODEL) is None:
        pytest.skip(f"{DEFAULT_MODEL} is not fetched: run `fermi-dspy models fetch {DEFAULT_MODEL}` (install.sh does)")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "saved and reloaded" in outputs
    assert "stop reason:" in outputs
