"""notebooks/results.ipynb: stored without outputs, and executes on a small finished store without errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from decathlon.domains import DECATHLON_COLUMNS
from tests.test_report import BLOCKS, job_row, write_fake_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "results.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"stored output in cell:\n{cell.source}"


def write_store(out: Path) -> None:
    """Two methods over the ten Decathlon domains (train->val), SpotTune with policy statistics."""
    for i, d in enumerate(DECATHLON_COLUMNS):
        write_fake_run(out, job_row("decathlon", "finetune", d, 0, 50.0 + i, protocol="train->val"))
        for seed in (0, 1):
            policy = {"block_fraction": [b / BLOCKS for b in range(BLOCKS)],
                      "histogram": [1.0 / (BLOCKS + 1)] * (BLOCKS + 1),
                      "per_class": {str(k): [float(k % 2)] * BLOCKS for k in range(4)}}
            row = job_row("decathlon", "spottune", d, seed, 52.0 + i + seed, protocol="train->val")
            write_fake_run(out, row, policy=policy)


@pytest.mark.slow
def test_notebook_executes_on_a_finished_store(tmp_path, monkeypatch):
    write_store(tmp_path)
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # outputs are cleared on disk; clear again so nothing stale can hide an error
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    texts = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert f"{tmp_path.resolve()}: 30 finished jobs" in texts
    assert "| SpotTune |" in texts and "| Fine-tuning |" in texts and "Visual Decathlon" in texts
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # blocks, fine-tuned blocks per image, per-class usage of SpotTune on every routed domain
    assert len(images) == 2 + len(DECATHLON_COLUMNS)
