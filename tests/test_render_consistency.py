"""The renderer, the default body's chart and phi agree with each other.

Render the IUV map of a posed default body; for every foreground pixel, phi
(iuv_to_surface) gives a surface point, which projected with the same camera
must land on that pixel, and must be the visible surface there (its depth is
the z-buffer's), not an occluded one.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dct_jax import densepose, render, smpl


@pytest.fixture(scope="module")
def posed_body():
    model = smpl.load()
    rng = np.random.default_rng(0)
    pose = np.zeros((24, 3), np.float32)
    pose[0] = [np.pi, 0.3, 0.0]  # upright in the image frame, turned a little
    pose[1:] = rng.normal(0, 0.25, size=(23, 3))
    pose[16] = [0, 0, -1.0]  # left arm down, in front of the body: self-occlusion
    pose[18] = [0, -1.2, 0]
    betas = rng.normal(size=10).astype(np.float32)
    vertices = np.asarray(smpl.forward(model, pose, betas).vertices)
    camera = np.array([0.9, 0.0, 0.0], np.float32)
    camera[1:] = -vertices[:, :2].mean(axis=0)
    return model, vertices, camera


def test_iuv_pixels_map_back_to_themselves(posed_body):
    _, vertices, camera = posed_body
    chart = densepose.load_chart("default")
    size = 224
    iuv, frags = render.render(vertices, None, camera, size, "iuv", chart=chart,
                               return_fragments=True)
    rows, cols = np.nonzero(iuv[..., 0])
    assert rows.size > 2000  # the body fills a good part of the crop
    points = densepose.iuv_to_surface(chart, iuv[rows, cols, 0], iuv[rows, cols, 1] / 255.0,
                                      iuv[rows, cols, 2] / 255.0)
    assert points.valid.all()
    xy = np.asarray(densepose.project_surface_points(jnp.asarray(vertices), points, jnp.asarray(camera)))
    pixels = (xy + 1.0) * (size / 2)
    error = np.linalg.norm(pixels - np.stack([cols + 0.5, rows + 0.5], axis=-1), axis=-1)
    assert np.mean(error <= 1.5) >= 0.95, np.percentile(error, [50, 90, 95, 99])

    # The surface point is the visible one: its depth is the z-buffer's.
    surface = np.einsum("pk,pkc->pc", points.barycentric, vertices[points.vertex_ids])
    depth_gap = surface[:, 2] - frags.depth[rows, cols]
    assert np.mean(np.abs(depth_gap) <= 0.02) >= 0.95, np.percentile(np.abs(depth_gap), [50, 95, 99])


def test_nearest_face_wins_the_z_test(posed_body):
    model, vertices, camera = posed_body
    size = 224
    faces = np.asarray(model.faces)
    _, frags = render.render(vertices, faces, camera, size, "mask", return_fragments=True)
    rows, cols = np.nonzero(frags.mask)
    pick = np.random.default_rng(1).choice(rows.size, size=300, replace=False)
    # Brute force: every face whose projection contains the pixel centre, and
    # its depth there; the z-buffer must hold the smallest.
    xy = (camera[0] * (vertices[:, :2] + camera[1:]) + 1.0) * (size / 2)
    a, b, c = (xy[faces[:, k]] for k in range(3))
    overlapping = 0
    for r, col in zip(rows[pick], cols[pick]):
        p = np.array([col + 0.5, r + 0.5])
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
            w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        w0 = 1 - w1 - w2
        hit = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6) & (den != 0)
        z = (w0 * vertices[faces[:, 0], 2] + w1 * vertices[faces[:, 1], 2]
             + w2 * vertices[faces[:, 2], 2])[hit]
        assert z.size >= 1
        overlapping += z.size > 1
        np.testing.assert_allclose(frags.depth[r, col], z.min(), atol=1e-5)
    assert overlapping > 50  # most pixels see front and back surfaces: a real z-test
