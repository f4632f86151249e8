"""Images/s of DCT's two-branch encoder + head: ours (jax.jit) vs its PyTorch twin.

The model is ``Regressor(encoder="two_branch")`` (ResNet-50 on the image + ResNet-18
on the IUV, per-branch fc1, head) and the twin ``tests/torch_resnet.TorchRegressor``.
"forward" is eval mode; "train" is forward + backward (loss: mean squared output)
+ an Adam update, with BatchNorm in train mode. Each variant is timed in
interleaved rounds in this one process (so load from other processes hits all
variants alike); the table gives the median and the best round, each with its
ratio to torch.

  python benchmarks/encoder_speed.py                  # batch 16, 224 x 224, 5 rounds
  python benchmarks/encoder_speed.py --ablations      # + 1x1 as convolutions, nn.BatchNorm, donation
  python benchmarks/encoder_speed.py --batch 2 --size 64 --rounds 2   # a quick smoke run

Expect several minutes at the defaults on a 2-core CPU (compilation included).

Measured on the 2-core development CPU (shared, load average 1.5-1.9; jax 0.10.2,
torch 2.13 CPU), batch 16, 224 x 224, median of 5 rotated rounds, ratio to torch
("before" is the model without the fused BatchNorm and the max-pool gradient):

  variant                      forward img/s  ratio   train img/s  ratio
  torch float32                        22.2    1.00          6.49   1.00
  ours float32                         24.8    1.12          4.30   0.66
  ours bfloat16                        20.5    0.92          5.07   0.78
  before float32                       22.1    1.00          4.26   0.66

Torch-free A/B runs of the train step alone (8 rotated rounds, one process) are
steadier: 3.92 s before -> 3.53 s now (-10%), and a donated train state is 7%
slower than a fresh one (3.78 s vs 3.53 s), so the default no longer donates.
Run-to-run noise of the table on this shared machine is +-15%, which is more
than that gain. Per XLA's profiler most of a train step is YNNPACK convolution
and matmul kernels, then (about 8%) loop fusions that write the BatchNorm
gradient transposed for the 1x1 weight gradients (XLA's untiled transpose).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch_resnet  # noqa: E402  (test-only twin)
from _timing import interleaved_rounds, print_ratio_table, timed  # noqa: E402

from dct_jax.models.regressor import Regressor  # noqa: E402


def flax_variant(
    image, aux, *, dtype=jnp.float32, matmul_1x1=True, fused_norm=True, donate=False, model_cls=Regressor
):
    """(forward, train_step) closures for our model; each blocks until done."""
    model = model_cls(encoder="two_branch", dtype=dtype, matmul_1x1=matmul_1x1, fused_norm=fused_norm)
    variables = jax.jit(lambda: model.init(jax.random.key(0), image[:1], aux[:1]))()
    tx = optax.adam(1e-4)
    state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
             "opt_state": tx.init(variables["params"])}

    def forward(variables, image, aux):
        return model.apply(variables, image, aux, train=False).params

    def train_step(state, image, aux):
        def loss_fn(params):
            out, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                image, aux, train=True, mutable=["batch_stats"],
            )
            return jnp.mean(out.residual**2), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates),
                "batch_stats": batch_stats, "opt_state": opt_state}, loss

    forward_jit = jax.jit(forward)
    step_jit = jax.jit(train_step, donate_argnums=(0,) if donate else ())
    box = {"state": state}

    def run_forward():
        v = {"params": box["state"]["params"], "batch_stats": box["state"]["batch_stats"]}
        forward_jit(v, image, aux).block_until_ready()

    def run_train():
        box["state"], loss = step_jit(box["state"], image, aux)
        loss.block_until_ready()

    return run_forward, run_train


def torch_variant(image, aux):
    model = torch_resnet.TorchRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
    aux_t = torch.from_numpy(np.ascontiguousarray(aux.transpose(0, 3, 1, 2)))

    def run_forward():
        model.eval()
        with torch.inference_mode():
            model(image_t, aux_t)

    def run_train():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = model(image_t, aux_t).square().mean()
        loss.backward()
        opt.step()

    return run_forward, run_train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--ablations", action="store_true", help="also time 1x1 convolutions, nn.BatchNorm and a donated train state"
    )
    args = parser.parse_args(argv)

    rng = np.random.RandomState(0)
    image = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    aux = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    image_j, aux_j = jnp.asarray(image), jnp.asarray(aux)

    variants = {"torch float32": torch_variant(image, aux)}
    variants["ours float32"] = flax_variant(image_j, aux_j)
    variants["ours bfloat16"] = flax_variant(image_j, aux_j, dtype=jnp.bfloat16)
    if args.ablations:
        variants["ours float32, 1x1 as conv"] = flax_variant(image_j, aux_j, matmul_1x1=False)
        variants["ours float32, nn.BatchNorm"] = flax_variant(image_j, aux_j, fused_norm=False)
        variants["ours float32, donated state"] = flax_variant(image_j, aux_j, donate=True)

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; batch {args.batch}, {args.size}x{args.size}", flush=True)
    compile_s = {}
    for name, (fwd, train) in variants.items():  # warm-up: compilation, allocator
        compile_s[name] = timed(fwd) + timed(train)
    times = interleaved_rounds(
        {name: {"forward": functools.partial(timed, fwd), "train": functools.partial(timed, train)}
         for name, (fwd, train) in variants.items()}, args.rounds)
    print_ratio_table(times, args.batch, "torch float32",
                      [("forward", "forward img/s", ".2f"), ("train", "train img/s", ".2f")], compile_s)
    print(f"(load average now {os.getloadavg()[0]:.2f})")

if __name__ == "__main__":
    main()
