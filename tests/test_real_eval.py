"""End to end: the evaluation loop on fake 3DPW and Human3.6M builds, with each protocol.

The fixtures of tests/test_pw3d.py and tests/test_h36m.py write the datasets in
their original layouts; here they are built and evaluated through
``evaluate.evaluate_split`` with a "network" that predicts the ground truth, so
the numbers are known: zero where prediction and ground truth go through the
same body, not zero where the protocol says they do not.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from test_h36m import _build as build_h36m
from test_h36m import body, fake_h36m  # noqa: F401  (fixtures)
from test_pw3d import _build as build_pw3d
from test_pw3d import fake_pw3d, models  # noqa: F401  (fixtures)

from dct_jax import evaluate, smpl
from dct_jax import state as state_lib
from dct_jax.models import regressor as regressor_lib


def _oracle(variables, batch):
    """Predicts each record's ground-truth parameters (and a unit camera)."""
    size = batch["smpl_pose"].shape[0]
    return regressor_lib.RegressorOutput(
        pose=batch["smpl_pose"].reshape(size, 24, 3), betas=batch["smpl_betas"],
        camera=jnp.tile(jnp.asarray([1.0, 0.0, 0.0]), (size, 1)), params=jnp.zeros((size, 85)),
        residual=jnp.zeros((size, 85)), features=jnp.zeros((size, 1)))


def _evaluate(config, body_model, split):
    model = state_lib.create_model(config.model)
    return evaluate.evaluate_split(config, {}, model=model, body=body_model, split=split, step=0,
                                   predict_fn=_oracle)


@pytest.fixture(scope="module")
def pw3d_dir(fake_pw3d, tmp_path_factory):  # noqa: F811
    data_dir = tmp_path_factory.mktemp("pw3d_tfds")
    build_pw3d(fake_pw3d[0], data_dir)
    return os.path.join(str(data_dir), "pw3d", "1.0.0")


def test_pw3d_neutral_and_gendered_ground_truth(pw3d_dir, models, tmp_path):  # noqa: F811
    config = tiny_config(os.path.dirname(os.path.dirname(pw3d_dir)), inputs="image")
    config.dataset = pw3d_dir  # a built folder: the protocol still follows from its name
    config.smpl_path = models["neutral"][0]
    neutral = models["neutral"][1]
    report = _evaluate(config, neutral, "test")
    assert report["protocol"]["name"] == "pw3d" and report["protocol"]["ground_truth"] == "neutral"
    assert report["protocol"]["joints"] == "smpl24"
    assert report["counts"]["with_smpl"] == report["num_examples"] > 0
    for key in ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm"):
        assert report["metrics"][key] == pytest.approx(0.0, abs=1e-3), key
    assert report["baseline_mean_params"]["mpjpe_mm"] > 10.0
    # SPIN's convention: the ground truth through the actor's own model (the test split is male).
    config.eval.smpl_male_path = models["male"][0]
    config.eval.smpl_female_path = models["female"][0]
    regressor = np.random.default_rng(0).dirichlet(np.ones(6890), size=17).astype(np.float32)
    np.save(tmp_path / "J_regressor_h36m.npy", regressor)
    config.eval.j_regressor_h36m_path = str(tmp_path / "J_regressor_h36m.npy")
    report = _evaluate(config, neutral, "test")
    assert report["protocol"]["ground_truth"] == "gendered"
    assert report["protocol"]["joints"].startswith("h36m14")
    # Independent check of the first record: neutral prediction vs male ground truth, 14 joints.
    from dct_jax.data import pipeline

    source = pipeline.load_source(pw3d_dir, data_dir=None, split="test")
    records = [source[i] for i in range(len(source))]
    pose = np.stack([r["smpl_pose"] for r in records])
    betas = np.stack([r["smpl_betas"] for r in records])
    male = models["male"][1]
    pred = np.asarray(smpl.forward(neutral, pose, betas).vertices, np.float64)
    gt = np.asarray(smpl.forward(male, pose, betas).vertices, np.float64)
    joints = lambda v: regressor.astype(np.float64) @ v  # noqa: E731
    pj, gj = joints(pred), joints(gt)
    pj, gj = pj - pj[:, :1], gj - gj[:, :1]
    j14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]
    expected = 1000 * np.linalg.norm(pj[:, j14] - gj[:, j14], axis=-1).mean()
    assert report["metrics"]["mpjpe_mm"] == pytest.approx(expected, rel=1e-3)
    assert report["metrics"]["mpjpe_mm"] > 1.0


def test_h36m_protocol_on_motion_capture(fake_h36m, body, tmp_path):  # noqa: F811
    data_dir = tmp_path / "tfds"
    build_h36m(fake_h36m[0], data_dir)
    config = tiny_config(str(data_dir), inputs="image")
    config.dataset = "h36m"
    # Rows with SMPL fits of the default body reproduce their motion-capture keypoints
    # (the fixture made them from those fits); rows without predict the zero pose.
    report = _evaluate(config, body, "train")
    assert report["protocol"]["name"] == "h36m"
    assert report["protocol"]["joints"] == "cocoplus19[:14] of the body model"
    assert report["counts"]["with_keypoints3d"] > 0
    assert report["counts"]["mpjpe_mm_examples"] == report["counts"]["with_keypoints3d"]
    # Independently: pelvis (mid-hip) aligned mean distance over the first 14 keypoints.
    from dct_jax import keypoints
    from dct_jax.data import pipeline

    source = pipeline.load_source("h36m", data_dir=str(data_dir), split="train")
    records = [source[i] for i in range(len(source))]
    layout = keypoints.get_layout("cocoplus19", body="default")
    out = smpl.forward(body, np.stack([r["smpl_pose"] for r in records]), np.stack([r["smpl_betas"] for r in records]))
    pred = np.asarray(keypoints.from_body(layout, out.vertices, out.joints), np.float64)[:, :14]
    gt = np.stack([r["keypoints3d"] for r in records]).astype(np.float64)[:, :14]
    centre = lambda x: x - 0.5 * (x[:, 2:3] + x[:, 3:4])  # noqa: E731
    errors = 1000 * np.linalg.norm(centre(pred) - centre(gt), axis=-1).mean(-1)
    fitted = np.array([bool(r["has_smpl"]) for r in records])
    assert fitted.any() and (~fitted).any()
    assert np.all(errors[fitted] < 0.5) and np.all(errors[~fitted] > 20.0)
    assert report["metrics"]["mpjpe_mm"] == pytest.approx(errors.mean(), rel=1e-3)
    assert report["metrics"]["pa_mpjpe_mm"] < report["metrics"]["mpjpe_mm"]
    assert "pve_mm" not in report["metrics"]  # Human3.6M's ground truth is joints
    text = evaluate.format_report(report)
    assert "protocol h36m" in text and "MPJPE" in text


def test_run_eval_evaluates_a_checkpoint_on_3dpw(tiny_checkpoint, pw3d_dir, models, tmp_path):  # noqa: F811
    # The acceptance path: run_eval.py on a trained checkpoint and a built real dataset.
    import json
    import shutil
    import subprocess
    import sys

    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_checkpoint("image"), workdir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config_file = tmp_path / "tiny_eval.py"
    config_file.write_text(
        f"import sys\nsys.path.insert(0, {os.path.join(root, 'tests')!r})\nfrom conftest import tiny_config\n\n"
        f"def get_config():\n    return tiny_config({os.path.dirname(os.path.dirname(pw3d_dir))!r}, 'image')\n")
    run = subprocess.run(
        [sys.executable, "run_eval.py", f"--config={config_file}", f"--workdir={workdir}", "--split=test",
         f"--config.dataset={pw3d_dir}", f"--config.smpl_path={models['neutral'][0]}",
         f"--config.eval.smpl_male_path={models['male'][0]}",
         f"--config.eval.smpl_female_path={models['female'][0]}"],
        cwd=root, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert report["protocol"] == {"name": "pw3d", "joints": "smpl24", "ground_truth": "gendered",
                                  "alignment": "pelvis (MPJPE, PVE); similarity Procrustes (PA-MPJPE)"}
    assert report["num_examples"] == report["counts"]["with_smpl"] > 0
    assert set(report["metrics"]) == {"pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm"}
    assert all(np.isfinite(v) and v > 0 for v in report["metrics"].values())
    assert "protocol pw3d" in run.stdout and "ground truth gendered" in run.stdout
