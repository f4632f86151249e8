"""Flax ResNets laid out like torchvision's, so that its weights convert one to one.

Shapes: images ``[B, H, W, C]`` (NHWC). Layout (torchvision "v1.5": the stride of
a bottleneck block sits on its 3x3 convolution):

  conv1 (7x7/2) -> bn1 -> relu -> maxpool (3x3/2) -> layer1 .. layer4 -> mean over
  H, W -> fc (only when ``num_classes`` is set).

Submodule names mirror torchvision's state-dict keys: ``layer1.0.conv1.weight``
is ``params['layer1_0']['conv1']['kernel']`` here, ``layer2.0.downsample.1.running_mean``
is ``batch_stats['layer2_0']['downsample_1']['mean']`` (see
``dct_jax.models.convert``). Keep these names stable: conversion relies on them.

BatchNorm matches ``torch.nn.BatchNorm2d`` defaults: epsilon 1e-5 and torch
momentum 0.1 (Flax momentum 0.9). One known difference: in train mode torch
stores the *unbiased* batch variance in ``running_var``, Flax the biased one
(a factor ``n / (n - 1)`` with ``n = B * H * W``); eval mode is identical.

Computation may run in ``dtype`` (e.g. ``jnp.bfloat16``) while parameters and
batch statistics stay float32; the global average pool and the returned
features / logits are float32.

Speed on CPU (see ``benchmarks/encoder_speed.py``): 1x1 convolutions are
written as matmuls over channels (``Conv1x1``), because XLA's CPU matmul is much
faster than its convolution; the kernel keeps ``nn.Conv``'s ``[1, 1, C_in, C_out]``
layout and name. The stem's max pool is a maximum of strided slices
(``max_pool_3x3_s2``), whose gradient XLA computes faster than select-and-scatter.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# torchvision's Conv2d init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# depth -> (block kind, blocks per stage). 18..152 are torchvision's; 10 (basic)
# and 14 (bottleneck) are tiny variants for tests and the CPU quickstart.
STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    14: ("bottleneck", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class Conv1x1(nn.Module):
    """A bias-free 1x1 convolution computed as a matmul over channels.

    Same parameter as ``nn.Conv(features, (1, 1), strides, use_bias=False)``:
    ``kernel [1, 1, C_in, C_out]``. A stride ``s`` keeps every ``s``-th pixel,
    which is what a padding-free 1x1 convolution with stride ``s`` does.
    """

    features: int
    strides: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = conv_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), self.param_dtype
        )
        if self.strides != 1:
            x = x[:, :: self.strides, :: self.strides, :]
        x = x.astype(self.dtype)
        # [B, H, W, C_in] x [C_in, C_out] -> [B, H, W, C_out]
        return jnp.dot(x, kernel[0, 0].astype(self.dtype))


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch's ``MaxPool2d(3, stride=2, padding=1)`` on ``[B, H, W, C]`` (-inf padding).

    Written as the maximum of nine strided slices, not ``nn.max_pool``: the values
    are identical, but XLA's CPU gradient of ``reduce_window`` (select-and-scatter)
    is several times slower than the gradient of elementwise maxima. At exact ties
    the gradient is split between the tied inputs instead of going to one of them.
    """
    b, h, w, c = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    out = None
    for i in range(3):
        for j in range(3):
            s = jax.lax.slice(xp, (0, i, j, 0), (b, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))
            out = s if out is None else jnp.maximum(out, s)
    return out


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions and a shortcut."""

    planes: int
    strides: int = 1
    conv: ModuleDef = nn.Conv
    conv1x1: ModuleDef = Conv1x1
    norm: ModuleDef = nn.BatchNorm
    act: Callable[[jax.Array], jax.Array] = nn.relu

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv(self.planes, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv(self.planes, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
            residual = self.conv1x1(self.planes * self.expansion, self.strides, name="downsample_0")(x)
            residual = self.norm(name="downsample_1")(residual)
        return self.act(y + residual)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (1x1 -> 3x3 with the stride -> 1x1, x4 expansion)."""

    planes: int
    strides: int = 1
    conv: ModuleDef = nn.Conv
    conv1x1: ModuleDef = Conv1x1
    norm: ModuleDef = nn.BatchNorm
    act: Callable[[jax.Array], jax.Array] = nn.relu

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv1x1(self.planes, name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv(self.planes, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv2")(y)
        y = self.act(self.norm(name="bn2")(y))
        y = self.conv1x1(self.planes * self.expansion, name="conv3")(y)
        y = self.norm(name="bn3")(y)
        if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
            residual = self.conv1x1(self.planes * self.expansion, self.strides, name="downsample_0")(x)
            residual = self.norm(name="downsample_1")(residual)
        return self.act(y + residual)


class ResNet(nn.Module):
    """A torchvision-layout ResNet.

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)``.
      block_cls: ``BasicBlock`` or ``Bottleneck``.
      num_classes: size of the ``fc`` classifier; ``None`` returns the pooled
        features ``[B, width * 8 * expansion]`` instead of logits.
      width: channels of the stem and of the first stage (torchvision: 64).
      dtype: computation dtype; parameters are always float32.
      matmul_1x1: compute 1x1 convolutions as matmuls (same parameters either way).
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int | None = None
    width: int = 64
    dtype: Any = jnp.float32
    matmul_1x1: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Applies the network.

        Args:
          x: images ``[B, H, W, C]``.
          train: BatchNorm uses (and updates, with ``mutable=['batch_stats']``)
            batch statistics if True, the running averages if False.

        Returns:
          ``[B, num_classes]`` logits, or ``[B, D]`` pooled features when
          ``num_classes`` is None; float32.
        """
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images [B, H, W, C], got shape {tuple(x.shape)}")
        conv = functools.partial(
            nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_init
        )
        if self.matmul_1x1:
            conv1x1 = functools.partial(Conv1x1, dtype=self.dtype)
        else:
            conv1x1 = lambda features, strides=1, **kw: conv(  # noqa: E731
                features, (1, 1), strides, padding="VALID", **kw
            )
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )

        x = x.astype(self.dtype)
        x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        x = max_pool_3x3_s2(x)
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    planes=self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    conv=conv,
                    conv1x1=conv1x1,
                    norm=norm,
                    name=f"layer{i + 1}_{j}",
                )(x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        if self.num_classes is not None:
            x = nn.Dense(
                self.num_classes,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=dense_init,
                name="fc",
            )(x)
        return x.astype(jnp.float32)


def resnet(
    depth: int,
    *,
    num_classes: int | None = None,
    width: int = 64,
    dtype: Any = jnp.float32,
    matmul_1x1: bool = True,
    name: str | None = None,
) -> ResNet:
    """Builds a torchvision-layout ResNet.

    Args:
      depth: 18, 34, 50, 101 or 152 (torchvision's), or the tiny variants 10
        (basic blocks) and 14 (bottleneck blocks), one block per stage.
      num_classes: classifier size, or None for the pooled features.
      width: stem / first-stage channels (64 in torchvision; e.g. 8 for tests).
      dtype: computation dtype (``jnp.bfloat16`` for mixed precision).
      matmul_1x1: compute 1x1 convolutions as matmuls (faster on CPU).
      name: the module name (when built inside another module).

    Returns:
      A ``ResNet`` module; apply it as ``module.apply(variables, images, train=False)``.
    """
    if depth not in STAGES:
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(STAGES)}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    kind, stages = STAGES[depth]
    return ResNet(
        stage_sizes=stages,
        block_cls=BasicBlock if kind == "basic" else Bottleneck,
        num_classes=num_classes,
        width=width,
        dtype=dtype,
        matmul_1x1=matmul_1x1,
        name=name,
    )


def feature_dim(depth: int, width: int = 64) -> int:
    """Size of the pooled features of ``resnet(depth, width=width)``."""
    if depth not in STAGES:
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(STAGES)}")
    expansion = 1 if STAGES[depth][0] == "basic" else 4
    return width * 8 * expansion
