"""Tests for ``dct_jax.export``: the serialized artifact runs in a process with nothing but jax.

The artifact of a tiny two-input (image + IUV) run is reloaded in a fresh Python that
cannot import dct_jax or flax, called with two batch sizes (the docstring's snippet, then
saved crops), and its outputs are compared with the live model's (``TrainedModel.predict``
then ``smpl.forward``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from dct_jax import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 3  # the saved crops; the docstring's snippet runs batch 2

# Runs in the fresh process, in the artifact's folder, after the docstring's snippet
# (which leaves `exported`, `info` and `out` for batch 2 of zeros).
_RELOAD_TAIL = """
crops = np.load("crops.npz")
out3 = exported.call(*[crops[i["name"]] for i in info["inputs"]])
np.savez("outputs.npz", **{"b2_" + k: np.asarray(v) for k, v in out.items()},
         **{"b3_" + k: np.asarray(v) for k, v in out3.items()})
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in ("dct_jax", "flax"))
assert not loaded, loaded
print("reloaded", exported.platforms, {k: v.shape for k, v in out3.items()})
"""


def _docstring_snippet() -> str:
    """The module docstring's reload snippet (the lines from ``import jax`` to ``out = ``)."""
    lines = export.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("import jax, json"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("out = exported.call"))
    assert end - start == 5, "the docstring's snippet should stay six lines"
    return textwrap.dedent("\n".join(lines[start:end + 1]))


def _crops(rng: np.random.Generator, batch: int, size: int) -> dict[str, np.ndarray]:
    iuv = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    iuv[..., 0] = rng.integers(0, 25, (batch, size, size), dtype=np.uint8)
    return {"image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), "iuv": iuv}


@pytest.fixture(scope="module")
def exported_run(tiny_checkpoint, tmp_path_factory):
    workdir = tiny_checkpoint("image_iuv")
    folder = tmp_path_factory.mktemp("export")
    result = export.export_checkpoint(workdir, folder / "model.jax")
    return workdir, folder, result


def test_artifact_reloads_without_dct_jax_and_matches(exported_run):
    from dct_jax import inference, keypoints, smpl

    workdir, folder, result = exported_run
    trained = inference.load_checkpoint(workdir)
    assert result.path == str(folder / "model.jax") and os.path.getsize(result.path) == result.size_bytes

    info = json.loads((folder / "model.jax.json").read_text())
    size = trained.image_size
    assert [i["name"] for i in info["inputs"]] == ["image", "iuv"]
    assert [i["shape"] for i in info["inputs"]] == [["b", size, size, 3]] * 2
    assert {i["dtype"] for i in info["inputs"]} == {"uint8"}
    assert info["image_size"] == size and info["checkpoint_step"] == trained.step == 2
    assert list(info["outputs"]) == list(export.OUTPUT_NAMES)
    assert info["outputs"]["vertices"]["shape"] == ["b", trained.body.num_vertices, 3]
    assert info["outputs"]["keypoints"]["shape"] == ["b", 19, 3]
    assert np.array_equal(np.asarray(info["faces"]), np.asarray(trained.body.faces))
    assert len(info["keypoint_names"]) == 19 and len(info["joint_names"]) == 24

    crops = _crops(np.random.default_rng(0), BATCH, size)
    np.savez(folder / "crops.npz", **crops)
    # Nothing but jax: dct_jax and flax are made unimportable before the snippet runs.
    script = ("import sys\nsys.modules['dct_jax'] = sys.modules['flax'] = None\n"
              + _docstring_snippet() + "\n" + _RELOAD_TAIL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reloaded" in proc.stdout

    # The live model on the same crops: the saved ones (batch 3), then the snippet's zeros (batch 2).
    batch = {k: np.concatenate([v, np.zeros((2, *v.shape[1:]), v.dtype)]) for k, v in crops.items()}
    pred = trained.predict(batch)
    body = jax.jit(smpl.forward)(trained.body, pred.pose, pred.betas)
    live = {"params": pred.params, "camera": pred.camera, "pose": pred.pose, "betas": pred.betas,
            "vertices": body.vertices, "joints": body.joints,
            "keypoints": keypoints.from_body(trained.layout, body.vertices, body.joints)}
    with np.load(folder / "outputs.npz") as saved:
        assert sorted(saved.files) == sorted(f"b{n}_{k}" for n in (2, 3) for k in export.OUTPUT_NAMES)
        for name, value in live.items():
            value = np.asarray(value)
            for got, want in ((saved[f"b3_{name}"], value[:BATCH]), (saved[f"b2_{name}"], value[BATCH:])):
                assert got.dtype == np.float32 and got.shape == want.shape, name
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    # The prediction is not trivially the mean: the crops make a difference.
    assert np.abs(np.asarray(pred.params[0] - pred.params[BATCH])).max() > 1e-4


def test_summary_names_inputs_and_outputs(exported_run):
    _, _, result = exported_run
    line = result.summary()
    assert "\n" not in line and "MiB" in line and "step 2" in line
    assert "image (b,32,32,3) uint8, iuv (b,32,32,3) uint8 -> params (b,85)" in line


@pytest.mark.parametrize("case", ["missing_checkpoint", "missing_output_dir"])
def test_cli_user_errors_are_one_line(case, tiny_checkpoint, tmp_path):
    if case == "missing_checkpoint":
        args, expected = [f"--checkpoint={tmp_path / 'nope'}", f"--output={tmp_path / 'model.jax'}"], "does not exist"
    else:
        args = [f"--checkpoint={tiny_checkpoint('image_iuv')}", f"--output={tmp_path / 'no_dir' / 'model.jax'}"]
        expected = f"output directory {tmp_path / 'no_dir'} does not exist"
    proc = subprocess.run([sys.executable, "-m", "dct_jax.export", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m dct_jax.export: error:"), proc.stderr
    assert expected in lines[0]
    assert not os.listdir(tmp_path)
