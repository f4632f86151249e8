"""Tests for the free default body (``dct_jax/assets/default_body.npz``) and its chart.

References: an independent NumPy linear-blend-skinning loop (SMPL's equations
written out per joint), the generalized winding number of the closed mesh
(solid angles) for inside/outside, a brute-force rasterization of each UV part
for overlaps, and the body mesh itself for the chart round trip.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import pytest

from dct_jax import densepose, smpl

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dct_jax", "assets")
BODY_PATH = os.path.join(ASSETS, "default_body.npz")
CHART_PATH = os.path.join(ASSETS, "default_chart.npz")
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(BODY_PATH) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def model() -> smpl.SMPLModel:
    return smpl.load()


@pytest.fixture(scope="module")
def forward():
    return jax.jit(smpl.forward)


def _height(vertices: np.ndarray) -> float:
    return float(np.ptp(np.asarray(vertices)[..., 1]))


def _winding_number(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalized winding number (Jacobson et al. 2013) of a closed mesh at points ``(P, 3)``."""
    a, b, c = (verts[faces[:, i]][None] - points[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    num = np.einsum("pfd,pfd->pf", a, np.cross(b, c))
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return np.arctan2(num, den).sum(-1) / (2 * np.pi)


def _lbs_reference(arr: dict[str, np.ndarray], rotmats: np.ndarray, betas: np.ndarray):
    """SMPL's skinning, written out in NumPy (zero pose blend shapes are added too)."""
    v = arr["v_template"] + arr["shapedirs"] @ betas
    v = v + arr["posedirs"] @ (rotmats[1:] - np.eye(3)).reshape(-1)
    joints = arr["J_regressor"] @ (arr["v_template"] + arr["shapedirs"] @ betas)
    world = np.zeros((24, 4, 4))
    for j, p in enumerate(SMPL_PARENTS):
        local = np.eye(4)
        local[:3, :3] = rotmats[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world[j] = local if p < 0 else world[p] @ local
    posed_joints = world[:, :3, 3].copy()
    world[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    per_vertex = np.einsum("vj,jab->vab", arr["weights"], world)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], v) + per_vertex[:, :3, 3], posed_joints


# ----------------------------------------------------------------------------- file format


def test_file_has_smpl_keys_and_is_small(arrays):
    assert os.path.getsize(BODY_PATH) < 4e6
    for key in KEYS:
        assert key in arrays, key
    v = arrays["v_template"].shape[0]
    assert arrays["v_template"].shape == (v, 3)
    assert arrays["shapedirs"].shape == (v, 3, 10)
    assert arrays["posedirs"].shape == (v, 3, 207)
    assert arrays["J_regressor"].shape == (24, v)
    assert arrays["weights"].shape == (v, 24)
    assert arrays["kintree_table"].shape == (2, 24)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert arrays[key].dtype == np.float32, key
    assert 6000 < v < 8000  # about SMPL's 6,890
    np.testing.assert_allclose(arrays["weights"].sum(1), 1.0, atol=1e-5)
    assert (arrays["weights"] >= 0).all()
    np.testing.assert_allclose(arrays["J_regressor"].sum(1), 1.0, atol=1e-5)
    assert (arrays["J_regressor"] >= 0).all()
    assert tuple(arrays["kintree_table"][0]) == SMPL_PARENTS
    assert tuple(arrays["kintree_table"][1]) == tuple(range(24))


def test_mesh_is_closed_manifold(arrays):
    f = arrays["f"].astype(np.int64)
    assert f.min() == 0 and f.max() == arrays["v_template"].shape[0] - 1
    assert len(np.unique(f)) == arrays["v_template"].shape[0]
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()
    # Outward orientation: the signed volume is positive and about a person's (~0.06 m^3).
    v = arrays["v_template"].astype(np.float64)[f]
    volume = np.einsum("fd,fd->f", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6
    assert 0.03 < volume < 0.15


# ----------------------------------------------------------------------------- smpl.load()


def test_load_without_path_is_the_default_body_and_fast(arrays):
    smpl.load()  # warm up (first jax array creation)
    start = time.perf_counter()
    model = smpl.load()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"smpl.load() took {elapsed:.2f} s"
    assert model.num_vertices == arrays["v_template"].shape[0]
    assert model.num_joints == 24 and model.num_betas == 10
    np.testing.assert_allclose(np.asarray(model.v_template), arrays["v_template"], atol=1e-6)


def test_forward_matches_numpy_skinning(arrays, model, forward):
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=0.4, size=(24, 3))
    betas = rng.normal(size=10)
    out = forward(model, pose.reshape(1, 72).astype(np.float32), betas[None].astype(np.float32))
    from scipy.spatial.transform import Rotation

    rotmats = Rotation.from_rotvec(pose).as_matrix()
    arr64 = {k: arrays[k].astype(np.float64) for k in KEYS if k not in ("kintree_table", "f")}
    verts, joints = _lbs_reference(arr64, rotmats, betas)
    np.testing.assert_allclose(np.asarray(out.vertices)[0], verts, atol=2e-5)
    np.testing.assert_allclose(np.asarray(out.joints)[0], joints, atol=2e-5)


def test_zero_pose_stands_upright_in_t_pose(model, forward):
    out = forward(model, np.zeros((1, 72), np.float32), np.zeros((1, 10), np.float32))
    v, j = np.asarray(out.vertices)[0], np.asarray(out.joints)[0]
    assert 1.5 < _height(v) < 2.0
    names = smpl.SMPL_JOINT_NAMES
    y = {n: j[i, 1] for i, n in enumerate(names)}
    for n in ("left_ankle", "right_ankle", "left_foot", "right_foot", "left_knee", "right_knee"):
        assert y[n] < y["pelvis"] - 0.3, n
    assert y["pelvis"] < y["spine1"] < y["spine2"] < y["spine3"] < y["neck"] < y["head"]
    # SMPL's frame: the body's left is +x, it faces +z (toes ahead of heels), y is up.
    for i, n in enumerate(names):
        if n.startswith("left_"):
            assert j[i, 0] > 0.03 and j[names.index("right_" + n[5:]), 0] < -0.03, n
    feet = v[v[:, 1] < v[:, 1].min() + 0.05]
    assert feet[:, 2].max() > j[names.index("left_ankle"), 2] + 0.08
    # T-pose: arms out horizontally, wrists far out at shoulder height.
    for side in ("left", "right"):
        wrist, shoulder = j[names.index(f"{side}_wrist")], j[names.index(f"{side}_shoulder")]
        assert abs(wrist[0]) > 0.6 and abs(wrist[1] - shoulder[1]) < 0.08, side


def test_betas_change_height_and_girth_smoothly(model, forward):
    steps = np.linspace(-2.5, 2.5, 11, dtype=np.float32)
    heights, widths = [], []
    for k in range(3):
        betas = np.zeros((len(steps), 10), np.float32)
        betas[:, k] = steps
        v = np.asarray(forward(model, np.zeros((len(steps), 72), np.float32), betas).vertices)
        heights.append(np.ptp(v[..., 1], axis=-1))
        waist = np.abs(v[..., 1] - v[:, :, 1].mean(-1, keepdims=True) - 0.1) < 0.02  # belly height band
        widths.append(np.array([np.ptp(vi[w][:, 2]) for vi, w in zip(v, waist)]))
    heights, widths = np.array(heights), np.array(widths)
    # beta 0 makes the body taller, monotonically and smoothly (nearly linearly).
    assert (np.diff(heights[0]) > 0).all()
    assert heights[0, -1] - heights[0, 0] > 0.15
    assert np.abs(np.diff(heights[0], 2)).max() < 0.3 * np.diff(heights[0]).mean()
    # Some leading beta changes the belly depth (girth) by several centimetres.
    assert np.ptp(widths, axis=1).max() > 0.05
    # Random betas ~ N(0, 1) give plausible adults.
    betas = np.random.default_rng(1).normal(size=(11, 10)).astype(np.float32)
    v = np.asarray(forward(model, np.zeros((11, 72), np.float32), betas).vertices)
    h = np.ptp(v[..., 1], axis=-1)
    assert 1.35 < h.min() and h.max() < 2.15 and h.std() > 0.04


def test_joints_lie_inside_the_mesh(model, forward):
    rng = np.random.default_rng(2)
    betas = np.concatenate([np.zeros((1, 10)), rng.normal(size=(10, 10))]).astype(np.float32)
    pose = np.zeros((11, 24, 3), np.float32)
    pose[3:, 1:] = rng.normal(scale=0.2, size=(8, 23, 3))  # mild poses as well
    out = forward(model, pose.reshape(11, 72), betas)
    faces = np.asarray(model.faces)
    for v, j in zip(np.asarray(out.vertices, np.float64)[:6], np.asarray(out.joints, np.float64)[:6]):
        wn = _winding_number(j, v, faces)
        assert (wn > 0.5).all(), np.asarray(smpl.SMPL_JOINT_NAMES)[wn <= 0.5]


# ----------------------------------------------------------------------------- chart


@pytest.fixture(scope="module")
def chart_arrays() -> dict[str, np.ndarray]:
    with np.load(CHART_PATH) as npz:
        return dict(npz)


def test_chart_has_the_densepose_layout(chart_arrays, arrays):
    # Same keys, dtypes and array ranks as DensePose's UV_Processed.mat read by scipy.io.loadmat.
    expected = {"All_FaceIndices": (np.uint8, 2), "All_Faces": (np.uint32, 2), "All_U_norm": (np.float64, 2),
                "All_V_norm": (np.float64, 2), "All_vertices": (np.uint32, 2)}
    for key, (dtype, ndim) in expected.items():
        assert chart_arrays[key].dtype == dtype and chart_arrays[key].ndim == ndim, key
    part = chart_arrays["All_FaceIndices"].ravel()
    faces = chart_arrays["All_Faces"].astype(np.int64) - 1
    u, v = chart_arrays["All_U_norm"].ravel(), chart_arrays["All_V_norm"].ravel()
    body = chart_arrays["All_vertices"].ravel().astype(np.int64) - 1
    assert set(part.tolist()) == set(range(1, 25))  # every part covered
    assert faces.min() == 0 and faces.max() == len(u) - 1
    assert 0 <= min(u.min(), v.min()) and max(u.max(), v.max()) <= 1
    assert body.min() >= 0 and body.max() < arrays["v_template"].shape[0]
    # Each body face appears exactly once (chart face k is body face k).
    np.testing.assert_array_equal(body[faces], arrays["f"])
    # Seam vertices are duplicated: a UV vertex is used by faces of one part only.
    part_of_uv = np.zeros(len(u), np.int64)
    part_of_uv[faces.ravel()] = np.repeat(part, 3)
    assert (part_of_uv[faces] == part[:, None]).all()


def test_chart_parts_have_densepose_meaning(chart_arrays, arrays):
    part = chart_arrays["All_FaceIndices"].ravel()
    centre = arrays["v_template"][arrays["f"]].mean(1)
    c = {p: centre[part == p].mean(0) for p in range(1, 25)}
    x, z = 0, 2
    assert c[2][z] > c[1][z]  # torso front / back
    assert c[3][x] < -0.5 and c[4][x] > 0.5  # right / left hand
    assert c[5][x] > 0 and c[6][x] < 0  # left / right foot
    for back, front in ((7, 9), (8, 10), (11, 13), (12, 14), (15, 17), (16, 18), (19, 21), (20, 22)):
        assert c[front][z] > c[back][z], (back, front)
    for p in (7, 9, 11, 13, 16, 18, 20, 22):  # right side
        assert c[p][x] < 0, p
    for p in (8, 10, 12, 14, 15, 17, 19, 21):  # left side
        assert c[p][x] > 0, p
    assert c[7][1] > c[11][1] and c[15][x] < c[19][x]  # upper above / inside of lower
    assert c[23][x] < 0 < c[24][x] and c[23][1] > c[1][1]  # head right / left, as DensePose


def test_chart_parts_have_no_overlapping_triangles(chart_arrays):
    """Rasterize each part's UV triangles on a 384^2 grid: no pixel centre is inside two."""
    n = 384
    part = chart_arrays["All_FaceIndices"].ravel()
    uv = np.stack([chart_arrays["All_U_norm"].ravel(), chart_arrays["All_V_norm"].ravel()], -1)
    tri = uv[chart_arrays["All_Faces"].astype(np.int64) - 1] * n  # (F, 3, 2) in pixels
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert (np.abs(det) > 0).all()  # no degenerate UV triangle
    for p in range(1, 25):
        count = np.zeros((n, n), np.int32)
        for t in np.nonzero(part == p)[0]:
            lo = np.clip(np.floor(tri[t].min(0) - 0.5).astype(int), 0, n - 1)
            hi = np.clip(np.ceil(tri[t].max(0) - 0.5).astype(int), 0, n - 1)
            xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1) + 0.5, np.arange(lo[1], hi[1] + 1) + 0.5)
            w = np.stack([xs - tri[t, 0, 0], ys - tri[t, 0, 1]], -1)
            b1 = (w[..., 0] * e2[t, 1] - w[..., 1] * e2[t, 0]) / det[t]
            b2 = (e1[t, 0] * w[..., 1] - e1[t, 1] * w[..., 0]) / det[t]
            inside = (b1 > 1e-9) & (b2 > 1e-9) & (1 - b1 - b2 > 1e-9)
            count[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] += inside
        assert count.max() <= 1, f"part {p}: overlapping UV triangles"
        covered = (count > 0).mean()
        area = 0.5 * np.abs(det[part == p]).sum() / n**2
        assert covered == pytest.approx(area, rel=0.03, abs=2e-3), p


def test_iuv_to_surface_round_trip_on_the_default_chart(chart_arrays, arrays):
    chart = densepose.load_chart("default")
    rng = np.random.default_rng(3)
    part = chart_arrays["All_FaceIndices"].ravel()
    uv = np.stack([chart_arrays["All_U_norm"].ravel(), chart_arrays["All_V_norm"].ravel()], -1)
    faces = chart_arrays["All_Faces"].astype(np.int64) - 1
    body = chart_arrays["All_vertices"].ravel().astype(np.int64) - 1
    verts = arrays["v_template"].astype(np.float64)
    # Per part, random points inside random faces (barycentrics away from the edges).
    picks = np.concatenate([rng.choice(np.nonzero(part == p)[0], 40) for p in range(1, 25)])
    bary = rng.dirichlet([4.0, 4.0, 4.0], size=len(picks))
    point_uv = np.einsum("nk,nkd->nd", bary, uv[faces[picks]])
    expected = np.einsum("nk,nkd->nd", bary, verts[body[faces[picks]]])
    out = densepose.iuv_to_surface(chart, part[picks], point_uv[:, 0], point_uv[:, 1])
    assert out.valid.all()
    got = np.einsum("nk,nkd->nd", out.barycentric.astype(np.float64), verts[out.vertex_ids])
    np.testing.assert_allclose(got, expected, atol=2e-3)  # float32 UV lookup
    np.testing.assert_array_equal(np.sort(out.vertex_ids, 1), np.sort(body[faces[picks]], 1))


# ----------------------------------------------------------------------------- symmetry

FLIP_PART = np.asarray([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23])


def test_body_is_left_right_symmetric(arrays, model, forward):
    mirror = arrays["mirror_vertex_ids"].astype(np.int64)
    np.testing.assert_array_equal(mirror[mirror], np.arange(len(mirror)))
    flip = np.array([-1.0, 1.0, 1.0], np.float32)
    betas = np.random.default_rng(4).normal(size=(11, 10)).astype(np.float32)
    out = forward(model, np.zeros((11, 72), np.float32), betas)
    v, j = np.asarray(out.vertices), np.asarray(out.joints)
    np.testing.assert_allclose(v[:, mirror] * flip, v, atol=1e-5)
    names = smpl.SMPL_JOINT_NAMES
    joint_mirror = [names.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")) for n in names]
    np.testing.assert_allclose(j[:, joint_mirror] * flip, j, atol=1e-5)
    np.testing.assert_allclose(arrays["weights"][mirror][:, joint_mirror], arrays["weights"], atol=1e-6)
    # Mirrored faces exist (with reversed winding).
    faces = {tuple(sorted(f)) for f in arrays["f"].tolist()}
    assert all(tuple(sorted(f)) in faces for f in mirror[arrays["f"]].tolist())


def test_flipping_iuv_is_a_part_swap(chart_arrays, arrays):
    """Mirroring an IUV image: pair parts swap, U and V stay (torso 1, 2: V -> 1 - V)."""
    chart = densepose.load_chart("default")
    verts = arrays["v_template"].astype(np.float64)
    rng = np.random.default_rng(5)
    part = chart_arrays["All_FaceIndices"].ravel()
    uv = np.stack([chart_arrays["All_U_norm"].ravel(), chart_arrays["All_V_norm"].ravel()], -1)
    faces = chart_arrays["All_Faces"].astype(np.int64) - 1
    picks = np.concatenate([rng.choice(np.nonzero(part == p)[0], 30) for p in range(1, 25)])
    point_uv = np.einsum("nk,nkd->nd", rng.dirichlet([4.0] * 3, size=len(picks)), uv[faces[picks]])
    i = part[picks]
    a = densepose.iuv_to_surface(chart, i, point_uv[:, 0], point_uv[:, 1])
    torso = i <= 2
    b = densepose.iuv_to_surface(chart, FLIP_PART[i], point_uv[:, 0], np.where(torso, 1 - point_uv[:, 1], point_uv[:, 1]))
    assert a.valid.all() and b.valid.all()
    xa = np.einsum("nk,nkd->nd", a.barycentric, verts[a.vertex_ids])
    xb = np.einsum("nk,nkd->nd", b.barycentric, verts[b.vertex_ids])
    np.testing.assert_allclose(xb * [-1, 1, 1], xa, atol=1e-4)
