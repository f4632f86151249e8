"""Bodies/s of dct_jax.smpl.forward (jitted) against smplx, in the same run.

    python benchmarks/smpl_speed.py [--model=SMPL_NEUTRAL.pkl|default] [--batch_sizes=1,64,256] [--rounds=5] [--stages]

Without --model a random SMPL-sized model (6890 vertices, 24 joints, 10 betas,
207 pose blend shapes, a joint regressor with 12 vertices per joint) is used:
speed depends on the sizes, not on the values. ``--model=default`` is
dct_jax's free default body, which has no pose correctives (its posedirs are
zeros: dct_jax skips them, smplx multiplies by them). Needs the dev
requirements (torch CPU, smplx). Prints one row per (batch, pass) with the
ratio ours / smplx, timed in interleaved rounds (ours, then smplx, then ours
again ...; the ratio is the median of the rounds' ratios, so both sides of a
ratio see the same machine state); "fwd+bwd" is the gradient of a scalar of the vertices and
joints with respect to pose and betas. ``--stages`` first prints where the
time of one forward pass goes at the first batch size (jitted pieces of
``smpl.lbs``, each timed alone, so they add up to more than the whole).
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _timing import interleaved_rounds  # noqa: E402

from dct_jax import smpl  # noqa: E402


def _time(fn, *, min_seconds: float, repeats: int = 3) -> float:
    """Best mean seconds per call over `repeats` rounds of >= min_seconds each."""
    fn()  # warm-up (compilation)
    fn()
    return min(_mean_seconds(fn, min_seconds=min_seconds, settle_seconds=0.0) for _ in range(repeats))


def print_stages(model, batch: int, min_seconds: float) -> None:
    """Microseconds per call of each stage of ``smpl.lbs`` jitted alone, and of the
    forward pass with the pose correctives and the sparse regressor taken away."""
    from dct_jax import geometry

    rng = np.random.default_rng(batch)
    pose = jnp.asarray((rng.normal(size=(batch, 72)) * 0.5).astype(np.float32))
    betas = jnp.asarray(rng.normal(size=(batch, 10)).astype(np.float32))
    rotmats = geometry.rodrigues(pose.reshape(batch, 24, 3))
    pose_feature = (rotmats[:, 1:] - jnp.eye(3)).reshape(batch, -1)
    rest_joints = smpl._regress_joints(model, betas)
    _, transforms = geometry.rigid_transform_chain(rotmats, rest_joints, model.parents)
    per_joint = transforms.transpose(1, 2, 3, 0).reshape(24, 12 * batch)
    v_posed = smpl._blend_shapes(None, betas, model.v_template, model.shapedirs, None)
    chunk = smpl._vertex_chunk_size(model.num_vertices, batch)
    dense = model.replace(regressor_weights=model.J_regressor, regressor_vertices=None)
    stages = {
        "forward": (lambda m, p, b: smpl.forward(m, p, b).vertices, (model, pose, betas)),
        "  without pose correctives": (lambda m, p, b: smpl.forward(m, p, b).vertices,
                                       (model.replace(posedirs=None), pose, betas)),
        "  with the dense regressor": (lambda m, p, b: smpl.forward(m, p, b).vertices, (dense, pose, betas)),
        "call overhead (p + 1)": (lambda m, p, b: p + 1, (model, pose, betas)),
        "rodrigues": (lambda p: geometry.rodrigues(p.reshape(batch, 24, 3)), (pose,)),
        "joint regression (sparse)": (smpl._regress_joints, (model, betas)),
        "joint regression (dense)": (smpl._regress_joints, (dense, betas)),
        "kinematic chain": (lambda r, j: geometry.rigid_transform_chain(r, j, model.parents), (rotmats, rest_joints)),
        "shape blend shapes": (lambda m, b: smpl._blend_shapes(None, b, m.v_template, m.shapedirs, None),
                               (model, betas)),
        # (What a body without pose correctives skips.)
        "pose feature x posedirs": (lambda d, f: d.reshape(-1, f.shape[-1]) @ f.T, (model.posedirs, pose_feature)),
        "skinning": (lambda m, v, t: smpl._skin_points(v, t, m.lbs_weights, chunk, chunk), (model, v_posed, per_joint)),
    }
    print(f"stages at batch {batch} (us per call, each jitted alone):")
    for name, (fn, args) in stages.items():
        jitted = jax.jit(fn)
        seconds = _time(lambda f=jitted, a=args: jax.block_until_ready(f(*a)), min_seconds=min_seconds / 4)
        print(f"  {name:<30} {seconds * 1e6:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="SMPL .pkl/.npz, or 'default': dct_jax's free default "
                        "body (default: random SMPL-sized arrays)")
    parser.add_argument("--batch_sizes", default="1,64,256")
    parser.add_argument("--min_seconds", type=float, default=0.5,
                        help="seconds per measurement (one pass, one side, one round)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (ours, smplx)")
    parser.add_argument("--stages", action="store_true", help="first time the stages of one forward pass")
    args = parser.parse_args()

    import torch
    import smplx

    if args.model in (None, "default"):
        if args.model is None:
            from smpl_fixtures import random_smpl_arrays

            arrays = random_smpl_arrays(seed=0)
        else:  # smplx reads pickles only
            from importlib import resources

            with np.load(resources.files("dct_jax") / "assets" / smpl.DEFAULT_MODEL_FILE) as npz:
                arrays = dict(npz)
        tmp = tempfile.mkdtemp()
        model_path = os.path.join(tmp, "SMPL_NEUTRAL.pkl")
        with open(model_path, "wb") as f:
            pickle.dump(arrays, f, protocol=2)
    else:
        model_path = args.model
    model = smpl.load(model_path)
    reference = smplx.SMPL(model_path=model_path, num_betas=10)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), smplx; model {model.num_vertices} vertices, "
          f"{'no' if model.pose_correctives is None else 'with'} pose correctives, joint regressor over "
          f"{model.num_vertices if model.regressor_vertices is None else len(model.regressor_vertices)} vertices")
    if args.stages:
        print_stages(model, int(args.batch_sizes.split(",")[0]), args.min_seconds)

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

        def ours_fwd():
            forward(model, pose, betas).vertices.block_until_ready()

        def ours_bwd():
            backward(model, pose, betas)[0].block_until_ready()

        pose_t, betas_t = torch.tensor(pose_np), torch.tensor(betas_np)

        def torch_fwd():
            with torch.no_grad():
                reference(betas=betas_t, body_pose=pose_t[:, 3:], global_orient=pose_t[:, :3])

        def torch_bwd():
            p = pose_t.clone().requires_grad_(True)
            b = betas_t.clone().requires_grad_(True)
            out = reference(betas=b, body_pose=p[:, 3:], global_orient=p[:, :3])
            ((out.vertices ** 2).sum() + (out.joints[:, :24] ** 2).sum()).backward()

        for fn in (ours_fwd, ours_bwd, torch_fwd, torch_bwd):  # warm-up (compilation)
            fn()
            fn()
        per_call = functools.partial(_mean_seconds, min_seconds=args.min_seconds)
        print(f"batch {batch}:", file=sys.stderr)
        times = interleaved_rounds({
            "dct_jax": {"forward": functools.partial(per_call, ours_fwd),
                        "fwd+bwd": functools.partial(per_call, ours_bwd)},
            "smplx": {"forward": functools.partial(per_call, torch_fwd),
                      "fwd+bwd": functools.partial(per_call, torch_bwd)},
        }, args.rounds)
        for kind in ("forward", "fwd+bwd"):
            ours, ref = times["dct_jax"][kind], times["smplx"][kind]
            ratios = [r / o for o, r in zip(ours, ref)]  # per round, measured side by side
            rows.append((batch, kind, batch / statistics.median(ours), batch / statistics.median(ref),
                         statistics.median(ratios), min(ratios)))

    print(f"{'batch':>6} {'pass':>8} {'dct_jax bodies/s':>17} {'smplx bodies/s':>15} {'ratio':>7} {'worst':>7}")
    for batch, kind, ours, ref, ratio, worst in rows:
        print(f"{batch:>6} {kind:>8} {ours:>17,.0f} {ref:>15,.0f} {ratio:>6.2f}x {worst:>6.2f}x")
    print(f"(bodies/s: medians of {args.rounds} interleaved rounds; ratio: the median of the rounds' ratios "
          "ours / smplx, worst: the lowest)")


def _mean_seconds(fn, *, min_seconds: float, settle_seconds: float = 0.25) -> float:
    """Mean seconds per call of ``fn`` over at least ``min_seconds``, after
    ``settle_seconds`` of untimed calls: torch's OpenMP threads keep spinning
    for a while after its calls and take a core from whatever runs next."""
    start = time.perf_counter()
    while time.perf_counter() - start < settle_seconds:
        fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


if __name__ == "__main__":
    main()
