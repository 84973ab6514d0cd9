"""The teaching notebooks run from top to bottom and draw their figures (so they never rot).

They are executed with nbclient in this interpreter (the venv's python, through a throw-away kernelspec, see
notebooks/run_notebooks.py), in fast mode (RTT_NB_FAST=1: no PNG export, so the committed docs/figures/ are never
rewritten). They read only the small saved example data in notebooks/data/ (no model), ~1 min for both on 2 cores.
"""
import sys
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NB_DIR))

import run_notebooks  # noqa: E402

MIN_FIGURES = {"token_advantages.ipynb": 8, "group_normalization.ipynb": 4}


@pytest.mark.parametrize("name", run_notebooks.NOTEBOOKS)
def test_notebook_runs_and_draws(name):
    nb = run_notebooks.execute(NB_DIR / name, fast=True)      # raises CellExecutionError on a failing cell
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors
    assert run_notebooks.images(nb) >= MIN_FIGURES[name]


@pytest.mark.parametrize("name", run_notebooks.NOTEBOOKS)
def test_committed_notebook_has_outputs(name):
    import nbformat
    nb = nbformat.read(NB_DIR / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "save the notebook executed (run_notebooks.py)"
    assert run_notebooks.images(nb) >= MIN_FIGURES[name]
    assert (NB_DIR / name).stat().st_size < 1_000_000


def test_example_data_is_small():
    files = list((NB_DIR / "data").iterdir())
    assert {f.name for f in files} >= {"groups.pt", "token_example.json"}
    assert sum(f.stat().st_size for f in files) < 1_000_000
