"""Tests for run_demo.py with a trained checkpoint (and that the old body-only demo still works)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from absl import flags

import run_demo
from dct_jax import demo, smpl
from dct_jax.data import pipeline, schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the 64x64 test record goes in a larger, non-square photo (and its --bbox).
CANVAS_HW, OFFSET = (90, 120), (37, 11)


@pytest.fixture(scope="module")
def photo_files(tiny_data_dir, tmp_path_factory):
    """Test record 0 pasted into a 120x90 photo: (photo.png, iuv.png, bbox, record)."""
    record = pipeline.load_source("synthetic", data_dir=tiny_data_dir, split="test")[0]
    image, iuv = schema.decode_image(record["image"]), schema.decode_iuv(record["iuv"])
    ox, oy = OFFSET
    h, w = image.shape[:2]
    canvas = np.zeros((*CANVAS_HW, 3), np.uint8)
    canvas_iuv = np.zeros((*CANVAS_HW, 3), np.uint8)
    canvas[oy:oy + h, ox:ox + w] = image
    canvas_iuv[oy:oy + h, ox:ox + w] = iuv
    directory = tmp_path_factory.mktemp("demo_inputs")
    photo, iuv_path = str(directory / "photo.png"), str(directory / "iuv.png")
    assert cv2.imwrite(photo, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    assert cv2.imwrite(iuv_path, canvas_iuv)  # array order: I, U, V
    return photo, iuv_path, f"{ox},{oy},{w},{h}", record


@pytest.fixture(scope="module")
def image_checkpoint(tiny_checkpoint):
    return tiny_checkpoint("image")


@pytest.fixture(scope="module")
def iuv_checkpoint(tiny_checkpoint):
    return tiny_checkpoint("image_iuv")


@pytest.fixture
def run(capsys):
    """``run(*flags) -> (exit code, stderr)``: run_demo.main in this process."""
    was_parsed = flags.FLAGS.is_parsed()

    def call(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run_demo.py", *args])
        try:
            run_demo.main(["run_demo.py"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    yield call
    flags.FLAGS.unparse_flags()
    if was_parsed:
        flags.FLAGS.mark_as_parsed()


def _read_obj(path):
    with open(path) as f:
        lines = f.read().splitlines()
    vertices = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(x) for x in line.split()[1:]] for line in lines if line.startswith("f ")])
    return vertices, faces


def _check_outputs(directory, *, panels=2, photo_hw=CANVAS_HW):
    body = smpl.load(None)
    vertices, faces = _read_obj(os.path.join(directory, "mesh.obj"))
    assert vertices.shape == (body.num_vertices, 3) and faces.shape == tuple(body.faces.shape)
    assert faces.min() == 1 and faces.max() == body.num_vertices  # 1-based
    np.testing.assert_array_equal(faces - 1, np.asarray(body.faces))
    with open(os.path.join(directory, "params.json")) as f:
        params = json.load(f)
    names = list(params["parameters"])
    assert len(names) == 85 and names[:4] == ["camera_s", "camera_tx", "camera_ty", "pose_pelvis_x"]
    assert names[-1] == "betas_9" and "pose_right_hand_z" in names
    camera = params["camera"]
    assert camera["focal_length"] == pytest.approx(5000 / 224 * max(photo_hw))
    overlay = cv2.imread(os.path.join(directory, "overlay.png"))
    scale = demo.picture_scale(*photo_hw)
    assert overlay.shape == (round(photo_hw[0] * scale), panels * round(photo_hw[1] * scale), 3)
    return params, vertices


def test_demo_on_a_photo_with_a_box(image_checkpoint, photo_files, run, tmp_path, caplog):
    workdir = image_checkpoint
    photo, iuv, bbox, _ = photo_files
    out = str(tmp_path / "out")
    # --iuv means nothing to an image-only model: ignored with a warning.
    code, err = run(f"--checkpoint={workdir}", f"--image={photo}", f"--bbox={bbox}", f"--iuv={iuv}",
                    f"--output={out}")
    assert code == 0, err
    assert any("does not take iuv" in r.getMessage() for r in caplog.records)
    params, vertices = _check_outputs(out)
    assert params["crop_box"] == [*OFFSET, 64.0] and params["model_inputs"] == "image"

    # The perspective camera of params.json lands the mesh where the weak perspective puts it.
    cam = params["camera"]
    s, tx, ty = (params["parameters"][k] for k in ("camera_s", "camera_tx", "camera_ty"))
    weak = demo.project_to_photo(vertices, np.array([s, tx, ty]), np.array(params["crop_box"]))
    placed = vertices + cam["translation"]
    persp = cam["focal_length"] * placed[:, :2] / placed[:, 2:] + cam["principal_point"]
    assert np.abs(persp - weak).max() < 0.05 * 64

    # The whole image with no --bbox, through the checkpoints/ folder: another crop, another answer.
    out2 = str(tmp_path / "out2")
    code, err = run(f"--checkpoint={workdir}/checkpoints", f"--image={photo}", f"--output={out2}")
    assert code == 0, err
    with open(os.path.join(out2, "params.json")) as f:
        whole = json.load(f)
    assert whole["crop_box"] == [0.0, -15.0, 120.0]  # square around the 120x90 photo, zero-padded

    # Without --image: the same test record, shown beside its ground truth; the photo's crop
    # around the box is the training crop of that record, so the prediction is the same.
    out3 = str(tmp_path / "out3")
    code, err = run(f"--checkpoint={workdir}", f"--output={out3}")
    assert code == 0, err
    synth, _ = _check_outputs(out3, panels=4, photo_hw=(64, 64))
    assert set(synth["metrics"]) >= {"pve_mm", "mpjpe_mm"} and len(synth["ground_truth"]["parameters"]) == 85
    np.testing.assert_allclose(list(synth["parameters"].values()), list(params["parameters"].values()),
                               rtol=1e-5, atol=1e-5)


def test_demo_with_iuv(iuv_checkpoint, photo_files, run, tmp_path):
    workdir = iuv_checkpoint
    photo, iuv, bbox, _ = photo_files
    steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    out = str(tmp_path / "out")
    code, err = run(f"--checkpoint={workdir}/checkpoints/{steps[-1]}", f"--image={photo}", f"--bbox={bbox}",
                    f"--iuv={iuv}", f"--output={out}")
    assert code == 0, err
    params, _ = _check_outputs(out)
    assert params["model_inputs"] == "image_iuv" and params["step"] == steps[-1]

    # The IUV map matters to this model (the same parts, U and V zeroed).
    flat = cv2.imread(iuv, cv2.IMREAD_UNCHANGED)
    flat[..., 1:] = 0
    cv2.imwrite(str(tmp_path / "flat.png"), flat)
    code, err = run(f"--checkpoint={workdir}", f"--image={photo}", f"--bbox={bbox}",
                    f"--iuv={tmp_path / 'flat.png'}", f"--output={tmp_path / 'flat'}")
    assert code == 0, err
    with open(tmp_path / "flat" / "params.json") as f:
        flat_params = json.load(f)
    assert flat_params["parameters"] != params["parameters"]

    # Without --bbox the crop follows the IUV map's person (its foreground's tight box, as in training).
    code, err = run(f"--checkpoint={workdir}", f"--image={photo}", f"--iuv={iuv}", f"--output={tmp_path / 'auto'}")
    assert code == 0, err
    with open(tmp_path / "auto" / "params.json") as f:
        auto = json.load(f)
    person = np.argwhere(cv2.imread(iuv, cv2.IMREAD_UNCHANGED)[..., 0] > 0)
    (y0, x0), (y1, x1) = person.min(0), person.max(0)
    assert auto["bbox"] == [x0, y0, x1 + 1 - x0, y1 + 1 - y0]


def test_user_errors_are_one_line(iuv_checkpoint, photo_files, run, tmp_path):
    workdir = iuv_checkpoint
    photo, iuv, _, _ = photo_files
    base = (f"--checkpoint={workdir}", f"--output={tmp_path / 'out'}")
    grey = str(tmp_path / "grey.png")
    cv2.imwrite(grey, np.zeros((90, 120), np.uint8))
    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.zeros((64, 64, 3), np.uint8))
    high = str(tmp_path / "high.png")
    cv2.imwrite(high, np.full((*CANVAS_HW, 3), 200, np.uint8))
    (tmp_path / "file").write_text("")
    blank = str(tmp_path / "blank.png")
    cv2.imwrite(blank, np.zeros((*CANVAS_HW, 3), np.uint8))
    cases = [
        ((f"--image={photo}",), ["--iuv=FILE", "I (part 1-24", "U and V"]),  # the needed input is missing
        ((f"--image={photo}", f"--iuv={iuv}", "--bbox=1,2,3"), ["--bbox", "x,y,w,h"]),
        ((f"--image={photo}", f"--iuv={iuv}", "--bbox=1,2,0,5"), ["--bbox", "positive"]),
        ((f"--image={photo}", f"--iuv={iuv}", "--bbox=500,2,10,5"), ["--bbox", "outside"]),
        ((f"--image={tmp_path / 'nope.jpg'}", f"--iuv={iuv}"), ["--image", "no such file"]),
        ((f"--image={photo}", f"--iuv={small}"), ["--iuv", "64x64", "120x90"]),
        ((f"--image={photo}", f"--iuv={grey}"), ["--iuv", "shape (90, 120)"]),
        ((f"--image={photo}", f"--iuv={high}"), ["--iuv", "above 24"]),
        ((f"--image={photo}", f"--iuv={iuv}", f"--output={tmp_path / 'file' / 'out'}"), ["--output"]),
        ((f"--checkpoint={tmp_path}", f"--image={photo}"), ["--checkpoint", "not a dct_jax checkpoint"]),
        ((f"--image={photo}", f"--iuv={iuv}", f"--model={tmp_path / 'nope.pkl'}"), ["body model", "--model"]),
        (("--example=9999",), ["--example=9999", "has 6 records (0 to 5)"]),  # the run's test split
        ((f"--image={photo}", f"--iuv={blank}"), ["--iuv", "no person in it"]),
        ((f"--image={photo}", f"--iuv={iuv}", "--bbox=0,0,5,5"), ["--bbox 0,0,5,5", "person is not in it"]),
    ]
    for args, words in cases:
        code, err = run(*base, *args)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("run_demo.py: error: "), (args, err)
        for word in words:
            assert word in lines[0], (args, word, lines[0])
    assert not os.path.exists(tmp_path / "out" / "params.json")

    # The same from the command line: exit status 2, one line, no traceback.
    proc = subprocess.run([sys.executable, "run_demo.py", f"--checkpoint={workdir}", f"--image={photo}",
                           f"--output={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "pass --iuv=FILE" in proc.stderr


def test_segmentation_message_and_reader(tmp_path):
    message = demo.missing_input_message("segmentation", "image_seg")
    assert "--segmentation=FILE" in message and "part index 1-24" in message
    seg = np.zeros((90, 120), np.uint8)
    seg[10:20, 30:40] = 7
    path = str(tmp_path / "seg.png")
    cv2.imwrite(path, seg)
    np.testing.assert_array_equal(demo.read_segmentation(path, (90, 120)), seg)
    with pytest.raises(demo.DemoError, match="120x90"):
        demo.read_segmentation(path, (64, 64))
    # Cropped as training crops it: nearest neighbour, so only part labels come out.
    inputs = demo.DemoInputs(np.zeros((90, 120, 3), np.uint8), bbox=demo.parse_bbox("20,0,40,30"), segmentation=seg)
    crops = demo.crops(inputs, ("image", "segmentation"), 32)
    assert crops["image"].shape == (1, 32, 32, 3) and crops["segmentation"].shape == (1, 32, 32)
    np.testing.assert_array_equal(crops["segmentation"][0],
                                  pipeline.crop_image(seg, np.array([20.0, -5.0, 40.0]), 32, nearest=True))
    assert set(np.unique(crops["segmentation"])) == {0, 7}
    with pytest.raises(demo.DemoError, match="--iuv=FILE"):
        demo.crops(inputs, ("image", "iuv"), 32)


def test_old_demo_still_works(run, tmp_path):
    out = str(tmp_path / "bodies.png")
    code, err = run(f"--output={out}", "--num_bodies=1", "--size=48")
    assert code == 0, err
    assert cv2.imread(out).shape[0] == 48
    code, err = run(f"--output={out}", f"--image={out}")
    assert code == 2 and "--image need(s) --checkpoint" in err


@pytest.mark.parametrize("args, message", [
    (("--num_bodies=0",), "--num_bodies must be at least 1, got 0"),
    (("--num_bodies=-2",), "--num_bodies must be at least 1, got -2"),
    (("--size=0",), "--size must be at least 16 pixels"),
    (("--output={tmp}/missing/x.png",), "does not exist; create it first"),
    (("--output={tmp}",), "is a directory"),
    (("--output={tmp}/x.jpg",), "must be a .png file"),
    (("--model={tmp}/none.pkl",), "is not a file"),
    (("--model={readme}",), "not an SMPL model file (expected .pkl or .npz)"),
])
def test_old_demo_user_errors_are_one_line(run, tmp_path, args, message):
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    code, err = run(*(a.format(tmp=tmp_path, readme=readme) for a in args))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_demo.py: error: ") and message in lines[0], err
    assert not list(tmp_path.iterdir())  # nothing written


def test_without_the_runs_dataset_it_generates_an_example(image_checkpoint, run, tmp_path, monkeypatch):
    def not_built(*args, **kwargs):
        raise ValueError("not built")

    monkeypatch.setattr(pipeline, "load_source", not_built)
    out = str(tmp_path / "out")
    code, err = run(f"--checkpoint={image_checkpoint}", f"--output={out}", "--example=3")
    assert code == 0, err
    params, _ = _check_outputs(out, panels=4, photo_hw=(224, 224))
    assert params["image"] == "dct_jax.synthetic.generate test example 3"
    assert params["metrics"]["pve_mm"] > 0
