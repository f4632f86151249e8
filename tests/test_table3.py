"""The Table 3 runner: a 2-cell tiny grid writes the table and the picture, and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dct_jax.experiments import table3

_TINY = {"data.image_size": 32, "data.num_dense": 20, "data.threads": 0, "batch_size": 4,
         "eval_batch_size": 4, "model.depth": 10, "model.width": 8, "model.feature_dim": 32,
         "model.hidden_dim": 32, "build_dataset_if_missing": False, "log_every_steps": 2}
_CELLS = [table3.Cell("iuv", "3d_dense"), table3.Cell("image_seg", "2d")]


def _mtimes(directory: str) -> dict[str, float]:
    return {os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
            for root, _, names in os.walk(directory) for name in names}


def test_parse_cells():
    assert table3.parse_cells(None) == table3.all_cells()
    assert len(table3.all_cells()) == 25
    assert table3.parse_cells("iuv:3d_dense, image_seg:2d") == _CELLS
    with pytest.raises(ValueError, match="INPUT:SUPERVISION"):
        table3.parse_cells("iuv-3d")
    with pytest.raises(ValueError, match="SUPERVISION one of"):
        table3.parse_cells("iuv:4d")


def test_cell_config_sets_input_supervision_and_overrides():
    config = table3.cell_config(table3.Cell("image_seg", "dense"), steps=7, overrides={"model.width": 8},
                                init_from="/pretrained")
    assert config.model.inputs == "image_seg"
    assert config.model.aux_depth == config.model.depth
    assert config.supervision == "dense" and config.init_from == "/pretrained"
    assert config.train_mixture == "synthetic:train=1[2d,dense],studio:train=1[2d,3d]"
    assert config.loss.smpl == 10 and config.loss.joints3d == 0 and config.loss.dense == 10
    assert config.num_train_steps == 7 and config.model.width == 8
    assert config.data.image_size == table3.DEFAULT_IMAGE_SIZE
    sparse = table3.cell_config(table3.Cell("image", "2d"), steps=7, wild_2d="2d=lsp14,2d_noise=1")
    assert sparse.train_mixture == "synthetic:train=1[2d=lsp14,2d_noise=1],studio:train=1[2d,3d]"
    assert "the lsp14 subset, with annotator-like noise of 1x" in table3.protocol_lines(sparse, 0)[2]
    with pytest.raises(ValueError, match="wild_2d must be the 2d label"):
        table3.cell_config(table3.Cell("image", "2d"), steps=7, wild_2d="dense")
    pretrain = table3.pretrain_config("image_seg", steps=5, image_size=64)
    assert pretrain.train_mixture == "studio:train=1[2d,3d]" and pretrain.dataset == "synthetic"
    assert (pretrain.loss.smpl, pretrain.loss.keypoint, pretrain.loss.dense) == (10, 10, 0)
    assert pretrain.data.image_size == 64 and pretrain.num_train_steps == 5


def test_claims_on_hand_built_results():
    def report(pve):
        return {"metrics": {"pve_mm": pve}}

    # The paper's own table passes every check, and the claims' numbers are the paper's.
    paper = {table3.Cell(i, s): report(v) for (i, s), v in table3.PAPER_PVE.items()}
    lines = "\n".join(table3.ranking_checks(paper))
    assert "does not hold" not in lines and lines.count("**holds**") == 9
    assert "reaches 92.5% of the performance of 3D & 2D" in lines
    assert "improves PVE by 2.9%" in lines and "Image only by 32.2%" in lines

    pve = {"3d_dense": 100.0, "3d20_dense": 104.0, "3d": 105.0, "dense": 120.0, "2d": 200.0}
    results = {table3.Cell("image", s): report(v) for s, v in pve.items()}
    results.update({table3.Cell("iuv", s): report(v - 10) for s, v in pve.items()})
    results[table3.Cell("iuv", "3d")] = report(300.0)  # 3D & 2D now the worst for IUV
    results[table3.Cell("image_iuv", "2d")] = report(150.0)  # auxiliary input helps 2D only by 25%
    lines = "\n".join(table3.ranking_checks(results))
    assert "Image only: Dense & 2D reaches 87.5% of the performance of 3D & 2D" in lines
    assert "criterion: at least 87%" in lines.split("\n")[0] and "**holds**" in lines.split("\n")[0]
    assert "Image only: 2D only is the worst supervision (paper: in every row): **holds** (200.0 mm" in lines
    assert "IUV only: 2D only is the worst supervision (paper: in every row): **does not hold** (190.0 mm; " \
           "worst: 3D & 2D)" in lines
    assert "20% 3D & Dense & 2D is -1.0% against 3D & 2D" in lines
    assert "auxiliary inputs improve PVE by 25.0% on average" in lines
    assert "Image only by 40.0% (paper 32%): **does not hold**" in lines  # 40% < 3 x 25%
    # Means: image 125.8, iuv (90+94+300+110+190)/5 = 156.8.
    assert "Best input by mean PVE over the five supervisions: Image only (125.8 mm" in lines


def test_two_cell_grid_writes_table_and_picture_and_resumes(tiny_data_dir, tmp_path, monkeypatch):
    from dct_jax import distributed

    output = str(tmp_path / "t3")
    overrides = dict(_TINY, data_dir=tiny_data_dir)
    # Pretraining is killed (SIGTERM) after its first step: the runner stops; re-running resumes it.
    # (should_stop is asked once before the first step, then after each step.)
    calls = []
    monkeypatch.setattr(distributed.Preemption, "should_stop", lambda self: not calls.append(1) and len(calls) == 2)
    stopped = table3.run(output, steps=2, cells=_CELLS, overrides=overrides, pretrain_steps=2, image_size=32)
    assert stopped == {} and not os.path.exists(os.path.join(output, "cells", _CELLS[0].name))
    pretrain_dir = os.path.join(output, "pretrain", _CELLS[0].inputs)
    assert os.listdir(os.path.join(pretrain_dir, "checkpoints")) == ["1"]
    monkeypatch.undo()
    results = table3.run(output, steps=2, cells=_CELLS, overrides=overrides, pretrain_steps=2, image_size=32)
    assert set(results) == set(_CELLS)
    with open(os.path.join(pretrain_dir, "eval_test.json")) as f:
        assert json.load(f)["checkpoint_step"] == 2
    for cell in _CELLS:  # each input pretrained once, on studio alone; its cells start from it
        with open(os.path.join(output, "pretrain", cell.inputs, "config.json")) as f:
            assert json.load(f)["train_mixture"] == "studio:train=1[2d,3d]"
        with open(os.path.join(output, "cells", cell.name, "config.json")) as f:
            cell_config = json.load(f)
        assert cell_config["init_from"] == os.path.join(output, "pretrain", cell.inputs)
        assert "studio:train=1[2d,3d]" in cell_config["train_mixture"]

    table = (tmp_path / "t3" / "table3.md").read_text()
    for cell in _CELLS:
        with open(os.path.join(output, "cells", cell.name, "eval_test.json")) as f:
            report = json.load(f)
        assert report["checkpoint_step"] == 2
        numbers = " / ".join(f"{report['metrics'][m]:.1f}" for m in table3.METRICS)
        row = next(line for line in table.splitlines() if line.startswith(f"| {table3.INPUT_LABELS[cell.inputs]} |"))
        assert numbers in row, (numbers, row)
    baseline = results[_CELLS[0]]["baseline_mean_params"]
    assert f"{baseline['pve_mm']:.1f}" in table
    assert "claims (Sec. 4.1), checked" not in table  # one cell per row: nothing to compare
    assert "pretrained on studio alone for 2 steps" in table
    png = (tmp_path / "t3" / "table3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # Re-running the CLI resumes: both cells are read back, nothing is trained or rewritten.
    before = _mtimes(os.path.join(output, "cells"))
    args = [sys.executable, "-m", "dct_jax.experiments.table3", "--steps=2", f"--output={output}",
            "--cells=iuv:3d_dense,image_seg:2d", f"--data_dir={tiny_data_dir}", "--pretrain_steps=2",
            "--image_size=32"]
    args += [f"--set={k}={json.dumps(v)}" for k, v in _TINY.items()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done already") == 4, done.stdout  # 2 pretrainings, 2 cells
    assert _mtimes(os.path.join(output, "cells")) == before

    # An interrupted cell (trained, not yet evaluated) continues from its checkpoint: same numbers.
    first = os.path.join(output, "cells", _CELLS[0].name, "eval_test.json")
    with open(first) as f:
        expected = json.load(f)["metrics"]
    os.remove(first)
    again = table3.run(output, steps=2, cells=_CELLS[:1], overrides=overrides, pretrain_steps=2, image_size=32)
    got = again[_CELLS[0]]["metrics"]
    assert set(got) == set(expected)
    np.testing.assert_allclose([got[k] for k in sorted(got)], [expected[k] for k in sorted(expected)], rtol=1e-5)
    # A runner of one cell still writes the table of every cell finished in the folder; so does
    # --report_only, which trains nothing.
    with open(os.path.join(output, "results.json")) as f:
        assert list(json.load(f)) == ["iuv-3d_dense", "image_seg-2d"]
    os.remove(os.path.join(output, "table3.md"))
    found = table3.write_report(output, steps=2, overrides=overrides, pretrain_steps=2, image_size=32)
    assert set(found) == set(_CELLS) and "| Segment only |" in (tmp_path / "t3" / "table3.md").read_text()
    assert table3.write_report(output, steps=2, overrides=overrides, pretrain_steps=0, image_size=32) == {}
    assert "| Segment only |" in (tmp_path / "t3" / "table3.md").read_text()  # not overwritten by an empty one

    # Asking the same folder for another number of steps is refused, not silently continued.
    with pytest.raises(ValueError, match="other settings"):
        table3.run(output, steps=3, cells=_CELLS[:1], overrides=overrides, pretrain_steps=2, image_size=32)
