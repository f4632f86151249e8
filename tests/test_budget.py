"""The budget study's report: evaluation histories -> curves, the flat point, budget.md and budget.png."""

from __future__ import annotations

import json
import os

from dct_jax.experiments import budget, table3


def _report(step: int, pve: float) -> dict:
    return {"checkpoint_step": step, "split": "test", "metrics": {"pve_mm": pve},
            "baseline_mean_params": {"pve_mm": 264.7}}


def test_curves_flat_point_and_report(tmp_path):
    output = str(tmp_path)
    cell = table3.Cell("image", "3d")
    workdir = os.path.join(output, "cells", cell.name)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "eval_test_history.jsonl"), "w") as f:
        # A resumed run evaluated step 1000 twice: the last evaluation counts.
        for step, pve in ((500, 210.0), (1000, 999.0), (1000, 190.0), (1500, 186.0), (2000, 185.0)):
            f.write(json.dumps(_report(step, pve)) + "\n")
    os.makedirs(os.path.join(output, "pretrain", "image"))
    with open(os.path.join(output, "pretrain", "image", "eval_test.json"), "w") as f:
        json.dump(_report(100, 270.0), f)

    data = budget.curves(output, [cell, table3.Cell("image", "dense")])
    assert data[cell] == {0: 270.0, 500: 210.0, 1000: 190.0, 1500: 186.0, 2000: 185.0}
    assert data[table3.Cell("image", "dense")] == {}  # not trained yet
    # Within 2% of the final 185.0 from step 1500 (186 - 185 <= 3.72), not 1000 (5 > 3.8).
    assert budget.flat_from(data[cell], 0.02) == 1500
    assert budget.flat_from({0: 100.0}, 0.02) is None

    budget.write_outputs(output, data, baseline=264.7, tolerance=0.02, description="A study.")
    text = (tmp_path / "budget.md").read_text()
    assert "| 1000 | 190.0 | — |" in text and "from step 1500" in text and "264.7" in text
    assert (tmp_path / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
