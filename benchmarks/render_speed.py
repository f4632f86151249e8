"""Renders per second of `dct_jax.render` at 224x224, per mode.

The mesh is a procedural body-like figure (14 ellipsoids, 7,616 vertices,
13,888 faces; about the size of SMPL's 6,890 / 13,776) filling the crop like a
person does, with a chart (one part per ellipsoid, spherical U, V).

Run from the repository root:
  PYTHONPATH=. python benchmarks/render_speed.py [--size 224] [--scale 1.05] [--seconds 2]
Prints one row per mode (mean ms and renders/s over random global rotations).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dct_jax import render

# (centre xyz in metres, radii xyz, rotation about Z in degrees); y is down.
_PARTS = (
    ((0.0, -0.72, 0.0), (0.10, 0.12, 0.11), 0),     # head
    ((0.0, -0.35, 0.0), (0.19, 0.26, 0.12), 0),     # chest
    ((0.0, -0.02, 0.0), (0.17, 0.13, 0.11), 0),     # pelvis
    ((-0.30, -0.48, 0.0), (0.16, 0.05, 0.05), -20),  # upper arms
    ((0.30, -0.48, 0.0), (0.16, 0.05, 0.05), 20),
    ((-0.55, -0.32, 0.0), (0.15, 0.04, 0.04), -60),  # forearms
    ((0.55, -0.32, 0.0), (0.15, 0.04, 0.04), 60),
    ((-0.65, -0.12, 0.0), (0.05, 0.08, 0.03), 0),   # hands
    ((0.65, -0.12, 0.0), (0.05, 0.08, 0.03), 0),
    ((-0.10, 0.32, 0.0), (0.08, 0.22, 0.08), 5),    # thighs
    ((0.10, 0.32, 0.0), (0.08, 0.22, 0.08), -5),
    ((-0.12, 0.72, 0.0), (0.06, 0.20, 0.06), 0),    # shins
    ((0.12, 0.72, 0.0), (0.06, 0.20, 0.06), 0),
    ((0.0, -0.58, 0.0), (0.05, 0.06, 0.05), 0),     # neck
)


def uv_sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit sphere grid: ``((n_lat+1)(n_lon+1), 3)`` vertices, faces, ``(., 2)`` uv.

    The seam and the poles have duplicated vertices, so U, V are continuous
    over every face; the faces are outward-oriented (counter-clockwise seen
    from outside in the x right, y down, z forward frame).
    """
    v, u = np.meshgrid(np.linspace(0, 1, n_lat + 1), np.linspace(0, 1, n_lon + 1),
                       indexing="ij")
    theta, phi = np.pi * v, 2 * np.pi * u
    xyz = np.stack([np.sin(theta) * np.cos(phi), -np.cos(theta),
                    np.sin(theta) * np.sin(phi)], axis=-1).reshape(-1, 3)
    idx = np.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    # Orient outwards: normal . centroid > 0 (normals from a y-down right-handed frame).
    tri = xyz[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("fc,fc->f", normal, tri.mean(1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    uv = np.stack([u.ravel(), v.ravel()], axis=-1)
    return xyz, faces, uv


def body_like_mesh(n_lat: int = 16, n_lon: int = 31):
    """Returns ``(vertices (V, 3), faces (F, 3), RenderChart)`` of the figure."""
    unit, unit_faces, unit_uv = uv_sphere(n_lat, n_lon)
    verts, faces, uvs, parts = [], [], [], []
    for i, (centre, radii, angle) in enumerate(_PARTS):
        t = np.deg2rad(angle)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        verts.append(unit * radii @ rot.T + centre)
        faces.append(unit_faces + i * len(unit))
        uvs.append(unit_uv)
        parts.append(np.full(len(unit_faces), i % 24 + 1))
    faces = np.concatenate(faces)
    chart = render.RenderChart(faces=faces, uv=np.concatenate(uvs),
                               vertex_ids=np.arange(len(unit) * len(_PARTS)),
                               parts=np.concatenate(parts))
    return np.concatenate(verts), faces, chart


def _rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--scale", type=float, default=1.05, help="camera scale s")
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per mode")
    args = parser.parse_args()
    vertices, faces, chart = body_like_mesh()
    rng = np.random.default_rng(0)
    poses = [vertices @ _rotation_y(a).T for a in rng.uniform(0, 2 * np.pi, 16)]
    camera = np.array([args.scale, 0.0, 0.0])
    background = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    cases = {
        "rgb": dict(mode="rgb"),
        "rgb+background": dict(mode="rgb", background=background),
        "rgb perspective": dict(mode="rgb", projection="perspective"),
        "iuv": dict(mode="iuv", chart=chart),
        "seg": dict(mode="seg", chart=chart),
        "mask": dict(mode="mask"),
        "iuv+fragments": dict(mode="iuv", chart=chart, return_fragments=True),
    }
    print(f"mesh: {len(vertices)} vertices, {len(faces)} faces; image {args.size}x{args.size}")
    cover = render.render(poses[0], faces, camera, args.size, "mask").mean()
    print(f"foreground: {100 * cover:.0f}% of the pixels")
    print(f"{'mode':<18}{'ms/render':>10}{'renders/s':>11}")
    for name, kwargs in cases.items():
        render.render(poses[0], faces, camera, args.size, **kwargs)  # warm up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            render.render(poses[count % len(poses)], faces, camera, args.size, **kwargs)
            count += 1
        elapsed = (time.perf_counter() - start) / count
        print(f"{name:<18}{1e3 * elapsed:>10.2f}{1 / elapsed:>11.1f}")


if __name__ == "__main__":
    main()
