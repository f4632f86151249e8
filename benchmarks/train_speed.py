"""Images/s of DCT's full train step: ours (``train.train_step``, jax.jit) vs its PyTorch twin.

Ours is the real training code path with ``configs/ours_dc.py``: two-branch
ResNet-50 (image) + ResNet-18 (IUV) regressor, the body model (``--smpl_path``, or
the free default body with random pose blend shapes of SMPL's size, see
``benchmark_body``), keypoint + SMPL + dense losses, Adam, all in
``train.train_step`` jitted (and its state donated) as ``train.train_and_evaluate``
does, on a synthetic batch with the pipeline's exact fields (random images and
IUV, 19 keypoints and 400 dense points with valid faces and barycentrics, all
weights 1). The twin (``tests/torch_train_step.py``) is the same step in PyTorch:
``tests/torch_resnet.TorchRegressor``, smplx's ``lbs`` on the same body arrays,
the same keypoint gather, camera and losses, ``torch.optim.Adam``.

"after encoders" is the part of the step after the two encoders: head (ReLU, fc,
ReLU, fc, + mean), body model, keypoints, dense projection and losses, forward
and backward (gradients for the head parameters and the encoder features), for
fixed ``[B, 2048]`` features; ours is ``train.compute_losses`` under jit.

Each variant is timed in interleaved, rotated rounds in this one process (as
``benchmarks/encoder_speed.py``); the table gives the median and best round and
their ratios to torch (> 1: ours is faster).

  python benchmarks/train_speed.py                  # batch 16, 224 x 224, 5 rounds
  python benchmarks/train_speed.py --check          # first: twin's loss/gradients == ours (tiny nets)
  python benchmarks/train_speed.py --batch 2 --size 64 --rounds 1   # a quick smoke run
  python benchmarks/train_speed.py --head_only --no_bfloat16        # the after-encoder part alone

``--check`` copies a tiny twin's weights into our model (``tests/torch_train_step.
regressor_variables``) and compares, on one batch, the loss and its terms, the
gradients of every parameter, the loss after one Adam step, and the after-encoder
loss and gradients; it fails (exit 1) beyond 1e-4 relative (gradients 1e-3).
``--device gpu`` (default: a GPU when both frameworks see one) runs both on it.

Expect 15-25 minutes at the defaults on a 2-core CPU (compilation included).

Measured (2026-11-30, this 2-core CPU, jax 0.10.2, torch 2.13.0+cpu with 2
threads, load average 1.6-2.0, ``--xla_conv_grads``; median of 5 rounds, best
in brackets):

  variant          step img/s  vs torch      after-encoders img/s  vs torch
  torch float32    1.70 (1.93)  1.00             284 (336)          1.00
  ours float32     1.60 (1.73)  0.94 (0.89)      528 (601)          1.86 (1.79)
  ours xla-conv    0.96 (1.04)  0.57 (0.54)      528 (555)          1.86 (1.65)
  ours bfloat16    1.41 (1.54)  0.83 (0.80)      447 (504)          1.58 (1.50)

"xla-conv" is ours with XLA's own convolution kernel gradients
(``Regressor(matmul_kernel_grad=False)``), i.e. before ``resnet.Conv``. The
after-encoder part falls short of 2x; what remains there is memory-bound: the
pose blend shapes' two passes over ``posedirs`` (18 MB) and the head's
2048 x 1024 layer, forward and backward.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import torch_resnet  # test-only twins
import torch_train_step
from _timing import interleaved_rounds, print_ratio_table, timed

from configs import ours_dc
from dct_jax import state as state_lib
from dct_jax import train
from dct_jax.data import pipeline
from dct_jax.models import regressor as regressor_lib

TINY = {"depth": 14, "aux_depth": 10, "width": 8, "feature_dim": 32, "hidden_dim": 16}


# ----------------------------------------------------------------------------- inputs


def make_config(batch: int, size: int, smpl_path: str | None, dtype: str = "float32", **model: Any):
    """``configs/ours_dc.py`` at this batch, image size and body model."""
    config = ours_dc.get_config()
    config.batch_size = batch
    config.data.image_size = size
    config.smpl_path = smpl_path
    config.model.dtype = dtype
    for key, value in model.items():
        config.model[key] = value
    return config


def synthetic_batch(config, faces: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A device batch with the pipeline's fields and shapes (``pipeline.empty_example``), random but valid.

    Args:
      config: its ``batch_size``, ``data.image_size``, ``data.num_dense`` and inputs are used.
      faces: ``(F, 3)`` the body's triangles (dense points lie on them).

    Returns:
      ``{field: (B, ...)}`` as ``pipeline.split_host_fields`` gives the train step.
    """
    rng = np.random.default_rng(seed)
    spec = state_lib.example_spec(config, train=True)
    s, n = spec.image_size, spec.num_dense
    examples = []
    for _ in range(config.batch_size):
        ex = pipeline.empty_example(spec)
        ex["image"] = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        ex["iuv"] = np.stack([rng.integers(0, 25, (s, s)), rng.integers(0, 256, (s, s)),
                              rng.integers(0, 256, (s, s))], axis=-1).astype(np.uint8)
        ex["keypoints"] = rng.uniform(-0.8, 0.8, ex["keypoints"].shape).astype(np.float32)
        ex["keypoints_weight"][:] = 1.0
        ex["smpl_pose"] = (0.2 * rng.standard_normal(ex["smpl_pose"].shape)).astype(np.float32)
        ex["smpl_betas"] = rng.standard_normal(ex["smpl_betas"].shape).astype(np.float32)
        ex["joints"] = (0.3 * rng.standard_normal(ex["joints"].shape)).astype(np.float32)
        ex["camera"] = np.array([0.9, 0.0, 0.0], np.float32)
        ex["dense_xy"] = rng.uniform(-0.8, 0.8, (n, 2)).astype(np.float32)
        ex["dense_vertex_ids"] = faces[rng.integers(0, len(faces), n)].astype(np.int32)
        ex["dense_barycentric"] = rng.dirichlet(np.ones(3), n).astype(np.float32)
        ex["dense_weight"][:] = 1.0
        for flag in ("has_smpl", "has_joints", "has_camera", "has_dense", "valid"):
            ex[flag] = np.float32(1)
        examples.append(ex)
    device, _ = pipeline.split_host_fields(pipeline.stack_examples(examples))
    return device


def benchmark_body(config):
    """``state_lib.load_body(config)``; the free default body gets random pose blend shapes.

    The default body has none (its ``posedirs`` are zeros) and XLA folds the
    zeros of a jitted constant, while a real SMPL model's pose correctives cost
    both frameworks a ``[V * 3, 207]`` matmul each way; random ones of SMPL's
    size (a few mm) make the default body cost what SMPL costs.
    """
    body, layout = state_lib.load_body(config)
    if config.smpl_path is None:
        posedirs = 0.005 * np.random.default_rng(4).standard_normal(body.posedirs.shape).astype(np.float32)
        body = body.replace(posedirs=jnp.asarray(posedirs))
    return body, layout


class Ours:
    """Our model, body, optimizer and state for ``config`` (the pieces ``train_and_evaluate`` builds)."""

    def __init__(self, config, seed: int = 0, **model_overrides: Any):
        self.config = config
        self.model = state_lib.create_model(config.model).clone(**model_overrides)
        self.tx, _ = state_lib.create_optimizer(config)
        self.body, self.layout = benchmark_body(config)
        self.weights = train.loss_weights(config)
        self.state = state_lib.initial_state(self.model, self.tx, config, jax.random.key(seed), pretrained=False)
        self.kwargs = {"model": self.model, "body": self.body, "layout": self.layout, "weights": self.weights,
                       "inputs": config.model.inputs}

    def step_fn(self, donate: bool = True) -> Callable:
        """``train.train_step`` jitted as in ``train.train_and_evaluate``."""
        return jax.jit(functools.partial(train.train_step, tx=self.tx, **self.kwargs),
                       donate_argnums=(0,) if donate else ())

    def head_loss(self, head: Mapping[str, Any], features: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
        """The loss from ``[B, F]`` encoder features: the Regressor's head, then ``train.compute_losses``."""
        dtype = self.model.dtype

        def dense(h, p):  # nn.Dense(dtype=...): inputs and parameters in dtype
            return jnp.dot(h.astype(dtype), p["kernel"].astype(dtype)) + p["bias"].astype(dtype)

        h = jax.nn.relu(dense(jax.nn.relu(features), head["head_hidden"]))
        residual = dense(h, head["head_out"]).astype(jnp.float32)
        mean = self.model.mean_params or regressor_lib.default_mean_params()
        params = residual + jnp.asarray(mean, jnp.float32)
        output = regressor_lib.RegressorOutput(
            camera=params[:, regressor_lib.CAMERA], pose=params[:, regressor_lib.POSE].reshape(-1, 24, 3),
            betas=params[:, regressor_lib.BETAS], params=params, residual=residual, features=features)
        return train.compute_losses(output, batch, self.body, self.layout, self.weights)[0]

    def head_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = self.state.params if params is None else params
        return {k: params[k] for k in ("head_hidden", "head_out")}


# ----------------------------------------------------------------------------- timed variants


def ours_variant(config, batch_np: Mapping[str, np.ndarray], features: np.ndarray, **model_overrides: Any):
    """(train step, after-encoders) closures for our code; each blocks until done."""
    ours = Ours(config, **model_overrides)
    batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
    step = ours.step_fn(donate=True)
    head_grad = jax.jit(jax.value_and_grad(ours.head_loss, argnums=(0, 1)))
    head, feats = jax.tree.map(jnp.copy, ours.head_params()), jnp.asarray(features)  # state is donated
    box = {"state": ours.state}

    def run_step():
        box["state"], metrics = step(box["state"], batch)
        metrics["loss"].block_until_ready()

    def run_head():
        jax.block_until_ready(head_grad(head, feats, batch))

    return run_step, run_head


def torch_variant(config, batch_np: Mapping[str, np.ndarray], features: np.ndarray, device: torch.device):
    """(train step, after-encoders) closures for the PyTorch twin."""
    body, layout = benchmark_body(config)
    model = torch_resnet.TorchRegressor().to(device)
    twin = torch_train_step.TorchTrainStep(model, torch_train_step.TorchBody(body, layout, device),
                                           train.loss_weights(config), learning_rate=config.learning_rate)
    batch = torch_train_step.to_torch(batch_np, device)
    feats = torch.as_tensor(features, device=device).requires_grad_(True)
    head_params = [*model.head_hidden.parameters(), *model.head_out.parameters()]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_step():
        twin(batch)
        sync()

    def run_head():
        for p in head_params:
            p.grad = None
        feats.grad = None
        twin.head_loss(feats, batch).backward()
        sync()

    return run_step, run_head


def timed_steady(fn: Callable[[], None], min_seconds: float) -> float:
    """Seconds per call in the steady state: the median call over ``min_seconds``, after one untimed call.

    The first calls after a train step are erratic in both frameworks (single
    calls up to 10x the usual, page faults of memory the step freed), and a
    mean over a few dozen calls of a millisecond-scale function would mostly
    measure those.
    """
    fn()
    calls, start = [], time.perf_counter()
    while not calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        calls.append(time.perf_counter() - t0)
    return statistics.median(calls)


# ----------------------------------------------------------------------------- check


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _tree_rel(ours: Any, theirs: Any) -> tuple[float, float, str]:
    """Relative difference of two pytrees: over all leaves, and the worst leaf (with its path)."""
    flat_o = jax.tree_util.tree_flatten_with_path(ours)[0]
    flat_t = jax.tree.leaves(theirs)
    whole = _rel(np.concatenate([np.ravel(x) for _, x in flat_o]), np.concatenate([np.ravel(x) for x in flat_t]))
    total = np.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in flat_t))
    worst, where = 0.0, ""
    for (path, o), t in zip(flat_o, flat_t):
        if np.linalg.norm(np.asarray(t, np.float64)) > 1e-4 * total:  # leaves that matter
            r = _rel(o, t)
            if r > worst:
                worst, where = r, jax.tree_util.keystr(path)
    return whole, worst, where


def check(args, device: torch.device) -> bool:
    """Our loss, gradients and Adam step vs the twin's, with the same (tiny) weights."""
    config = make_config(2, 64, args.smpl_path, **TINY)
    ours = Ours(config)
    batch_np = synthetic_batch(config, np.asarray(ours.body.faces), seed=1)
    batch = {k: jnp.asarray(v) for k, v in batch_np.items()}

    torch.manual_seed(0)
    model = torch_resnet.TorchRegressor(**TINY).to(device)
    torch_resnet.randomize_batchnorm_(model)
    with torch.no_grad():  # a head output of realistic size (residuals ~0.1)
        model.head_out.weight.mul_(0.2)
    sizes = {k: TINY[k] for k in ("depth", "aux_depth", "width")}
    variables = torch_train_step.regressor_variables(model, **sizes)
    state = ours.state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                               opt_state=ours.tx.init(variables["params"]))
    twin = torch_train_step.TorchTrainStep(model, torch_train_step.TorchBody(ours.body, ours.layout, device),
                                           ours.weights, learning_rate=config.learning_rate)
    batch_t = torch_train_step.to_torch(batch_np, device)

    features = np.random.default_rng(2).standard_normal((2, 2 * TINY["feature_dim"])).astype(np.float32)
    head_value, (head_grad, feat_grad) = jax.jit(jax.value_and_grad(ours.head_loss, argnums=(0, 1)))(
        ours.head_params(state.params), jnp.asarray(features), batch)
    feats_t = torch.as_tensor(features, device=device).requires_grad_(True)
    head_value_t = twin.head_loss(feats_t, batch_t)
    head_value_t.backward()
    head_grad_t = {name: {"kernel": getattr(model, name).weight.grad.T.cpu().numpy(),
                          "bias": getattr(model, name).bias.grad.cpu().numpy()}
                   for name in ("head_hidden", "head_out")}

    loss_and_grads = jax.jit(functools.partial(train.loss_and_grads, **ours.kwargs))
    loss, terms, _, grads = loss_and_grads(state, batch)
    state2, _ = ours.step_fn(donate=False)(state, batch)
    loss2 = loss_and_grads(state2, batch)[0]

    twin.optimizer.zero_grad(set_to_none=True)
    loss_t, terms_t = twin.loss(batch_t)
    loss_t.backward()
    grads_t = torch_train_step.regressor_variables(model, grads=True, **sizes)["params"]
    twin.optimizer.step()
    with torch.no_grad():
        loss2_t = twin.loss(batch_t)[0]

    rows = [("loss", _rel(loss, loss_t.item()), f"{float(loss):.6f} vs {loss_t.item():.6f}", 1e-4)]
    for name in terms:
        rows.append((f"  {name} term", _rel(terms[name], terms_t[name].item()),
                     f"{float(terms[name]):.6f} vs {terms_t[name].item():.6f}", 1e-4))
    whole, worst, where = _tree_rel(grads, grads_t)
    rows.append(("gradients (all)", whole, f"worst leaf {worst:.1e} at {where}", 1e-3))
    rows.append(("loss after one Adam step", _rel(loss2, loss2_t.item()),
                 f"{float(loss2):.6f} vs {loss2_t.item():.6f}", 1e-4))
    rows.append(("after-encoder loss", _rel(head_value, head_value_t.item()),
                 f"{float(head_value):.6f} vs {head_value_t.item():.6f}", 1e-4))
    whole, worst, where = _tree_rel(head_grad, head_grad_t)
    rows.append(("  head gradients", whole, f"worst leaf {worst:.1e} at {where}", 1e-3))
    rows.append(("  feature gradients", _rel(feat_grad, feats_t.grad.cpu().numpy()), "", 1e-3))
    ok = all(r <= tol for _, r, _, tol in rows)
    print(f"check (tiny two-branch nets {TINY}, batch 2, 64x64, ours vs torch twin, relative difference):")
    for name, r, note, tol in rows:
        print(f"  {name:<26} {r:9.1e}  {'ok  ' if r <= tol else 'FAIL'} (tol {tol:.0e})  {note}")
    print("check passed" if ok else "check FAILED")
    return ok


# ----------------------------------------------------------------------------- main


def pick_devices(name: str) -> tuple[jax.Device, torch.device]:
    """``auto``: a GPU if both jax and torch see one, else the CPU."""
    jax_gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if name == "gpu" or (name == "auto" and jax_gpus and torch.cuda.is_available()):
        if not jax_gpus or not torch.cuda.is_available():
            raise SystemExit(f"--device gpu: jax sees {len(jax_gpus)} GPUs, torch.cuda.is_available() = "
                             f"{torch.cuda.is_available()}")
        return jax_gpus[0], torch.device("cuda")
    return jax.devices("cpu")[0], torch.device("cpu")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--smpl_path", default=None, help="an SMPL .pkl/.npz (default: the free default body)")
    parser.add_argument("--check", action="store_true", help="compare the twin's loss and gradients with ours first")
    parser.add_argument("--no_bfloat16", action="store_true", help="skip the bfloat16 variant")
    parser.add_argument("--xla_conv_grads", action="store_true",
                        help="also time ours with XLA's convolution kernel gradients (Regressor(matmul_kernel_grad=False))")
    parser.add_argument("--head_only", action="store_true",
                        help="time only the after-encoder part (minutes instead of a quarter of an hour)")
    parser.add_argument("--head_seconds", type=float, default=0.5,
                        help="time the after-encoder part over this long per round (it takes milliseconds); "
                             "a round's figure is its median call")
    args = parser.parse_args(argv)
    jax_device, torch_device = pick_devices(args.device)

    with jax.default_device(jax_device):
        if args.check and not check(args, torch_device):
            raise SystemExit(1)
        config = make_config(args.batch, args.size, args.smpl_path)
        faces = np.asarray(state_lib.load_body(config)[0].faces)
        batch = synthetic_batch(config, faces)
        # Encoder features after the per-branch fc1 + ReLU: non-negative.
        features = np.maximum(np.random.default_rng(3).standard_normal((args.batch, 2048)), 0).astype(np.float32)

        variants = {"torch float32": torch_variant(config, batch, features, torch_device)}
        variants["ours float32"] = ours_variant(config, batch, features)
        if args.xla_conv_grads:
            variants["ours xla-conv"] = ours_variant(config, batch, features, matmul_kernel_grad=False)
        if not args.no_bfloat16:
            variants["ours bfloat16"] = ours_variant(make_config(args.batch, args.size, args.smpl_path, "bfloat16"),
                                                     batch, features)

        print(f"jax {jax.__version__} ({jax_device.platform}), torch {torch.__version__} ({torch_device.type}, "
              f"{torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; batch {args.batch}, {args.size}x{args.size}, configs/ours_dc.py",
              flush=True)
        compile_s = {}
        for name, (step, head) in variants.items():  # warm-up: compilation, allocator
            compile_s[name] = (0.0 if args.head_only else timed(step) + timed(step)) + timed(head) + timed(head)
        timers = {name: {"head": functools.partial(timed_steady, head, args.head_seconds)}
                  for name, (step, head) in variants.items()}
        if not args.head_only:
            timers = {name: {"step": functools.partial(timed, step), **timers[name]}
                      for name, (step, _) in variants.items()}
        times = interleaved_rounds(timers, args.rounds)

    columns = [("step", "step img/s", ".2f"), ("head", "after-enc img/s", ".0f")]
    print_ratio_table(times, args.batch, "torch float32", columns[1:] if args.head_only else columns, compile_s)
    print(f"(load average now {os.getloadavg()[0]:.2f})")

if __name__ == "__main__":
    main()
