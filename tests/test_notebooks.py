"""Executes every notebook in colab/ headless in smoke mode (SMOKE_TEST = True), as CI does.

The `parameters`-tagged cell is rewritten to set SMOKE_TEST = True (papermill's convention, without
papermill); the kernel gets a private cache folder for the demo data and a single CPU device, like
a Colab CPU runtime. A failing cell fails the test with the cell's traceback. Run alone with
`pytest -m notebooks`.
"""
import base64
import os
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(name for name in os.listdir(os.path.join(REPO, "colab"))
                   if name.endswith(".ipynb"))
pytestmark = [pytest.mark.slow, pytest.mark.notebooks]


def execute_smoke(path, tmp_path, monkeypatch, smoke_cache):
  notebook = nbformat.read(path, as_version=4)
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1, f"{path}: needs exactly one cell tagged 'parameters'"
  source, count = re.subn(r"^SMOKE_TEST = False\b", "SMOKE_TEST = True", parameters[0].source,
                          flags=re.M)
  assert count == 1, f"{path}: the parameters cell must start with 'SMOKE_TEST = False'"
  parameters[0].source = source.replace("/tmp/cmpl_quickstart", str(tmp_path / "workdir"))
  monkeypatch.setenv("CMPL_JAX_CACHE", smoke_cache)   # the smoke dataset, built once per session
  monkeypatch.delenv("XLA_FLAGS", raising=False)   # one CPU device, as on a Colab CPU runtime
  start = time.time()
  NotebookClient(notebook, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  print(f"{os.path.basename(path)}: smoke run {time.time() - start:.0f} s")
  nbformat.write(notebook, str(tmp_path / os.path.basename(path)))   # for inspection
  return notebook


def outputs(notebook, mime):
  return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if mime in o.get("data", {})]


def text(notebook):
  return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))


def test_notebooks_are_the_expected_ones():
  assert NOTEBOOKS == ["quickstart.ipynb", "ucf101_small.ipynb"]


def test_quickstart_smoke(tmp_path, monkeypatch, smoke_cache):
  notebook = execute_smoke(os.path.join(REPO, "colab", "quickstart.ipynb"), tmp_path, monkeypatch,
                           smoke_cache)
  images = outputs(notebook, "image/png")
  assert len(images) == 2, "expected the training curves and the per-class accuracy plots"
  assert all(len(base64.b64decode(o["data"]["image/png"])) > 5_000 for o in images)
  printed = text(notebook)
  for tag in ("train/primary/mask_rate", "train/auxiliary/pseudo_label_acc"):
    assert tag in printed, f"curve {tag} missing from the plots"
  assert "checkpoint step 6" in printed
  assert re.search(r"^\s+\d\.\d{3}\s+\w+", printed, flags=re.M), "no top-k prediction printed"


def test_ucf101_small_smoke(tmp_path, monkeypatch, smoke_cache):
  notebook = execute_smoke(os.path.join(REPO, "colab", "ucf101_small.ipynb"), tmp_path,
                           monkeypatch, smoke_cache)
  tables = [o["data"]["text/markdown"] for o in outputs(notebook, "text/markdown")]
  assert len(tables) == 1
  rows = [line for line in tables[0].splitlines() if re.match(r"\| (cmpl|supervised) \|", line)]
  assert [r.split("|")[1:3] for r in rows] == [[" cmpl ", " primary "], [" cmpl ", " auxiliary "],
                                               [" supervised ", " primary "]]
  for row in rows:
    top1, top5, steps = (row.split("|")[i].strip() for i in (3, 4, 5))
    assert 0 <= float(top1) <= float(top5) <= 1 and steps == "4"
