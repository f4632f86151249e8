"""The paper's experiments after Table 3: each cell's config and data are what the experiment intends,
the reports check the claims, and one tiny experiment runs end to end from the command line."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from dct_jax import geometry, iuv_errors, losses, workdir
from dct_jax.data import pipeline
from dct_jax.experiments import ablations, runner, table3, variants
from dct_jax.experiments.runner import Cell

_STUDIO = "studio:train=1[2d,3d]"


def _config(cell: Cell):
    return runner.cell_config(cell, steps=7)


def _wild(config) -> pipeline.MixtureSource:
    return pipeline.parse_sources(config.train_mixture, config.train_split)[0]


def test_every_cell_config_is_valid_and_names_are_unique():
    for experiment in ablations.EXPERIMENTS.values():
        names = [p.cell.name for p in experiment.points]
        assert len(set(names)) == len(names) == len({p.key for p in experiment.points})
        for point in experiment.points:
            config = _config(point.cell)
            workdir.validate(config)
            assert config.train_mixture.endswith("," + _STUDIO)  # the studio source in every cell, unchanged


def test_cells_equal_to_table3_cells_are_those_cells():
    # Shared cells are one run: Figure 4's 100% and 0%, Figure 6's 100% and 0%, Figure 5's 0 and 2D only.
    table3_cells = set(table3.all_cells())
    shared = {e.name: {p.key for p in e.points if p.cell in table3_cells} for e in ablations.EXPERIMENTS.values()}
    assert shared == {"table4": set(), "figure4": {"100", "0"}, "figure5": {"0", "2d"}, "figure6": {"100", "0"},
                      "refinement": set()}


def test_table4_pose_only_drops_the_betas_term_and_nothing_else():
    full = _config(Cell("image", "3d_dense"))
    for key, terms in (("pose_dense", "pose"), ("shape_dense", "shape"), ("pose_2d", "pose")):
        point = next(p for p in ablations.TABLE4.points if p.key == key)
        config = _config(point.cell)
        wild = _wild(config)
        assert wild.smpl_terms == terms and "3d" in wild.labels and wild.fraction_3d == 1.0
        assert ("dense" in wild.labels) == key.endswith("dense")
        assert config.loss.dense == (1.0 if key.endswith("dense") else 0.0)
        if key == "pose_dense":  # the config differs from 3D & Dense & 2D in the in-the-wild label alone
            assert set(workdir.differences(json.loads(full.to_json_best_effort()), config)) == {"train_mixture"}
    spec = pipeline.ExampleSpec(image_size=32)
    assert pipeline.parse_sources("s[2d,3d=pose]", "train")[0].example_spec(spec).smpl_terms == "pose"
    assert str(pipeline.parse_sources("s[2d,3d=shape]", "train")[0]) == "s:train=1[2d,3d=shape]"

    # The SMPL loss with a betas weight of 0 on some examples is the full loss minus exactly their betas part.
    rng = np.random.default_rng(0)
    batch = 6
    pred, target = (geometry.rodrigues(jnp.asarray(rng.normal(0, 0.3, (batch, 24, 3)), jnp.float32)) for _ in "ab")
    pred_betas, target_betas = (jnp.asarray(rng.normal(0, 1, (batch, 10)), jnp.float32) for _ in "ab")
    mask = jnp.asarray([1, 1, 1, 1, 0, 1], jnp.float32)
    pose_only = jnp.asarray([1, 0, 1, 0, 1, 1], jnp.float32)  # examples 1 and 3: betas term off
    ones = jnp.ones(batch)
    got = losses.smpl_loss(pred, target, pred_betas, target_betas, mask, ones, 1 - pose_only)
    betas_sq = jnp.sum((pred_betas - target_betas) ** 2, axis=1)
    pose_sq = jnp.sum((pred[:, 1:] - target[:, 1:]) ** 2, axis=(1, 2, 3))
    scale = batch / mask.sum() / (batch * 217)
    expected = scale * jnp.sum(mask * (pose_sq + (1 - pose_only) * betas_sq))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(losses.smpl_loss(pred, target, pred_betas, target_betas, mask, ones, ones),
                               losses.smpl_loss(pred, target, pred_betas, target_betas, mask), rtol=1e-6)
    shape_only = losses.smpl_loss(pred, target, pred_betas, target_betas, mask, jnp.zeros(batch), ones)
    np.testing.assert_allclose(shape_only, scale * jnp.sum(mask * betas_sq), rtol=1e-5)


def test_pose_only_records_keep_the_pose_label_alone(tiny_data_dir):
    source = pipeline.load_source("studio", data_dir=tiny_data_dir, split="train")  # has 3D keypoints too
    base = pipeline.ExampleSpec(image_size=32, inputs=("image",), num_dense=20)
    examples = {}
    for terms in pipeline.SMPL_TERMS:
        spec = pipeline.parse_sources(f"s[2d,3d={terms}]" if terms != "all" else "s[2d,3d]", "train")[0]
        examples[terms] = pipeline.ProcessRecord(spec.example_spec(base), train=False).process(
            source[0], np.random.default_rng(0))
    assert [(e["has_smpl"], e["smpl_pose_weight"], e["smpl_betas_weight"], e["has_keypoints3d"])
            for e in examples.values()] == [(1, 1, 1, 1), (1, 1, 0, 0), (1, 0, 1, 0)]  # 3D points carry both
    np.testing.assert_array_equal(examples["pose"]["smpl_pose"], examples["all"]["smpl_pose"])


@pytest.mark.parametrize("percent", [80, 20, 1])
def test_figure4_keeps_3d_labels_on_the_fraction_of_records(percent):
    point = next(p for p in ablations.FIGURE4.points if p.key == str(percent))
    config = _config(point.cell)
    wild = _wild(config)
    assert wild.fraction_3d == pytest.approx(percent / 100) and wild.labels == ("2d", "3d")
    assert config.loss.dense == 0 and config.loss.smpl == 10
    ids = [f"synthetic-train-{i:06d}" for i in range(4000)]
    kept = np.mean([pipeline.in_smpl_subset(i, wild.fraction_3d) for i in ids])
    assert abs(kept - percent / 100) < 3 * np.sqrt(percent / 100 * (1 - percent / 100) / len(ids)) + 1e-3


def test_figure5_noise_is_on_the_dense_source_u_v_only(tiny_data_dir):
    config = _config(Cell("image_iuv", "dense", "uv_noise_20"))
    assert config.data.dense_uv_noise == 20 and config.loss.dense == 10 and config.data.dense_source == "auto"
    source = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="train")
    base = pipeline.ExampleSpec(image_size=32, inputs=("image", "iuv"), num_dense=200)
    noisy_spec = dataclasses.replace(base, dense_uv_noise=20.0)
    plain = pipeline.ProcessRecord(base, train=False).process(source[1], np.random.default_rng(0))
    noisy = pipeline.ProcessRecord(noisy_spec, train=False).process(source[1], np.random.default_rng(0))
    again = pipeline.ProcessRecord(noisy_spec, train=False).process(source[1], np.random.default_rng(9))
    for key in ("image", "iuv", "dense_xy", "keypoints"):  # the input and the points' positions are unchanged
        np.testing.assert_array_equal(plain[key], noisy[key])
    weight = noisy["dense_weight"] > 0
    assert weight.sum() >= 100
    moved = np.any(plain["dense_barycentric"] != noisy["dense_barycentric"], -1) | np.any(
        plain["dense_vertex_ids"] != noisy["dense_vertex_ids"], -1)
    assert moved[weight].mean() > 0.9  # the surface points moved (U, V changed) ...
    np.testing.assert_array_equal(noisy["dense_vertex_ids"], again["dense_vertex_ids"])  # ... fixed per record
    # The noise itself: std sigma / 255 on U, V in [0, 1] (mid-range values, so no clipping).
    u, v = iuv_errors.add_annotation_uv_noise(np.full(20000, 0.5), np.full(20000, 0.5), 20.0, np.random.default_rng(1))
    assert np.std(u - 0.5) * 255 == pytest.approx(20.0, rel=0.03) and np.std(v - 0.5) * 255 == pytest.approx(20.0, rel=0.03)


def test_figure6_keeps_the_fraction_of_each_records_dense_keypoints(tiny_data_dir):
    config = _config(Cell("image_iuv", "dense", "dense_keep_0.4"))
    assert config.data.dense_keep == 0.4 and config.loss.dense == 10
    source = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="train")
    base = pipeline.ExampleSpec(image_size=32, inputs=("image",), num_dense=200)
    kept = []
    for index in range(len(source)):
        full = pipeline.ProcessRecord(base, train=True).process(source[index], np.random.default_rng(0))
        part = [pipeline.ProcessRecord(dataclasses.replace(base, dense_keep=0.4), train=True).process(
            source[index], np.random.default_rng(seed)) for seed in (0, 1)]
        n = np.count_nonzero(full["dense_weight"])
        assert np.count_nonzero(part[0]["dense_weight"]) == round(0.4 * n)
        np.testing.assert_array_equal(part[0]["dense_weight"] > 0, part[1]["dense_weight"] > 0)  # a fixed subset
        kept.append(np.count_nonzero(part[0]["dense_weight"]) / n)
    assert np.mean(kept) == pytest.approx(0.4, abs=0.01)
    assert pipeline.keep_fraction(np.ones(10), 0.0, np.random.default_rng(0)).sum() == 0


def test_refinement_cells_use_predicted_like_maps_with_and_without_refinement():
    refined, raw, exact = (_config(p.cell) for p in ablations.REFINEMENT.points)
    for config in (refined, raw, exact):
        assert config.data.dense_source == "iuv" and config.model.inputs == "image_iuv"
    assert refined.data.refine_iuv and not raw.data.refine_iuv and exact.data.refine_iuv
    assert dict(refined.data.iuv_errors) == dict(raw.data.iuv_errors) == dataclasses.asdict(iuv_errors.DENSEPOSE_LIKE)
    assert not any(dict(exact.data.iuv_errors).values())
    from dct_jax import state

    assert state.example_spec(raw, train=True).iuv_errors == iuv_errors.DENSEPOSE_LIKE
    assert state.example_spec(raw, train=False).iuv_errors == iuv_errors.DENSEPOSE_LIKE  # test inputs too
    assert state.example_spec(exact, train=True).iuv_errors is None


def test_on_up3d_every_cell_reads_up3d_and_human36m_and_real_maps_are_only_refined():
    # Real data: the same cells with UP-3D + Human3.6M; DensePose's maps are refined, never made "predicted-like".
    for name, experiment in ablations.EXPERIMENTS.items():
        points = experiment.parse_cells(None, "up3d")
        assert [p.key for p in points] == [p.key for p in experiment.points if p.key != "exact"], name
        for point in points:
            config = runner.cell_config(point.cell, steps=7, data="up3d")
            workdir.validate(config)
            assert config.dataset == "up3d" and config.train_mixture.startswith("up3d:trainval=1[2d")
            assert config.train_mixture.endswith(",h36m:train=1[2d,3d]") and not config.build_dataset_if_missing
            assert not any(dict(config.data.iuv_errors).values())
            assert config.data.refine_iuv == (point.key != "raw")
            synthetic = runner.cell_config(point.cell, steps=7)
            assert _wild(config).labels == _wild(synthetic).labels  # what the cell supervises is the same
    with pytest.raises(ValueError, match="needs exact IUV maps"):
        runner.cell_config(Cell("image_iuv", "dense", "exact_iuv"), steps=7, data="up3d")
    pretrain = runner.pretrain_config("image_iuv", steps=7, data="up3d")
    assert (pretrain.train_mixture, pretrain.dataset) == ("h36m:train=1[2d,3d]", "up3d")
    assert runner.pretrain_config("image", steps=7).train_mixture == _STUDIO
    lines = table3.protocol_lines(runner.cell_config(Cell("image", "2d"), steps=7, data="up3d"), 5)
    assert "the up3d test split" in lines[0] and "pretrained on h36m alone for 5 steps" in lines[2]
    assert "every keypoint its records label, no noise added" in lines[2]


def test_bad_variants_and_cells_are_clear_errors():
    with pytest.raises(ValueError, match="has no dense loss"):
        _config(Cell("image", "3d", "dense_keep_0.5"))
    with pytest.raises(ValueError, match="has none"):
        _config(Cell("image", "dense", "3d_0.5"))
    with pytest.raises(ValueError, match="not a fraction"):
        variants.apply_variant(_config(Cell("image", "3d")), "3d_2")
    with pytest.raises(ValueError, match="unknown cell variant"):
        _config(Cell("image", "3d", "more_3d"))
    with pytest.raises(ValueError, match="takes keys from"):
        ablations.FIGURE4.parse_cells("20,33")


def test_claims_on_hand_built_results():
    def reports(pve: dict[str, float], **other) -> dict:
        return {k: {"metrics": {"pve_mm": v, **other.get(k, {})}} for k, v in pve.items()}

    figure4 = ablations.FIGURE4.checks(reports({"100": 100.0, "20": 106.0, "1": 110.0, "0": 150.0}))
    assert "+6.0%" in figure4[0] and "**holds**" in figure4[0] and "+36.4%" in figure4[1] and "**holds**" in figure4[1]
    figure4 = ablations.FIGURE4.checks(reports({"100": 100.0, "20": 120.0, "1": 110.0, "0": 112.0}))
    assert all("does not hold" in line for line in figure4)
    figure5 = ablations.FIGURE5.checks(reports({"0": 100.0, "10": 104.0, "40": 115.0, "2d": 120.0}))
    assert "**holds**" in figure5[0] and "does not hold" in figure5[1]  # keeps 25% of the gain: not half
    figure6 = ablations.FIGURE6.checks(reports({"100": 100.0, "60": 103.0, "10": 108.0, "0": 120.0}))
    assert all("**holds**" in line for line in figure6)
    refinement = ablations.REFINEMENT.checks(reports({"refined": 100.0, "raw": 104.0}))
    assert "+4.0%" in refinement[0] and "does not hold" in refinement[0] and len(refinement) == 1
    refinement = ablations.REFINEMENT.checks(reports({"refined": 100.0, "raw": 104.0, "exact": 96.0}))
    assert "+8.3% raw and +4.2% refined" in refinement[1] and "wins back 50%" in refinement[1]
    metrics = {"pose_dense": {"mpjpe_mm": 90.0, "pvet_mm": 40.0}, "shape_dense": {"mpjpe_mm": 95.0, "pvet_mm": 30.0}}
    table4 = ablations.TABLE4.checks(reports({"pose_dense": 120.0, "shape_dense": 130.0}, **metrics))
    assert len(table4) == 2 and all("**holds**" in line for line in table4)


def test_unknown_experiment_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "dct_jax.experiments", "figure7", "--output=/tmp/x"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "one of table3, table4, figure4, figure5, figure6, refinement; got figure7" in result.stderr


def test_figure6_cell_runs_from_the_command_line_and_writes_its_report(tiny_data_dir, tmp_path):
    output = str(tmp_path / "exp")
    tiny = ["data.image_size=32", "data.num_dense=20", "data.threads=0", "batch_size=4", "eval_batch_size=4",
            "model.depth=10", "model.width=8", "model.feature_dim=32", "model.hidden_dim=32",
            "build_dataset_if_missing=False"]
    args = [sys.executable, "-m", "dct_jax.experiments", "figure6", "--steps=2", f"--output={output}",
            "--cells=40", f"--data_dir={tiny_data_dir}", "--pretrain_steps=0", "--image_size=32",
            *(f"--set={item}" for item in tiny)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cell = Cell("image_iuv", "dense", "dense_keep_0.4")
    with open(os.path.join(output, "cells", cell.name, "config.json")) as f:
        recorded = json.load(f)
    assert recorded["data"]["dense_keep"] == 0.4
    report = (tmp_path / "exp" / "figure6.md").read_text()
    with open(os.path.join(output, "cells", cell.name, "eval_test.json")) as f:
        metrics = json.load(f)["metrics"]
    numbers = " / ".join(f"{metrics[m]:.1f}" for m in table3.METRICS)
    assert f"| 40% dense keypoints | `{cell.name}` | {numbers} |" in report
    assert "| 100% dense keypoints | `image_iuv-dense` | — |" in report
    assert "## The paper's claims, checked\n\nNone yet: each claim compares cells" in report  # 40% alone
    assert json.loads((tmp_path / "exp" / "figure6.json").read_text()).keys() == {"40"}
    assert (tmp_path / "exp" / "figure6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_cell_recorded_before_the_record_cache_existed_is_the_same_run(tmp_path):
    # A cell trained before config.data.cache_mb existed (its config.json lacks it), or with other
    # data.workers, is still that cell (finished: read, not retrained; unfinished: resumed); one
    # with another data setting or initialization is not.
    config = _config(Cell("image_iuv", "dense"))
    recorded = json.loads(config.to_json_best_effort())
    del recorded["data"]["cache_mb"]
    recorded["data"]["workers"] = 2
    with open(os.path.join(tmp_path, workdir.CONFIG_FILE), "w") as f:
        json.dump(recorded, f)
    assert runner.differing_settings(str(tmp_path), config) == []
    runner.check_same_run(str(tmp_path), config)
    recorded["data"]["image_size"] = config.data.image_size + 16
    with open(os.path.join(tmp_path, workdir.CONFIG_FILE), "w") as f:
        json.dump(recorded, f)
    assert runner.differing_settings(str(tmp_path), config) == ["data"]
    with pytest.raises(ValueError, match="data differ"):
        runner.check_same_run(str(tmp_path), config)
    recorded["data"]["image_size"] = config.data.image_size
    recorded["init_from"] = "/elsewhere"
    with open(os.path.join(tmp_path, workdir.CONFIG_FILE), "w") as f:
        json.dump(recorded, f)
    assert runner.differing_settings(str(tmp_path), config) == ["init_from"]


def test_cells_imported_from_an_earlier_record_count_as_finished_and_are_named(tmp_path):
    # Cells trained elsewhere (their report's NAME.json) join a report without their checkpoints;
    # a record of other settings, or of cells the experiment does not have, is refused.
    from dct_jax.experiments import command  # noqa: PLC0415

    settings = dict(steps=8, pretrain_steps=0)
    output = str(tmp_path / "out")
    report = {"checkpoint_step": 8, "split": "test", "dataset": "synthetic", "num_examples": 5,
              "metrics": {m: 100.0 + i for i, m in enumerate(table3.METRICS)},
              "baseline_mean_params": {m: 200.0 for m in table3.METRICS}}
    record = tmp_path / "figure4.json"
    record.write_text(json.dumps({"20": report, "1": {**report, "metrics": {m: 90.0 for m in table3.METRICS}}}))
    own = os.path.join(output, "cells", Cell("image", "3d", "3d_0.01").name)
    os.makedirs(own)  # a run of the output's own: never overwritten

    def make_config(cell):
        return runner.finished_config(cell, output, **settings)

    imported = runner.import_results(output, command.recorded_cells(str(record)), str(record), make_config)
    assert imported == [Cell("image", "3d", "3d_0.2")] and os.listdir(own) == []
    found = ablations.write_report(ablations.FIGURE4, output, **settings)
    assert found.keys() == {"20"} and found["20"][runner.IMPORTED_FROM] == str(record)
    text = (tmp_path / "out" / "figure4.md").read_text()
    assert "| 20% 3D | `image-3d-3d_0.2` | 100.0 / 101.0 / 102.0 / 103.0 |" in text
    assert "only their evaluation reports are here): `image-3d-3d_0.2`." in text
    assert ablations.write_report(ablations.FIGURE4, output, steps=9) == {}  # other settings: not finished

    with pytest.raises(ValueError, match="its checkpoint_step is 8, not 9"):
        runner.import_results(output, command.recorded_cells(str(record)), str(record),
                              lambda cell: runner.finished_config(cell, output, steps=9))
    record.write_text(json.dumps({"33": report}))
    with pytest.raises(ValueError, match=r"has cells \['33'\] that figure4 does not have"):
        command.recorded_cells(str(record))
    with pytest.raises(ValueError, match="cannot tell which experiment"):
        command.recorded_cells(str(tmp_path / "mine.json"))
