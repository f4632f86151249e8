"""Studio people: a motion-capture studio rendered like ``dct_jax.synthetic`` (a Human3.6M stand-in).

Human3.6M, which the paper trains with in every run beside the in-the-wild set,
is another domain than UP-3D: a few subjects, each with one body and one
outfit, filmed by four fixed cameras in one plain room while performing a
handful of scripted actions. This module makes that domain from the default
body, with the renderer and the annotation rules of ``dct_jax.synthetic``
(keypoint visibility, IUV maps, part maps, JPEG): records carry the pose,
shape, camera, 2D keypoints, cocoplus19 3D keypoints, IUV map and part map,
but no dense keypoints. An example is a pure function of ``(seed, split,
index)`` (:func:`example_rng`, independent of the synthetic data's streams).

The distributions (all uniform unless said otherwise), drawn in this order by
:func:`sample_example`:

* **Subject**: split ``"train"`` draws one of :data:`TRAIN_SUBJECTS` (S1-S5),
  every other split one of the held-out :data:`TEST_SUBJECTS` (S6, S7). A
  subject (:data:`SUBJECTS`) is one fixed shape, betas ~ N(0, 1) clipped to
  +-2.5 (``synthetic.sample_betas``) drawn once for S1..S7 in that order from
  ``np.random.default_rng(SUBJECT_SEED)``, and one fixed plain outfit (skin,
  shirt, trousers, shoes; no stripes) from :data:`_OUTFITS`.
* **Camera**: one of the four :data:`CAMERAS`, placed at yaws 45, 135, 225
  and 315 degrees around the subject's spot (measured from the room's front,
  the way a subject with heading 0 faces), looking down by 9-12 degrees (fixed
  per camera). Each has its own weak-perspective scale (0.84-0.88: a standing
  body of the default shape is ~75% of the crop high), light (direction in
  the camera frame, from the camera's half-space and above; tint; 40-50%
  ambient) and background.
* **Action**: one of :data:`ACTIONS` (directions, discussion, eating, greeting,
  phoning, posing, sitting, waiting, walking), each a pair of key poses; the
  body pose is ``start + phase * (end - start)`` with ``phase`` in [0, 1],
  mirrored left/right with p = 0.5 (``synthetic.mirror_pose``), then every
  axis of every joint moves by up to :data:`JITTER_FRACTION` (5%) of its range
  in ``synthetic.JOINT_LIMITS`` and is clipped to the range (the in-the-wild
  prior moves by 20% around eight base poses).
* **Heading**: the subject's yaw on the floor within +-:data:`HEADING_RANGE`
  (30 degrees) of the room's front. The global rotation is the camera's view
  of the upright, heading-turned body: ``R = Rx(pitch) Ry(heading - yaw)
  Rx(pi)`` in the camera frame (x right, y down; ``Rx(pi)`` is the HMR mean,
  upright facing the camera; a positive ``Ry`` turns the body's front towards
  the image's left). No roll: the subject stands upright on a level floor.
* **Framing**: scale = the camera's scale times ``1 + U(-0.03, 0.03)``
  (:data:`SCALE_JITTER`): bodies are as large as their height and pose make
  them at the camera's distance, not fitted to the crop; the centre of the
  projected box lands within +-:data:`SHIFT_RANGE` (5%) of the half-crop of
  the crop's centre.
* **Background**: one fixed image per camera (:func:`background`): a wall
  darkening towards the top, a skirting strip, and a floor brightening towards
  the bottom, every row one colour (no objects, no colour noise).

Then ``synthetic.render_example`` draws blur (p = 0.3) and sensor noise as for
the synthetic data. Record ids are ``studio/<split>/S<subject>/cam<camera>/<index>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import cv2
import numpy as np

from dct_jax import synthetic
from dct_jax.data import schema

DEFAULT_IMAGE_SIZE = synthetic.DEFAULT_IMAGE_SIZE
JITTER_FRACTION = 0.05
HEADING_RANGE = np.pi / 6
SCALE_JITTER = 0.03
SHIFT_RANGE = 0.05
SUBJECT_SEED = 36  # Human3.6M's 3.6 million frames
TRAIN_SUBJECTS = (1, 2, 3, 4, 5)
TEST_SUBJECTS = (6, 7)


# ----------------------------------------------------------------------------- subjects


@dataclasses.dataclass(frozen=True, eq=False)
class Subject:
    """One person: ``betas (10,)`` float32 and ``colors (25, 3)`` RGB per DensePose part 0-24."""

    number: int
    betas: np.ndarray
    colors: np.ndarray


# Per subject: skin, shirt, trousers, shoes (RGB in [0, 1]), long sleeves, long legs.
_OUTFITS = (
    ((0.91, 0.73, 0.60), (0.15, 0.20, 0.40), (0.20, 0.20, 0.22), (0.10, 0.10, 0.10), True, True),
    ((0.80, 0.60, 0.45), (0.70, 0.15, 0.15), (0.25, 0.35, 0.55), (0.90, 0.90, 0.90), False, True),
    ((0.98, 0.85, 0.75), (0.90, 0.90, 0.88), (0.60, 0.50, 0.35), (0.35, 0.22, 0.12), False, True),
    ((0.62, 0.44, 0.32), (0.20, 0.50, 0.30), (0.12, 0.12, 0.14), (0.50, 0.50, 0.50), True, True),
    ((0.45, 0.30, 0.22), (0.85, 0.70, 0.20), (0.45, 0.45, 0.48), (0.20, 0.20, 0.50), False, False),
    ((0.91, 0.73, 0.60), (0.45, 0.25, 0.55), (0.20, 0.30, 0.50), (0.10, 0.10, 0.10), True, True),
    ((0.80, 0.60, 0.45), (0.85, 0.45, 0.20), (0.15, 0.15, 0.20), (0.90, 0.90, 0.90), False, True),
)


def _subjects() -> dict[int, Subject]:
    rng = np.random.default_rng(SUBJECT_SEED)
    subjects = {}
    for number, (skin, shirt, trousers, shoes, sleeves, legs) in enumerate(_OUTFITS, start=1):
        colors = synthetic.outfit_colors(skin, shirt, trousers, shoes, long_sleeves=sleeves,
                                         long_legs=legs)
        subjects[number] = Subject(number=number, betas=synthetic.sample_betas(rng), colors=colors)
    return subjects


SUBJECTS = _subjects()  # number (1-7) -> Subject


def subjects_of(split: str) -> tuple[int, ...]:
    """The subjects of a split: :data:`TRAIN_SUBJECTS` for ``"train"``, else :data:`TEST_SUBJECTS`."""
    return TRAIN_SUBJECTS if split == "train" else TEST_SUBJECTS


# ----------------------------------------------------------------------------- cameras


@dataclasses.dataclass(frozen=True)
class Camera:
    """One fixed studio camera.

    Attributes:
      number: 1-4.
      yaw: radians, its place around the subject's spot, from the room's front.
      pitch: radians it looks down by.
      scale: weak-perspective scale (before :data:`SCALE_JITTER`).
      light_direction: ``(3,)`` towards the light, camera frame.
      light_color: ``(3,)`` RGB tint.
      ambient: ambient fraction of the light.
      wall, skirting, floor: ``(3,)`` RGB in [0, 1] of its background.
      horizon: where the floor starts, as a fraction of the crop's height.
    """

    number: int
    yaw: float
    pitch: float
    scale: float
    light_direction: tuple[float, float, float]
    light_color: tuple[float, float, float]
    ambient: float
    wall: tuple[float, float, float]
    skirting: tuple[float, float, float]
    floor: tuple[float, float, float]
    horizon: float


CAMERAS = (
    Camera(1, np.radians(45.0), np.radians(10.0), 0.86, (0.5, -0.7, -1.0), (1.04, 1.0, 0.95), 0.45,
           (0.78, 0.76, 0.72), (0.30, 0.28, 0.26), (0.40, 0.38, 0.36), 0.66),
    Camera(2, np.radians(135.0), np.radians(12.0), 0.84, (-0.4, -0.8, -1.0), (1.0, 1.0, 1.0), 0.5,
           (0.70, 0.72, 0.74), (0.25, 0.26, 0.30), (0.34, 0.35, 0.38), 0.62),
    Camera(3, np.radians(225.0), np.radians(9.0), 0.88, (0.3, -0.6, -1.0), (0.96, 1.0, 1.04), 0.4,
           (0.74, 0.73, 0.70), (0.32, 0.30, 0.27), (0.38, 0.36, 0.33), 0.70),
    Camera(4, np.radians(315.0), np.radians(11.0), 0.87, (-0.6, -0.6, -1.0), (1.02, 1.0, 0.98), 0.45,
           (0.66, 0.66, 0.68), (0.22, 0.22, 0.25), (0.31, 0.31, 0.34), 0.64),
)


def background(camera: Camera, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 RGB: the camera's wall, skirting strip and floor, one colour a row.

    The wall darkens to 85% towards the top, the floor brightens to 110%
    towards the bottom; the skirting is the 3% of the height above the horizon.
    """
    t = (np.arange(size) + 0.5) / size  # row centres, 0 (top) to 1 (bottom)
    horizon = camera.horizon
    wall = np.asarray(camera.wall) * (0.85 + 0.15 * t / horizon)[:, None]
    floor = np.asarray(camera.floor) * (1.0 + 0.1 * (t - horizon) / (1.0 - horizon))[:, None]
    rows = np.where((t < horizon)[:, None], wall, floor)
    rows[(t >= horizon - 0.03) & (t < horizon)] = camera.skirting
    rows = np.clip(np.rint(255.0 * rows), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(rows[:, None], (size, size, 3)))


def appearance(subject: Subject, camera: Camera) -> synthetic.Appearance:
    """The subject's outfit under the camera's light."""
    return synthetic.Appearance(
        colors=subject.colors, stripe_colors=np.zeros((25, 3)), stripe_freq=np.zeros(25),
        stripe_axis=np.zeros(25, np.int64), light_direction=np.asarray(camera.light_direction),
        light_color=np.asarray(camera.light_color), ambient=camera.ambient)


def global_rotation(camera: Camera, heading: float) -> np.ndarray:
    """``(3,)`` axis-angle ``Rx(pitch) Ry(heading - yaw) Rx(pi)`` (see the module docstring)."""
    def rot(axis: int, angle: float) -> np.ndarray:
        return cv2.Rodrigues(np.eye(3)[axis].reshape(3, 1) * angle)[0]

    matrix = rot(0, camera.pitch) @ rot(1, heading - camera.yaw) @ rot(0, np.pi)
    return cv2.Rodrigues(matrix)[0].reshape(3)


# ----------------------------------------------------------------------------- actions

# Key poses ({SMPL joint: axis-angle}, left joints mirrored to the right unless
# given; synthetic's sign conventions: left shoulder z < 0 lowers the arm, y < 0
# swings it forward, left elbow y < 0 bends it, hip x < 0 swings the leg forward,
# knee x > 0 bends it, spine x > 0 bends forward).
_ARMS_DOWN = {"left_shoulder": (0.0, 0.0, -1.25), "left_elbow": (0.0, -0.25, 0.0)}
_RIGHT_ARM_DOWN = {"right_shoulder": (0.0, 0.0, 1.25), "right_elbow": (0.0, 0.25, 0.0)}
_SEATED = {"left_hip": (-1.5, 0.0, 0.1), "left_knee": (1.5, 0.0, 0.0)}
_KEY_POSES = {
    "directions": ({**_ARMS_DOWN, "left_shoulder": (0.0, -0.6, -0.9), "left_elbow": (0.0, -0.5, 0.0),
                    **_RIGHT_ARM_DOWN},
                   {"left_shoulder": (0.0, -1.3, -0.2), "left_elbow": (0.0, -0.1, 0.0),
                    "head": (0.0, 0.3, 0.0), **_RIGHT_ARM_DOWN}),
    "discussion": ({"left_shoulder": (0.0, -0.3, -1.15), "left_elbow": (0.0, -1.3, 0.0)},
                   {"left_shoulder": (0.0, -0.5, -1.0), "left_elbow": (0.0, -1.8, 0.0),
                    "spine1": (0.0, 0.15, 0.0), "head": (0.1, -0.2, 0.0)}),
    "eating": ({**_SEATED, "left_shoulder": (0.0, -0.9, -0.9), "left_elbow": (0.0, -2.3, 0.0),
                "right_shoulder": (0.0, 0.4, 1.1), "right_elbow": (0.0, 0.9, 0.0)},
               {**_SEATED, "spine1": (0.2, 0.0, 0.0), "left_shoulder": (0.0, -0.5, -1.1),
                "left_elbow": (0.0, -1.3, 0.0), "right_shoulder": (0.0, 0.4, 1.1),
                "right_elbow": (0.0, 0.9, 0.0)}),
    "greeting": ({"left_shoulder": (-1.0, -0.3, 0.2), "left_elbow": (0.0, -1.6, 0.0),
                  **_RIGHT_ARM_DOWN},
                 {"left_shoulder": (-1.0, -0.3, 0.5), "left_elbow": (0.0, -0.9, 0.0),
                  **_RIGHT_ARM_DOWN}),
    "phoning": ({"left_shoulder": (0.0, -0.7, -0.8), "left_elbow": (0.0, -2.4, 0.0),
                 "head": (0.0, 0.0, 0.15), **_RIGHT_ARM_DOWN},
                {"left_shoulder": (0.0, -0.9, -0.7), "left_elbow": (0.0, -2.5, 0.0),
                 "head": (0.2, 0.2, 0.15), "right_shoulder": (0.0, 0.6, 1.0),
                 "right_elbow": (0.0, 1.3, 0.0)}),
    "posing": ({"left_shoulder": (0.0, 0.4, -0.9), "left_elbow": (0.0, -1.6, 0.0),
                "left_hip": (0.0, 0.0, 0.2)},
               {"left_shoulder": (0.0, 0.0, 0.9), "left_elbow": (0.0, -0.3, 0.0),
                "left_hip": (0.0, 0.0, 0.15)}),
    "sitting": ({**_SEATED, "left_shoulder": (0.0, -0.4, -1.1), "left_elbow": (0.0, -0.8, 0.0)},
                {"left_hip": (-1.6, 0.0, 0.2), "left_knee": (1.8, 0.0, 0.0), "spine1": (-0.1, 0.0, 0.0),
                 "left_shoulder": (0.0, -0.2, -1.2), "left_elbow": (0.0, -1.1, 0.0)}),
    "waiting": ({**_ARMS_DOWN, "left_hip": (0.0, 0.0, 0.1), "right_hip": (0.0, 0.0, 0.0)},
                {**_ARMS_DOWN, "left_elbow": (0.0, -0.9, 0.0), "left_hip": (0.0, 0.0, 0.0),
                 "right_hip": (0.0, 0.0, -0.1), "head": (0.0, 0.4, 0.0)}),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Action:
    """A scripted motion: the body pose moves from ``start`` to ``end`` (``(24, 3)`` each, joint 0 zero)."""

    name: str
    start: np.ndarray
    end: np.ndarray


def _actions() -> dict[str, Action]:
    actions = {name: Action(name, synthetic.pose_from_joints(a), synthetic.pose_from_joints(b))
               for name, (a, b) in _KEY_POSES.items()}
    walking = synthetic.BASE_POSES["walking"]  # one step to the next: the gait's half cycle
    actions["walking"] = Action("walking", walking, synthetic.mirror_pose(walking))
    return dict(sorted(actions.items()))


ACTIONS = _actions()  # name -> Action


def action_pose(action: Action, phase: float, mirrored: bool) -> np.ndarray:
    """``(24, 3)`` body pose at ``phase`` (0-1) of ``action``, optionally mirrored (joint 0 zero)."""
    pose = action.start + phase * (action.end - action.start)
    return synthetic.mirror_pose(pose) if mirrored else pose


# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """What :func:`sample_example` draws for one example (see the module docstring).

    Attributes:
      subject, camera: numbers (S1-S7, cam1-cam4).
      action, phase, mirrored, heading: the motion and the subject's yaw (radians).
      pose: ``(72,)`` float32 SMPL pose (global rotation included).
      betas: ``(10,)`` float32, the subject's.
      scale: weak-perspective scale; shift: ``(2,)`` box centre in crop coordinates.
    """

    subject: int
    camera: int
    action: str
    phase: float
    mirrored: bool
    heading: float
    pose: np.ndarray
    betas: np.ndarray
    scale: float
    shift: np.ndarray


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of example ``index`` of ``split`` (streams apart from the synthetic data's)."""
    return synthetic.example_rng(seed, f"studio/{split}", index)


def sample_example(rng: np.random.Generator, split: str) -> Example:
    """Draws everything of one example but its rendering noise (see the module docstring)."""
    subjects = subjects_of(split)
    subject = subjects[rng.integers(len(subjects))]
    camera = CAMERAS[rng.integers(len(CAMERAS))]
    names = list(ACTIONS)
    action = names[rng.integers(len(names))]
    phase, mirrored = rng.uniform(), bool(rng.random() < 0.5)
    lo, hi = synthetic.JOINT_LIMITS
    jitter = JITTER_FRACTION * (hi - lo) * rng.uniform(-1.0, 1.0, size=(24, 3))
    pose = np.clip(action_pose(ACTIONS[action], phase, mirrored) + jitter, lo, hi)
    heading = rng.uniform(-HEADING_RANGE, HEADING_RANGE)
    pose[0] = global_rotation(camera, heading)
    scale = camera.scale * (1.0 + rng.uniform(-SCALE_JITTER, SCALE_JITTER))
    shift = rng.uniform(-SHIFT_RANGE, SHIFT_RANGE, size=2)
    return Example(subject=subject, camera=camera.number, action=action, phase=phase,
                   mirrored=mirrored, heading=heading, pose=pose.reshape(72).astype(np.float32),
                   betas=SUBJECTS[subject].betas, scale=scale, shift=shift)


def _sample(rng: np.random.Generator, split: str, num_betas: int):
    if num_betas != schema.NUM_BETAS:
        raise ValueError(f"studio subjects have {schema.NUM_BETAS} betas; the body has {num_betas}")
    example = sample_example(rng, split)
    return example.pose, example.betas, example


def _record_id(split: str, index: int, example: Example) -> str:
    return f"studio/{split}/S{example.subject}/cam{example.camera}/{index:06d}"


def _render(body: synthetic.Body, pose, betas, vertices, joints, rng, example: Example, *, size: int,
            record_id: str, with_mesh: bool) -> dict[str, Any]:
    camera = CAMERAS[example.camera - 1]
    return synthetic.render_example(
        body, pose, betas, vertices, joints, rng, size=size, record_id=record_id,
        with_mesh=with_mesh, camera=synthetic.frame_camera(np.asarray(vertices), example.scale, example.shift),
        appearance=appearance(SUBJECTS[example.subject], camera), background=background(camera, size),
        dense=False, keypoints3d=True)


STUDIO = synthetic.Recipe(rng=example_rng, sample=_sample, record_id=_record_id, render=_render)


def generate(split: str, num_examples: int, *, seed: int = 0, size: int = DEFAULT_IMAGE_SIZE,
             body: synthetic.Body | None = None, with_mesh: bool = True, start: int = 0,
             chunk: int = 16, workers: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(record_id, record)`` for examples ``start .. start + num_examples - 1``.

    The contract of ``synthetic.generate``: example ``i`` depends only on
    ``(seed, split, i)``; bodies are posed ``chunk`` at a time; ``workers``
    processes render in parallel without changing the records.

    Args:
      split: ``"train"`` (subjects S1-S5) or any other name (S6, S7).
      num_examples: how many.
      seed: dataset seed.
      size: crop side in pixels.
      body: from ``synthetic.load_body`` (default: the free default body).
      with_mesh: store vertices and joints.
      start: index of the first example.
      chunk: bodies posed per ``smpl.forward`` call.
      workers: rendering processes.
    """
    return synthetic.generate_examples(STUDIO, split, num_examples, seed=seed, size=size, body=body,
                                       with_mesh=with_mesh, start=start, chunk=chunk, workers=workers)
