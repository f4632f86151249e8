"""Tests for dct_jax.viewer: the demo's viewer.html, also opened in a real (headless) Chromium."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import pytest

from dct_jax import demo, render, smpl, synthetic, viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: install it (Debian/Ubuntu: apt-get install chromium) to open "
                             "viewer.html in a headless browser")
PHOTO_HW = (90, 120)  # a non-square photo: picture_scale 256/90, not an integer
CROP_BOX = (37.0, 11.0, 64.0)
WINDOW = (1000, 640)
GREY = 40  # demo._SIDE_BACKGROUND, the side view's background (the viewer's with the photo hidden)


def _body(model, rng, shift):
    pose, betas = synthetic.sample_pose(rng), synthetic.sample_betas(rng)
    body = demo.pose_body(model, np.array([1.0, 0.0, 0.0]), pose, betas)
    lo, hi = body.vertices[:, :2].min(0), body.vertices[:, :2].max(0)
    camera = synthetic.frame_camera(body.vertices, 1.6 / float((hi - lo).max()), np.asarray(shift))
    return dataclasses.replace(body, camera=np.asarray(camera, np.float64))


def _photo():
    """A photo whose blue channel stays at or below 20: the light blue / green meshes stand out."""
    yy, xx = np.mgrid[0:PHOTO_HW[0], 0:PHOTO_HW[1]]
    return np.stack([(2 * xx) % 120, (3 * yy + xx) % 100, 20 * ((xx // 8 + yy // 8) % 2)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return smpl.load(None)


@pytest.fixture(scope="module")
def result(model):
    """A synthetic-example-mode result of the default body: prediction and (another) ground truth."""
    rng = np.random.default_rng(3)
    prediction, ground_truth = _body(model, rng, (0.05, -0.05)), _body(model, rng, (-0.1, 0.05))
    inputs = demo.DemoInputs(_photo(), bbox=np.array([*CROP_BOX[:2], 64.0, 64.0]), crop_box=np.array(CROP_BOX))
    info = {"image": "photo </script><script>alert(1)</script>", "checkpoint": "/tmp/run", "step": 2,
            "synthetic": True}
    return demo.DemoResult(inputs=inputs, prediction=prediction, faces=np.asarray(model.faces), info=info,
                           ground_truth=ground_truth, metrics={"pve_mm": 123.4, "mpjpe_mm": 98.7})


@pytest.fixture(scope="module")
def outputs(result, tmp_path_factory):
    directory = tmp_path_factory.mktemp("viewer")
    paths = demo.write_outputs(result, str(directory))
    assert set(paths) == {"overlay.png", "mesh.obj", "params.json", "viewer.html"}
    return paths


# ----------------------------------------------------------------------------- pure python


def test_arrays_round_trip():
    array = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    text = viewer.encode_array(array, "<f4")
    np.testing.assert_array_equal(viewer.decode_array(text, "<f4", (4, 3)), array.astype(np.float32))
    assert len(viewer.decode_array(viewer.encode_array(np.arange(5), "<u4"), "<u4", (5,)).tobytes()) == 20


def test_closed_and_orientation():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    outward = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert viewer.is_closed(outward) and viewer.orientation(vertices, outward) == 1
    assert viewer.orientation(vertices, outward[:, ::-1]) == -1
    assert not viewer.is_closed(outward[:3]) and viewer.orientation(vertices, outward[:3]) == 0
    mixed = outward.copy()
    mixed[0] = mixed[0, ::-1]
    assert not viewer.is_closed(mixed)


def test_photo_data_url():
    small = _photo()
    url = viewer.photo_data_url(small)
    assert url.startswith("data:image/png;base64,")
    decoded = cv2.imdecode(viewer.decode_array(url.split(",", 1)[1], "u1", (-1,)), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), small)  # lossless
    noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)  # PNG > 2 MiB
    assert viewer.photo_data_url(noise).startswith("data:image/jpeg;base64,")
    assert viewer.photo_data_url(small, "jpeg").startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="image_format"):
        viewer.photo_data_url(small, "gif")


def test_viewer_data(result, model):
    data = viewer.viewer_data(result)
    picture, scale = viewer.picture(result.inputs)
    assert scale == demo.picture_scale(*PHOTO_HW) and data["scale"] == scale
    assert (data["image"]["height"], data["image"]["width"]) == picture.shape[:2] == (256, 341)
    assert data["photo_size"] == list(PHOTO_HW) and data["crop_box"] == list(CROP_BOX)
    encoded = cv2.imdecode(viewer.decode_array(data["image"]["src"].split(",", 1)[1], "u1", (-1,)), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(encoded, cv2.COLOR_BGR2RGB), picture)
    faces = viewer.decode_array(data["faces"], "<u4", (data["num_faces"], 3))
    np.testing.assert_array_equal(faces, np.asarray(model.faces))
    assert [b["name"] for b in data["bodies"]] == ["prediction", "ground truth"]
    for body, truth in zip(data["bodies"], (result.prediction, result.ground_truth)):
        vertices = viewer.decode_array(body["vertices"], "<f4", (body["num_vertices"], 3))
        np.testing.assert_array_equal(vertices, truth.vertices.astype(np.float32))
        assert body["camera"] == list(truth.camera) and body["orientation"] == 1  # closed, outward faces
    assert data["metrics"] == {"pve_mm": 123.4, "mpjpe_mm": 98.7}
    assert data["style"]["alpha"] == demo._OVERLAY_ALPHA and data["style"]["background"] == GREY

    # A photo of the user's (no ground truth): one panel.
    single = viewer.viewer_data(dataclasses.replace(result, ground_truth=None, metrics=None))
    assert [b["name"] for b in single["bodies"]] == ["prediction"] and single["metrics"] is None
    with pytest.raises(ValueError, match="faces"):
        viewer.viewer_data(dataclasses.replace(result, faces=np.asarray(model.faces)[:, :2]))


def test_page_is_self_contained(outputs, result):
    with open(outputs["viewer.html"], encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>")
    # Nothing to fetch: no address, no external script, style sheet, image or font.
    assert not re.search(r"\b(https?|ftp|wss?|file):", page, re.IGNORECASE)
    assert not re.search(r"<(link|iframe|object|embed|img)\b|@import|url\(|<script[^>]*\bsrc=", page, re.IGNORECASE)
    for value in re.findall(r"""<[^>]*\s(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.IGNORECASE):
        assert value.startswith("data:"), value
    # The photo's name cannot close the data block: exactly the page's two script elements.
    assert page.count("</script>") == 2 and "alert(1)" in page
    block = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page, re.DOTALL)
    assert json.loads(block.group(1)) == viewer.viewer_data(result)


# ----------------------------------------------------------------------------- in a browser


def _screenshot(page: str, fragment: str, path: str) -> np.ndarray:
    """One headless Chromium run: the page (with ``#fragment`` options) as ``(H, W, 3)`` RGB."""
    with tempfile.TemporaryDirectory(prefix="dct_viewer_chromium_") as profile:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
                   f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000",
                   f"--screenshot={path}", pathlib.Path(page).as_uri() + fragment]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert proc.returncode == 0 and image is not None, proc.stderr[-3000:]
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _find_panels(screen: np.ndarray, picture: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Top-left ``(x, y)`` of the ``count`` best places of ``picture`` in ``screen``, left to right."""
    scores = cv2.matchTemplate(screen.astype(np.float32), picture.astype(np.float32), cv2.TM_SQDIFF_NORMED)
    h, w = picture.shape[:2]
    places = []
    for _ in range(count):
        y, x = np.unravel_index(np.argmin(scores), scores.shape)
        assert scores[y, x] < 0.35, f"the photo is not in the screenshot (best match {scores[y, x]:.3f})"
        places.append((int(x), int(y)))
        scores[max(0, y - h // 2):y + h // 2, max(0, x - w // 2):x + w // 2] = np.inf
    return sorted(places)


def _differs(image: np.ndarray, background: np.ndarray | int, threshold: int = 16) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.asarray(background, np.int16)).max(axis=-1) > threshold


def _compare(mask: np.ndarray, expected: np.ndarray, what: str) -> float:
    iou = (mask & expected).sum() / max((mask | expected).sum(), 1)
    assert expected.sum() > 500 and iou > 0.85, f"{what}: IoU {iou:.3f}"
    # The same place to a fraction of a pixel (no half-pixel or scale error). Phase correlation: the
    # browser's antialiased edges make its mask a little wider, which moves centroids of thin limbs.
    (dx, dy), _ = cv2.phaseCorrelate(expected.astype(np.float64), mask.astype(np.float64))
    assert max(abs(dx), abs(dy)) < 0.5, f"{what}: the mesh is shifted by {dx:.2f}, {dy:.2f} pixels (x, y)"
    return float(iou)


def _face_shades(body: demo.Body, result: demo.DemoResult, vertices: np.ndarray, shape) -> np.ndarray:
    """``(h, w)`` the shade the viewer should give each pixel (NaN off the mesh): the Lambert shade of the
    face the overlay's z-buffer sees there, from the mean of its corners' smooth normals."""
    faces = np.asarray(result.faces)
    _, scale = viewer.picture(result.inputs)
    xy = demo.project_to_photo(vertices, body.camera, result.inputs.crop_box) * scale
    _, fragments = render.render(np.concatenate([xy, vertices[:, 2:]], axis=1), faces, None, shape, "mask",
                                 return_fragments=True)
    normals = render._vertex_normals(vertices, faces)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals[faces].sum(axis=1)
    light = np.asarray(render.DEFAULT_LIGHT_DIRECTION) / np.linalg.norm(render.DEFAULT_LIGHT_DIRECTION)
    diffuse = normals @ light / np.linalg.norm(normals, axis=1)
    diffuse = np.where(normals[:, 2] > 0, -diffuse, diffuse)  # two-sided
    shades = np.append(0.4 + 0.6 * np.maximum(diffuse, 0.0), np.nan)
    return shades[fragments.face_ids]  # face -1 (background): NaN


def _check_shading(crop: np.ndarray, background, alpha: float, mask: np.ndarray, color, expected: np.ndarray,
                   what: str) -> None:
    """Inside the mesh: ``alpha * shade * 255 * color + (1 - alpha) * background`` with the shade of the face
    that should be seen there (the visible one: back faces are hidden, the faces are drawn back to front)."""
    inside = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & np.isfinite(expected)
    background = np.broadcast_to(np.asarray(background, np.float64), crop.shape)
    color = 255 * np.asarray(color)
    mesh = (crop[inside] - (1 - alpha) * background[inside]) / alpha
    shade = mesh @ color / (color @ color)
    assert np.median(np.abs(mesh - shade[:, None] * color)) < 3, what  # the body's colour, at that opacity
    error = np.abs(shade - expected[inside])
    # (Pixels on a face's edge mix two shades.)
    assert np.median(error) < 0.02 and np.percentile(error, 90) < 0.1, (what, np.percentile(error, [50, 90]))


@needs_chromium
def test_viewer_in_chromium(outputs, result, tmp_path):
    """The first view puts the meshes where overlay.png has them; "side view" is overlay's side panel."""
    picture, _ = viewer.picture(result.inputs)
    h, w = picture.shape[:2]
    overlay = cv2.cvtColor(cv2.imread(outputs["overlay.png"]), cv2.COLOR_BGR2RGB)
    tiles = [overlay[:, k * w:(k + 1) * w] for k in range(4)]  # prediction, its side, ground truth, its side
    # overlay.png's panels carry a label (top left); leave its pixels out of the comparison.
    unlabelled = (demo.panels(result.inputs, result.prediction, result.faces)
                  + demo.panels(result.inputs, result.ground_truth, result.faces, color=demo._GT_COLOR))
    labels = [np.any(tile != plain, axis=-1) for tile, plain in zip(tiles, unlabelled)]
    for label in labels:
        assert label[h // 4:].sum() == 0  # the label stays in the top left corner
    bodies = ((result.prediction, demo._PRED_COLOR), (result.ground_truth, demo._GT_COLOR))
    ious = {}

    # The camera's view: both panels show the photo at the overlay's scale, the mesh over it.
    screen = _screenshot(outputs["viewer.html"], "", str(tmp_path / "camera.png"))
    places = _find_panels(screen, picture, 2)
    assert places[0][1] == places[1][1] and places[1][0] >= places[0][0] + w  # side by side
    crops = [screen[y:y + h, x:x + w] for x, y in places]
    for k, (what, (body, color)) in enumerate(zip(("prediction", "ground truth"), bodies)):
        crop, tile, label = crops[k], tiles[2 * k], labels[2 * k]
        mask, expected = _differs(crop, picture) & ~label, _differs(tile, picture) & ~label
        ious[what] = _compare(mask, expected, what)
        away = ~cv2.dilate(expected.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.abs(crop[away].astype(int) - picture[away]).max() <= 2  # the photo itself, unscaled
        other = tiles[2 - 2 * k]
        assert (mask & _differs(other, picture)).sum() < 0.8 * mask.sum()  # not the other body
        _check_shading(crop, picture, demo._OVERLAY_ALPHA, mask, color,
                       _face_shades(body, result, body.vertices, (h, w)), what)

    # Turned 90 degrees about the body's centre, the photo hidden: overlay.png's side views (opaque).
    screen = _screenshot(outputs["viewer.html"], "#view=side&photo=0", str(tmp_path / "side.png"))
    crops = [screen[y:y + h, x:x + w] for x, y in places]
    for k, (what, (body, color)) in enumerate(zip(("prediction, side", "ground truth, side"), bodies)):
        crop, tile, label = crops[k], tiles[2 * k + 1], labels[2 * k + 1]
        assert (crop[:3, :3] == GREY).all()
        mask = _differs(crop, GREY, 12) & ~label
        ious[what] = _compare(mask, _differs(tile, GREY, 12) & ~label, what)
        _check_shading(crop, GREY, 1.0, mask, color,
                       _face_shades(body, result, demo.side_vertices(body.vertices), (h, w)), what)
    print("IoU with overlay.png:", {k: round(v, 3) for k, v in ious.items()})
