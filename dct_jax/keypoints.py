"""Keypoint layouts: names, left/right flip permutations, and how each body model makes them.

A layout is data: the keypoint names in order and the flip permutation (the
keypoint that the ``k``-th one becomes when the image is mirrored). For each
body model, every keypoint is either one of its 24 SMPL-order joints or one of
its mesh vertices; :func:`from_body` gathers them from the output of
``dct_jax.smpl.forward``.

Layouts (:data:`LAYOUT_NAMES`):
  * ``"smpl24"``: SMPL's 24 joints in SMPL's order.
  * ``"cocoplus19"``: the 19 2D keypoints of the paper / HMR (LSP's 14,
    right leg first, plus nose, eyes and ears as in COCO).
  * ``"coco17"``: COCO's 17 person keypoints.

Body models (:data:`BODY_MODELS`):
  * ``"smpl"``: SMPL's 6,890-vertex mesh. Nose, eyes and ears are the vertex ids of
    smplx's ``vertex_ids.py`` (table ``"smplh"``, which SMPL shares); head top is
    vertex 411 as used by SPIN. HMR regresses its cocoplus head top (and the
    other cocoplus points) with its own regressor; a vertex pick is the
    licence-free stand-in and differs from it by a few centimetres.
  * ``"default"``: dct_jax's free default body (``dct_jax/assets/default_body.npz``).
    Its face vertices were picked by ``tools/build_default_body.py`` (nearest
    vertex to anny's COCO keypoint regressor on the mean body, the nose on the
    midline and eyes and ears as mirror pairs; head top: the highest midline
    head vertex); the file also stores them as ``keypoint_vertex_ids``.
  Body keypoints (shoulders, elbows, wrists, hips, knees, ankles, neck) are the
  model's SMPL joints of the same name for both models. These are rotation
  centres: SMPL's hips, for example, sit a few centimetres higher and more
  inward than annotated COCO/LSP hips.

Example::

    out = smpl.forward(model, pose, betas)
    layout = keypoints.get_layout("cocoplus19", body="smpl")
    kp3d = keypoints.from_body(layout, out.vertices, out.joints)  # (..., 19, 3)
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from dct_jax.smpl import SMPL_JOINT_NAMES

SMPL24_NAMES = SMPL_JOINT_NAMES
COCOPLUS19_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", "neck", "head_top", "nose", "left_eye", "right_eye", "left_ear",
    "right_ear",
)
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# The paper's / HMR's cocoplus flip permutation (also derived from the names in the tests).
COCOPLUS19_FLIP_PERM = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 16, 15, 18, 17)
# Subsets of cocoplus19 that a dataset's 2D labels may cover: "lsp14" is LSP's 14 joints
# (ankles to head top; what UP-3D annotates), "all" every keypoint.
COCOPLUS19_SUBSETS = {"all": tuple(range(19)), "lsp14": tuple(range(14))}
# Standard deviation of human annotators per cocoplus19 keypoint, as a fraction of the
# person's scale (the square root of its area): COCO's per-keypoint constants (the
# `sigmas` of pycocotools' OKS, measured on 5,000 doubly annotated images). Neck and head
# top, which COCO does not annotate, take the shoulders' and the ears' values.
COCOPLUS19_ANNOTATION_SIGMAS = (
    0.089, 0.087, 0.107, 0.107, 0.087, 0.089,  # ankles, knees, hips
    0.062, 0.072, 0.079, 0.079, 0.072, 0.062,  # wrists, elbows, shoulders
    0.079, 0.035, 0.026, 0.025, 0.025, 0.035, 0.035,  # neck, head top, nose, eyes, ears
)

LAYOUT_NAMES = ("smpl24", "cocoplus19", "coco17")
BODY_MODELS = ("smpl", "default")

# Keypoints that are mesh vertices, per body model.
SMPL_VERTEX_IDS = {"nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071,
                   "left_ear": 583, "head_top": 411}
# Written by tools/build_default_body.py (stored as keypoint_vertex_ids in
# default_body.npz in this order: nose, right_eye, left_eye, right_ear, left_ear, head_top).
DEFAULT_VERTEX_IDS = {"nose": 8, "right_eye": 4385, "left_eye": 4384, "right_ear": 4951,
                      "left_ear": 4950, "head_top": 96}
NUM_VERTICES = {"smpl": 6890, "default": 7272}
_VERTEX_IDS = {"smpl": SMPL_VERTEX_IDS, "default": DEFAULT_VERTEX_IDS}
_NAMES = {"smpl24": SMPL24_NAMES, "cocoplus19": COCOPLUS19_NAMES, "coco17": COCO17_NAMES}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A keypoint layout for one body model.

    Attributes:
      name: layout name (one of :data:`LAYOUT_NAMES`).
      body: body model (one of :data:`BODY_MODELS`).
      names: ``K`` keypoint names.
      flip_perm: ``K`` ids: after a horizontal flip, keypoint ``k`` is the
        mirrored keypoint ``flip_perm[k]`` (an involution swapping left/right).
      joint_ids: ``(K,)`` SMPL joint index per keypoint (0 where it is a vertex).
      vertex_ids: ``(K,)`` mesh vertex index per keypoint (0 where it is a joint).
      is_vertex: ``(K,)`` whether keypoint ``k`` is a vertex.
      num_vertices: the body model's vertex count.
    """

    name: str
    body: str
    names: tuple[str, ...]
    flip_perm: tuple[int, ...]
    joint_ids: tuple[int, ...]
    vertex_ids: tuple[int, ...]
    is_vertex: tuple[bool, ...]
    num_vertices: int

    def __len__(self) -> int:
        return len(self.names)


def flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    """Flip permutation of a name list: ``left_x`` <-> ``right_x``, others fixed.

    Raises:
      ValueError: a ``left_``/``right_`` name has no counterpart.
    """
    index = {n: i for i, n in enumerate(names)}
    perm = []
    for n in names:
        if n.startswith("left_"):
            mirror = "right_" + n[len("left_"):]
        elif n.startswith("right_"):
            mirror = "left_" + n[len("right_"):]
        else:
            mirror = n
        if mirror not in index:
            raise ValueError(f"keypoint {n!r} has no mirrored counterpart {mirror!r}")
        perm.append(index[mirror])
    return tuple(perm)


def get_layout(name: str, *, body: str = "smpl") -> Layout:
    """The layout ``name`` (:data:`LAYOUT_NAMES`) for body model ``body`` (:data:`BODY_MODELS`).

    Raises:
      ValueError: unknown layout or body model.
    """
    if name not in _NAMES:
        raise ValueError(f"unknown keypoint layout {name!r}; expected one of {LAYOUT_NAMES}")
    if body not in _VERTEX_IDS:
        raise ValueError(f"unknown body model {body!r}; expected one of {BODY_MODELS}")
    names = _NAMES[name]
    vertex_table = _VERTEX_IDS[body]
    joint_ids, vertex_ids, is_vertex = [], [], []
    for n in names:
        if n in vertex_table:
            joint_ids.append(0)
            vertex_ids.append(vertex_table[n])
            is_vertex.append(True)
        else:
            joint_ids.append(SMPL24_NAMES.index(n))
            vertex_ids.append(0)
            is_vertex.append(False)
    return Layout(name=name, body=body, names=names, flip_perm=flip_permutation(names),
                  joint_ids=tuple(joint_ids), vertex_ids=tuple(vertex_ids),
                  is_vertex=tuple(is_vertex), num_vertices=NUM_VERTICES[body])


def body_for_num_vertices(num_vertices: int) -> str:
    """The body model (:data:`BODY_MODELS`) with this many vertices, e.g. ``model.num_vertices``.

    Raises:
      ValueError: no known body model has that many vertices.
    """
    for body, n in NUM_VERTICES.items():
        if n == num_vertices:
            return body
    raise ValueError(f"no keypoint definitions for a body with {num_vertices} vertices "
                     f"(known: {NUM_VERTICES})")


def from_body(layout: Layout, vertices: jnp.ndarray, joints: jnp.ndarray) -> jnp.ndarray:
    """Gathers a layout's keypoints from a posed body (jit/grad/vmap-safe).

    Args:
      layout: from :func:`get_layout`, for the model that made the body.
      vertices: ``(..., V, 3)`` mesh vertices (``SMPLOutput.vertices``).
      joints: ``(..., 24, 3)`` joints (``SMPLOutput.joints``); leading dims
        broadcast with ``vertices``'.

    Returns:
      ``(..., K, 3)`` keypoints, in the frame and units of the inputs.

    Raises:
      ValueError: ``vertices`` do not have the layout's body model vertex count,
        or ``joints`` are not ``(..., 24, 3)``.
    """
    if vertices.shape[-2:] != (layout.num_vertices, 3):
        raise ValueError(f"vertices have shape {vertices.shape}; layout {layout.name!r} for body "
                         f"{layout.body!r} needs (..., {layout.num_vertices}, 3)")
    if joints.shape[-2:] != (len(SMPL24_NAMES), 3):
        raise ValueError(f"joints have shape {joints.shape}; expected (..., 24, 3)")
    from_joints = jnp.take(joints, np.asarray(layout.joint_ids), axis=-2)
    from_vertices = jnp.take(vertices, np.asarray(layout.vertex_ids), axis=-2)
    return jnp.where(np.asarray(layout.is_vertex)[:, None], from_vertices, from_joints)
