"""Tests for dct_jax.camera's weak-perspective -> perspective conversions.

A posed default body is projected with the weak-perspective camera and with
the converted pinhole cameras: points at Z = 0 must agree exactly, the rest
within an error that shrinks like 1 / focal length, in the crop and in a full
(non-square) image, and the official renderer's camera must be the one
``render.project_vertices(projection="perspective")`` uses.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from dct_jax import camera, render, smpl
from dct_jax.data import schema

CROP = 224
IMAGE_HW = (480, 640)  # non-square full image
CROP_BOX = np.array([400.0, 60.0, 180.0])  # [x0, y0, side]: right of and above the image centre


@pytest.fixture(scope="module")
def body():
    """``(vertices (V, 3) float64, faces (F, 3), camera (3,))``: the default body filling most of the crop.

    Its rest pose, made upright in the image frame (the HMR mean rotation
    [pi, 0, 0]) and turned about the vertical so that the outstretched arms
    span ~0.5 m in depth (numpy only: posing with jax would cost seconds of
    compilation and adds nothing here).
    """
    model = smpl.load()
    turn = 0.3
    upright = np.diag([1.0, -1.0, -1.0])  # rotation by pi about x
    about_y = np.array([[np.cos(turn), 0.0, np.sin(turn)], [0.0, 1.0, 0.0], [-np.sin(turn), 0.0, np.cos(turn)]])
    vertices = np.asarray(model.v_template, np.float64) @ (about_y @ upright).T
    cam = np.array([0.9, 0.0, 0.0])
    cam[1:] = -vertices[:, :2].mean(axis=0)
    return vertices, np.asarray(model.faces), cam


def _max_px(a, b) -> float:
    return float(np.max(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)))


def _flat(vertices):
    flat = vertices.copy()
    flat[:, 2] = 0.0
    return flat


def test_body_has_depth(body):
    # The comparisons below only mean something if the body is not flat.
    vertices, _, cam = body
    assert np.ptp(vertices[:, 2]) > 0.3
    xy = camera.weak_perspective_project(vertices, cam)
    assert 0.5 < np.max(np.abs(xy)) < 1.0  # inside the crop, not tiny


def test_crop_perspective_converges_to_weak_perspective(body):
    vertices, _, cam = body
    centre = (CROP / 2, CROP / 2)
    weak_px = camera.normalized_to_pixels(camera.weak_perspective_project(vertices, cam), CROP)
    errors = []
    for focal in (500.0, 5000.0, 50000.0):
        translation = camera.weak_to_perspective_translation(cam, focal_length=focal, crop_size=CROP)
        np.testing.assert_allclose(translation[:2], cam[1:], rtol=1e-6)
        project = functools.partial(camera.perspective_project, translation=translation,
                                    focal_length=focal, principal_point=centre)
        # The plane Z = 0 lands exactly on the weak-perspective projection ...
        np.testing.assert_allclose(project(_flat(vertices)), weak_px, rtol=0, atol=2e-3)
        # ... and a point at depth Z moves towards the centre by Z / (tz + Z) of its offset.
        px = project(vertices)
        z = vertices[:, 2:3]
        tz = float(translation[2])
        expected = centre + (np.asarray(weak_px) - centre) * tz / (tz + z)
        np.testing.assert_allclose(px, expected, rtol=0, atol=2e-3)
        errors.append(_max_px(px, weak_px))
    assert errors[0] > 1.0  # f = 500: clearly visible
    assert errors[1] < 1.0  # f = 5000 on a 224 crop (SPIN): sub-pixel
    assert errors[0] > errors[1] > errors[2]
    # The error shrinks like 1 / f.
    assert 8.0 < errors[1] / errors[2] < 12.0
    assert 8.0 < errors[0] / errors[1] < 12.0


def test_full_image_perspective_lands_on_the_crop(body):
    vertices, _, cam = body
    height, width = IMAGE_HW
    centre = (width / 2, height / 2)
    weak_px = schema.crop_to_image(np.asarray(camera.weak_perspective_project(vertices, cam)), CROP_BOX)
    assert weak_px[:, 0].min() > width / 2  # the body is well off the image centre
    errors = []
    for focal in (500.0, 5000.0, 50000.0):
        translation = camera.crop_to_full_image_translation(
            cam, CROP_BOX, focal_length=focal, image_size=IMAGE_HW)
        project = functools.partial(camera.perspective_project, translation=translation,
                                    focal_length=focal, principal_point=centre)
        np.testing.assert_allclose(project(_flat(vertices)), weak_px, rtol=0, atol=5e-3)
        px = project(vertices)
        tz = float(translation[2])
        expected = centre + (weak_px - centre) * tz / (tz + vertices[:, 2:3])
        np.testing.assert_allclose(px, expected, rtol=0, atol=5e-3)
        errors.append(_max_px(px, weak_px))
    # Off the optical axis the error is larger than in the crop, but it too shrinks like 1 / f.
    assert errors[0] > errors[1] > errors[2]
    assert 8.0 < errors[0] / errors[1] < 12.0
    assert 8.0 < errors[1] / errors[2] < 12.0


def test_full_image_with_a_centred_box_is_the_crop_camera(body):
    # A box centred on the image: the full-image camera is the crop camera
    # with the focal length scaled by crop_size / side.
    vertices, _, cam = body
    height, width = IMAGE_HW
    side = 300.0
    box = np.array([width / 2 - side / 2, height / 2 - side / 2, side])
    full = camera.crop_to_full_image_translation(cam, box, focal_length=5000.0, image_size=IMAGE_HW)
    crop = camera.weak_to_perspective_translation(cam, focal_length=5000.0 * CROP / side, crop_size=CROP)
    np.testing.assert_allclose(full, crop, rtol=1e-6)
    crop_px = camera.perspective_project(vertices, crop, focal_length=5000.0 * CROP / side,
                                         principal_point=(CROP / 2, CROP / 2))
    full_px = camera.perspective_project(vertices, full, focal_length=5000.0,
                                         principal_point=(width / 2, height / 2))
    back_in_image = schema.crop_to_image(np.asarray(camera.pixels_to_normalized(crop_px, CROP)), box)
    np.testing.assert_allclose(full_px, back_in_image, rtol=0, atol=2e-3)


@pytest.mark.parametrize("focal", [5.0, 2.0])
def test_official_renderer_translation_matches_render(body, focal):
    vertices, faces, cam = body
    translation = camera.official_renderer_translation(cam, focal=focal)
    for size in (64, CROP):
        np.testing.assert_allclose(
            translation,
            camera.weak_to_perspective_translation(cam, focal_length=0.5 * size * focal, crop_size=size),
            rtol=1e-6)
    ref_xy, ref_depth = render.project_vertices(vertices, cam, CROP, projection="perspective", focal=focal)
    xy = camera.perspective_project(vertices, translation, focal_length=0.5 * CROP * focal,
                                    principal_point=(CROP / 2, CROP / 2))
    np.testing.assert_allclose(xy, ref_xy, rtol=0, atol=2e-3)
    np.testing.assert_allclose(vertices[:, 2] + float(translation[2]), ref_depth, rtol=1e-6)
    # The renderer's perspective mode covers the pixels our projection does.
    mask = render.render(vertices, faces, cam, CROP, "mask", projection="perspective", focal=focal)
    ours = render.rasterize(np.asarray(xy), vertices[:, 2] + float(translation[2]), faces, CROP, CROP,
                            perspective_correct=True, with_barycentric=False).mask
    assert mask.sum() > 0.05 * CROP * CROP
    assert np.sum(mask != ours) <= 5  # float32 vs float64 pixel centres on an edge


def test_default_official_focal_is_five():
    np.testing.assert_allclose(camera.official_renderer_translation(np.array([0.5, 0.1, -0.2])),
                               [0.1, -0.2, 10.0], rtol=1e-6)


def test_batched_and_jitted(body):
    vertices, _, cam = body
    rng = np.random.default_rng(1)
    cams = np.stack([cam * [s, 1, 1] for s in (0.7, 0.9, 1.1)])
    boxes = np.stack([CROP_BOX, CROP_BOX + [-300, 100, 40], CROP_BOX * [0.5, 1, 2]])
    focals = np.array([1000.0, 5000.0, 20000.0])
    points = vertices[None] + rng.normal(scale=0.01, size=(3, 1, 3))

    def pipeline(cams, boxes, focals, points):
        crop = camera.weak_to_perspective_translation(cams, focal_length=focals, crop_size=CROP)
        full = camera.crop_to_full_image_translation(cams, boxes, focal_length=focals, image_size=IMAGE_HW)
        return (crop, full, camera.official_renderer_translation(cams),
                camera.perspective_project(points, full, focal_length=focals, principal_point=(320.0, 240.0)))

    batched = jax.jit(pipeline)(cams, boxes, focals, points)
    assert [a.shape for a in batched] == [(3, 3), (3, 3), (3, 3), (3, points.shape[1], 2)]
    for i in range(3):  # each batch element alone, eagerly, gives the same
        one = pipeline(cams[i], boxes[i], focals[i], points[i])
        for a, b in zip(batched, one):
            np.testing.assert_allclose(a[i], b, rtol=1e-5)


@pytest.mark.parametrize("bad_camera", [[0.0, 0.1, 0.2], [-0.9, 0.0, 0.0], [np.nan, 0.0, 0.0],
                                        [np.inf, 0.0, 0.0], [[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]]])
def test_non_positive_or_non_finite_scale_is_refused(bad_camera):
    bad_camera = np.array(bad_camera)
    box = np.broadcast_to(CROP_BOX, bad_camera.shape)
    with pytest.raises(ValueError, match=r"camera scale s .* must be finite and > 0"):
        camera.weak_to_perspective_translation(bad_camera, focal_length=5000.0, crop_size=CROP)
    with pytest.raises(ValueError, match=r"camera scale s"):
        camera.crop_to_full_image_translation(bad_camera, box, focal_length=5000.0, image_size=IMAGE_HW)
    with pytest.raises(ValueError, match=r"camera scale s"):
        camera.official_renderer_translation(bad_camera)


@pytest.mark.parametrize("call,match", [
    (lambda: camera.weak_to_perspective_translation([0.9, 0.0], focal_length=1.0, crop_size=CROP),
     r"camera must have shape \(\.\.\., 3\) as \(s, tx, ty\), got shape \(2,\)"),
    (lambda: camera.weak_to_perspective_translation([0.9, 0, 0], focal_length=0.0, crop_size=CROP),
     "focal_length must be finite and > 0"),
    (lambda: camera.weak_to_perspective_translation([0.9, 0, 0], focal_length=-5.0, crop_size=CROP),
     "focal_length must be finite and > 0"),
    (lambda: camera.weak_to_perspective_translation([0.9, 0, 0], focal_length=5.0, crop_size=0),
     "crop_size must be finite and > 0"),
    (lambda: camera.crop_to_full_image_translation([0.9, 0, 0], [0, 0, 0], focal_length=5.0,
                                                   image_size=IMAGE_HW),
     "crop_box side must be finite and > 0"),
    (lambda: camera.crop_to_full_image_translation([0.9, 0, 0], [0, 0], focal_length=5.0,
                                                   image_size=IMAGE_HW),
     r"crop_box must have shape \(\.\.\., 3\) as \[x0, y0, side\]"),
    (lambda: camera.crop_to_full_image_translation([0.9, 0, 0], CROP_BOX, focal_length=5.0,
                                                   image_size=480),
     r"image_size must have shape \(\.\.\., 2\) as \(height, width\)"),
    (lambda: camera.crop_to_full_image_translation([0.9, 0, 0], CROP_BOX, focal_length=5.0,
                                                   image_size=(0, 640)),
     "image_size must be finite and > 0"),
    (lambda: camera.official_renderer_translation([0.9, 0, 0], focal=0.0), "focal must be finite and > 0"),
    (lambda: camera.perspective_project(np.zeros((5, 2)), [0, 0, 5], focal_length=1.0, principal_point=(0, 0)),
     r"points must have shape \(\.\.\., 3\)"),
    (lambda: camera.perspective_project(np.zeros(3), [0, 0, 5], focal_length=1.0, principal_point=(0, 0)),
     r"points must have shape \(\.\.\., N, 3\)"),
    (lambda: camera.perspective_project(np.zeros((5, 3)), [0, 0, 5], focal_length=1.0, principal_point=(0, 0, 0)),
     r"principal_point must have shape \(\.\.\., 2\)"),
    (lambda: camera.perspective_project(np.zeros((5, 3)), [0, 5], focal_length=1.0, principal_point=(0, 0)),
     r"translation must have shape \(\.\.\., 3\)"),
])
def test_bad_arguments_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_scale_is_not_checked_under_jit():
    # Documented: traced values cannot be checked; s = 0 gives an infinite depth, no error.
    fn = jax.jit(lambda c: camera.weak_to_perspective_translation(c, focal_length=5000.0, crop_size=CROP))
    assert not np.isfinite(fn(np.array([0.0, 0.1, 0.2]))[2])
    # Shapes are still checked at trace time.
    with pytest.raises(ValueError, match="camera must have shape"):
        fn(np.zeros(2))
