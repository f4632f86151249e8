"""Speed of phi (``densepose.iuv_to_surface``) and of IUV refinement.

    python benchmarks/densepose_speed.py [--num-points 1000000]

phi runs on 1M points twice: uniform ``(i, u, v)`` (about 28% fall outside
every triangle and take the nearest-triangle fallback) and points on the
chart. It is compared, in the same run, with two per-point Python loops on a
subsample: DensePose's ``IUV2FBC`` (a Python loop over the part's faces per
point; nearest-vertex fallback) and a faster per-point loop that searches the
part's faces with numpy. Refinement is timed on 224x224 maps of blob-shaped
parts with 5% label noise and 19 visible keypoints at random places, so that
most keypoints are "wrong" and start a fill (a pessimistic case; a real map
has a few at most). Wall time (best of a few
runs) and process CPU time are both printed: on a shared machine the CPU time
is the better guide. Targets (2-core CPU): phi >= 100x the loop and >= 5M
points/s; refinement < 5 ms per map.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dct_jax import densepose


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall and CPU seconds of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def iuv2fbc_loop(chart: densepose.Chart, i, u, v):
    """DensePose's IUV2FBC, point by point and face by face (as published)."""
    out = []
    for ii, uu, vv in zip(i, u, v):
        faces = np.flatnonzero(chart.face_part == ii)
        p = np.array([uu, vv, 0.0])
        corners = [np.concatenate([chart.face_uv[faces, k], np.zeros((len(faces), 1))], -1) for k in range(3)]
        found = None
        for n, (p0, p1, p2) in enumerate(zip(*corners)):
            a, b, w = p1 - p0, p2 - p0, p - p0
            if np.dot(np.cross(b, w), np.cross(b, a)) < 0 or np.dot(np.cross(a, w), np.cross(a, b)) < 0:
                continue
            denom = np.linalg.norm(np.cross(a, b))
            r, t = np.linalg.norm(np.cross(b, w)) / denom, np.linalg.norm(np.cross(a, w)) / denom
            if r <= 1 and t <= 1 and r + t <= 1:
                found = (faces[n], 1 - r - t, r, t)
                break
        if found is None:  # Nearest vertex.
            d = np.linalg.norm(chart.face_uv[faces] - [uu, vv], axis=-1)
            n, k = np.unravel_index(np.argmin(d), d.shape)
            found = (faces[n],) + tuple(np.eye(3)[k])
        out.append(found)
    return out


def numpy_loop(chart: densepose.Chart, i, u, v):
    """Per point: barycentrics against all faces of the part at once, first containing or nearest."""
    out = []
    for ii, uu, vv in zip(i, u, v):
        faces = np.flatnonzero(chart.face_part == ii)
        tri = chart.face_uv[faces].astype(np.float64)
        e1, e2, w = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], np.array([uu, vv]) - tri[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        b1 = (w[:, 0] * e2[:, 1] - w[:, 1] * e2[:, 0]) / det
        b2 = (e1[:, 0] * w[:, 1] - e1[:, 1] * w[:, 0]) / det
        inside = np.flatnonzero((b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1))
        if inside.size:
            n = inside[0]
            out.append((faces[n], 1 - b1[n] - b2[n], b1[n], b2[n]))
            continue
        best = (np.inf, None)
        for k in range(3):
            a, d = tri[:, k], tri[:, (k + 1) % 3] - tri[:, k]
            s = np.clip(((np.array([uu, vv]) - a) * d).sum(-1) / (d * d).sum(-1), 0, 1)
            dist = np.linalg.norm(np.array([uu, vv]) - a - s[:, None] * d, axis=-1)
            n = np.argmin(dist)
            if dist[n] < best[0]:
                best = (dist[n], (faces[n], k, s[n]))
        out.append(best[1])
    return out


def blob_iuv(rng: np.random.Generator, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 3) uint8 IUV map of blob parts with 5% noise, and 19 keypoints."""
    coarse = rng.integers(0, 25, (8, 8))
    labels = np.kron(coarse, np.ones((size // 8, size // 8), np.int64))
    noise = rng.random(labels.shape) < 0.05
    labels[noise] = rng.integers(0, 25, noise.sum())
    iuv = np.stack([labels, rng.integers(0, 256, labels.shape), rng.integers(0, 256, labels.shape)], -1)
    return iuv.astype(np.uint8), rng.random((19, 2)) * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-points", type=int, default=1_000_000)
    parser.add_argument("--loop-points", type=int, default=2000, help="subsample for the numpy per-point loop")
    parser.add_argument("--iuv2fbc-points", type=int, default=100, help="subsample for the IUV2FBC loop")
    parser.add_argument("--maps", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    wall, cpu = _timed(lambda: densepose.load_chart("smpl"), 3)
    print(f"load_chart('smpl'): {wall:.3f} s wall, {cpu:.3f} s CPU")
    chart = densepose.load_chart("smpl")

    n = args.num_points
    uniform = (rng.integers(1, 25, n), rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32))
    face = rng.integers(0, len(chart.face_part), n)
    uv = np.einsum("nk,nkc->nc", rng.dirichlet(np.ones(3), n).astype(np.float32), chart.face_uv[face])
    on_chart = (chart.face_part[face], uv[:, 0], uv[:, 1])
    rates = {}
    for name, (i, u, v) in (("uniform", uniform), ("on-chart", on_chart)):
        wall, cpu = _timed(lambda: densepose.iuv_to_surface(chart, i, u, v), 3)
        rates[name] = n / wall
        print(f"phi, {n} {name} points: {wall:.3f} s wall ({n / wall / 1e6:.2f} M points/s), "
              f"{cpu:.3f} s CPU ({n / cpu / 1e6:.2f} M points/s)")

    i, u, v = (x[: args.loop_points] for x in uniform)
    wall, cpu = _timed(lambda: numpy_loop(chart, i, u, v), 1)
    loop_rate = len(i) / wall
    print(f"per-point numpy loop, {len(i)} uniform points: {len(i) / wall:.0f} points/s wall "
          f"({len(i) / cpu:.0f} CPU); phi is {rates['uniform'] / loop_rate:.0f}x faster")
    i, u, v = (x[: args.iuv2fbc_points] for x in uniform)
    wall, cpu = _timed(lambda: iuv2fbc_loop(chart, i, u, v), 1)
    print(f"IUV2FBC-style loop, {len(i)} uniform points: {len(i) / wall:.0f} points/s wall "
          f"({len(i) / cpu:.0f} CPU); phi is {rates['uniform'] * wall / len(i):.0f}x faster")

    maps = [blob_iuv(rng) for _ in range(args.maps)]
    visible = np.ones(19)
    for strict in (False, True):
        wall, cpu = _timed(lambda: [densepose.refine_iuv(m, k, visible, strict=strict) for m, k in maps], 3)
        print(f"refine_iuv(strict={strict}), 224x224: {1e3 * wall / len(maps):.2f} ms/map wall, "
              f"{1e3 * cpu / len(maps):.2f} ms/map CPU")
    wall, cpu = _timed(lambda: [densepose.sample_dense_keypoints(chart, m, num=400, rng=0) for m, _ in maps], 3)
    print(f"sample_dense_keypoints(num=400), 224x224: {1e3 * wall / len(maps):.2f} ms/map wall, "
          f"{1e3 * cpu / len(maps):.2f} ms/map CPU")


if __name__ == "__main__":
    main()
