"""Bodies/s of dct_jax.smpl.forward (jitted) against smplx, in the same run.

    python benchmarks/smpl_speed.py [--model=SMPL_NEUTRAL.pkl] [--batch_sizes=1,64,256]

Without --model a random SMPL-sized model (6890 vertices, 24 joints, 10 betas)
is used: speed depends on the sizes, not on the values. Needs the dev
requirements (torch CPU, smplx). Prints one row per (batch, pass) with the
ratio ours / smplx; "fwd+bwd" is the gradient of a scalar of the vertices and
joints with respect to pose and betas.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dct_jax import smpl  # noqa: E402


def _time(fn, *, min_seconds: float, repeats: int = 3) -> float:
    """Best mean seconds per call over `repeats` rounds of >= min_seconds each."""
    fn()  # warm-up (compilation)
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="SMPL .pkl/.npz (default: random SMPL-sized arrays)")
    parser.add_argument("--batch_sizes", default="1,64,256")
    parser.add_argument("--min_seconds", type=float, default=1.0)
    args = parser.parse_args()

    import torch
    import smplx

    if args.model is None:
        from smpl_fixtures import random_smpl_arrays

        tmp = tempfile.mkdtemp()
        model_path = os.path.join(tmp, "SMPL_NEUTRAL.pkl")
        with open(model_path, "wb") as f:
            pickle.dump(random_smpl_arrays(seed=0), f, protocol=2)
    else:
        model_path = args.model
    model = smpl.load(model_path)
    reference = smplx.SMPL(model_path=model_path, num_betas=10)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), smplx; model {model.num_vertices} vertices")

    forward = jax.jit(lambda m, p, b: smpl.forward(m, p, b))

    def loss(m, p, b):
        out = smpl.forward(m, p, b)
        return jnp.sum(out.vertices ** 2) + jnp.sum(out.joints ** 2)

    backward = jax.jit(jax.grad(loss, argnums=(1, 2)))

    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        rng = np.random.default_rng(batch)
        pose_np = (rng.normal(size=(batch, 72)) * 0.5).astype(np.float32)
        betas_np = rng.normal(size=(batch, 10)).astype(np.float32)
        pose, betas = jnp.asarray(pose_np), jnp.asarray(betas_np)

        ours_fwd = _time(lambda: forward(model, pose, betas).vertices.block_until_ready(),
                         min_seconds=args.min_seconds)
        ours_bwd = _time(lambda: backward(model, pose, betas)[0].block_until_ready(),
                         min_seconds=args.min_seconds)

        pose_t, betas_t = torch.tensor(pose_np), torch.tensor(betas_np)

        def torch_fwd():
            with torch.no_grad():
                reference(betas=betas_t, body_pose=pose_t[:, 3:], global_orient=pose_t[:, :3])

        def torch_bwd():
            p = pose_t.clone().requires_grad_(True)
            b = betas_t.clone().requires_grad_(True)
            out = reference(betas=b, body_pose=p[:, 3:], global_orient=p[:, :3])
            ((out.vertices ** 2).sum() + (out.joints[:, :24] ** 2).sum()).backward()

        ref_fwd = _time(torch_fwd, min_seconds=args.min_seconds)
        ref_bwd = _time(torch_bwd, min_seconds=args.min_seconds)
        rows.append((batch, "forward", batch / ours_fwd, batch / ref_fwd))
        rows.append((batch, "fwd+bwd", batch / ours_bwd, batch / ref_bwd))

    print(f"{'batch':>6} {'pass':>8} {'dct_jax bodies/s':>17} {'smplx bodies/s':>15} {'ratio':>7}")
    for batch, kind, ours, ref in rows:
        print(f"{batch:>6} {kind:>8} {ours:>17,.0f} {ref:>15,.0f} {ours / ref:>6.2f}x")


if __name__ == "__main__":
    main()
