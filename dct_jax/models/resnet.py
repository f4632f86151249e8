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
layout and name. The stem's max pool is a maximum of strided slices with a
custom gradient (``max_pool_3x3_s2``), and BatchNorm (``BatchNorm``, same
variables as ``nn.BatchNorm``) has a closed-form gradient fused with the
following residual add and ReLU; together about 10% off a train step.
The other convolutions (``Conv``, same parameter as ``nn.Conv``) take their
kernel gradient as im2col matmuls on CPU (``conv2d``, ``conv_kernel_grad``; XLA's
CPU kernel gradients of the stem and 3x3 convolutions are 2-8x slower), and
the 1x1 kernel gradients transpose the operand with fewer channels
(``matmul_1x1``): together 35-40% off a train step of the two-branch model
(``benchmarks/train_speed.py --xla_conv_grads``: 1.60 against 0.96 images/s). Forward values are unchanged; gradients
differ by float32 rounding (other summation orders).
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
        # [B, H, W, C_in] x [C_in, C_out] -> [B, H, W, C_out]
        return matmul_1x1(x.astype(self.dtype), kernel[0, 0].astype(self.dtype))


@jax.custom_vjp
def matmul_1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``jnp.dot(x, kernel)`` for ``x [..., C]``, ``kernel [C, O]``, with a kernel
    gradient that transposes the smaller operand.

    The kernel gradient ``x^T dy`` contracts over every pixel, so one operand
    is written transposed ``[channels, pixels]`` first; XLA's CPU backend picks
    ``dy`` even when it has 4x the channels of ``x`` (a bottleneck's expanding
    1x1 convolutions). Here it is whichever of the two has fewer channels.
    """
    return jnp.dot(x, kernel)


def _matmul_1x1_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _matmul_1x1_bwd(res, dy):
    x, kernel = res
    c, o = kernel.shape
    dx = jnp.dot(dy, kernel.T)
    x2, dy2 = x.reshape(-1, c), dy.reshape(-1, o)
    if c <= o:
        dkernel = jnp.dot(x2.T, dy2, preferred_element_type=jnp.float32)
    else:
        dkernel = jnp.dot(dy2.T, x2, preferred_element_type=jnp.float32).T
    return dx, dkernel.astype(kernel.dtype)


matmul_1x1.defvjp(_matmul_1x1_fwd, _matmul_1x1_bwd)


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """``nn.Conv``'s computation: NHWC input, HWIO kernel, symmetric padding."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """A convolution (as ``nn.Conv``, no bias) whose kernel gradient is a matmul on CPU.

    The forward pass and the input gradient are XLA's. On CPU the kernel
    gradient is computed per group of examples as ``patches @ dy`` (im2col:
    the input's ``kh * kw`` shifted windows, channel-major, then one matmul),
    see ``conv_kernel_grad``: XLA's CPU convolution kernel gradients are 2-8x
    slower than that here. Other platforms keep XLA's.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[kh, kw, C, O]``, same dtype as ``x``.
      stride, padding: the same in both spatial dimensions.

    Returns:
      ``[B, Ho, Wo, O]``.
    """
    return _conv(x, kernel, stride, padding)


def _conv2d_fwd(x, kernel, stride, padding):
    return _conv(x, kernel, stride, padding), (x, kernel)


def _conv2d_bwd(stride, padding, res, dy):
    x, kernel = res
    dx = jax.vjp(lambda x: _conv(x, kernel, stride, padding), x)[1](dy)[0]

    def xla_kernel_grad(x, dy):
        return jax.vjp(lambda k: _conv(x, k, stride, padding), kernel)[1](dy)[0]

    def cpu_kernel_grad(x, dy):
        return conv_kernel_grad(x, dy, kernel.shape[:2], stride, padding).astype(kernel.dtype)

    dkernel = jax.lax.platform_dependent(x, dy, cpu=cpu_kernel_grad, default=xla_kernel_grad)
    return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# Examples per matmul of ``conv_kernel_grad``: enough for ~1k output pixels.
_GRAD_PIXELS = 1024


def conv_kernel_grad(
    x: jax.Array, dy: jax.Array, kernel_size: Sequence[int], stride: int, padding: int
) -> jax.Array:
    """The kernel gradient of ``_conv(x, kernel, stride, padding)`` for the output cotangent ``dy``.

    ``sum_g patches_g @ dy_g`` over groups ``g`` of examples, with ``patches_g
    [kh * kw * C, pixels of g]`` the im2col matrix of the group, built from the
    ``stride x stride`` phases of the padded input so that every window is a
    unit-stride slice. One group's patches stay in cache; a group has about
    ``_GRAD_PIXELS`` output pixels. Group ``g`` holds examples ``g, g + n, g + 2n, ...``
    (``n`` groups), so a batch sharded over devices stays sharded inside each
    group (the matmul then sums over devices). Accumulates in float32.

    Args:
      x: ``[B, H, W, C]``; dy: ``[B, Ho, Wo, O]``.
      kernel_size: ``(kh, kw)``.

    Returns:
      ``[kh, kw, C, O]`` float32.
    """
    (b, h, w, c), (_, ho, wo, o) = x.shape, dy.shape
    kh, kw = kernel_size
    s = stride
    hp, wp = ho + (kh - 1) // s, wo + (kw - 1) // s  # rows / columns of each phase
    xp = jnp.pad(x, ((0, 0), (padding, max(0, s * hp - h - padding)), (padding, max(0, s * wp - w - padding)), (0, 0)))
    size = max(d for d in range(1, b + 1) if b % d == 0 and d * ho * wo <= max(_GRAD_PIXELS, ho * wo))
    n = b // size
    # [n, s, s, C, size, hp, wp]: phase (p, q) holds the padded pixels (s * i + p, s * j + q).
    phases = xp[:, : s * hp, : s * wp].reshape(size, n, hp, s, wp, s, c).transpose(1, 3, 5, 6, 0, 2, 4)
    dy = dy.reshape(size, n, ho * wo, o).transpose(1, 0, 2, 3).reshape(n, size * ho * wo, o)

    def one_group(g, acc):
        xg = phases[g]
        taps = [xg[i % s, j % s, :, :, i // s : i // s + ho, j // s : j // s + wo] for i in range(kh) for j in range(kw)]
        patches = jnp.stack(taps).reshape(kh * kw * c, size * ho * wo)
        return acc + jnp.dot(patches, dy[g], preferred_element_type=jnp.float32)

    acc = jax.lax.fori_loop(0, n, one_group, jnp.zeros((kh * kw * c, o), jnp.float32))
    return acc.reshape(kh, kw, c, o)


class Conv(nn.Module):
    """A bias-free convolution with :func:`conv2d`'s fast kernel gradient.

    Takes ``nn.Conv``'s arguments as the ResNets pass them (square strides,
    symmetric padding) and has the same parameter, ``kernel [kh, kw, C_in,
    C_out]``, and the same values as ``nn.Conv(..., use_bias=False)``.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: int | Sequence[tuple[int, int]] = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., Any] = conv_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        strides = {self.strides} if isinstance(self.strides, int) else set(self.strides)
        padding = {self.padding} if isinstance(self.padding, int) else {p for pair in self.padding for p in pair}
        if len(strides) != 1 or len(padding) != 1:
            raise ValueError(f"Conv takes equal strides and symmetric, equal padding; got strides "
                             f"{self.strides} and padding {self.padding}")
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), self.param_dtype
        )
        return conv2d(x.astype(self.dtype), kernel.astype(self.dtype), strides.pop(), padding.pop())


def _pool_taps(xp: jax.Array, ho: int, wo: int):
    """The nine strided ``[B, ho, wo, C]`` slices of a padded input, row-major window order."""
    b, _, _, c = xp.shape
    for i in range(3):
        for j in range(3):
            yield i, j, jax.lax.slice(xp, (0, i, j, 0), (b, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch's ``MaxPool2d(3, stride=2, padding=1)`` on ``[B, H, W, C]`` (-inf padding).

    Written as the maximum of nine strided slices, not ``nn.max_pool``, with a
    custom gradient: the forward pass also records which of the nine window
    positions holds the maximum (the first one at ties, as torch), and the
    gradient routes each output's cotangent there. XLA's CPU gradients of
    ``reduce_window`` (select-and-scatter) and of a chain of maxima are several
    times slower.
    """
    return _max_pool_fwd(x)[0]


def _max_pool_fwd(x: jax.Array):
    b, h, w, c = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    out, where = None, None
    for i, j, s in _pool_taps(xp, ho, wo):
        if out is None:
            out, where = s, jnp.zeros(s.shape, jnp.int8)
        else:
            better = s > out  # strict: the first maximum wins at ties
            out = jnp.where(better, s, out)
            where = jnp.where(better, jnp.int8(3 * i + j), where)
    return out, (where, x.shape)


def _max_pool_bwd(res, g):
    where, (b, h, w, c) = res
    _, ho, wo, _ = g.shape
    zero = jnp.zeros((), g.dtype)
    dxp = None
    for i in range(3):
        for j in range(3):
            # Output (r, s) read padded input (i + 2r, j + 2s): interior padding 1.
            part = jax.lax.pad(
                jnp.where(where == 3 * i + j, g, zero),
                zero,
                ((0, 0, 0), (i, h + 2 - i - (2 * ho - 1), 1), (j, w + 2 - j - (2 * wo - 1), 1), (0, 0, 0)),
            )
            dxp = part if dxp is None else dxp + part
    return (dxp[:, 1 : h + 1, 1 : w + 1, :],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance ``[C]`` over all axes but the last, float32.

    As Flax's BatchNorm (``use_fast_variance``): ``E[x^2] - E[x]^2``, clipped at 0.
    """
    x = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def batch_norm_train(
    x: jax.Array, scale: jax.Array, bias: jax.Array, residual: jax.Array | None, epsilon: float, relu: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Train-mode BatchNorm, optionally followed by ``+ residual`` and a ReLU.

    ``y = act((x - mean) / sqrt(var + epsilon) * scale + bias + residual)`` with
    the batch statistics of ``x``. The gradient is the closed-form BatchNorm
    backward; it keeps only ``x`` and the statistics (the ReLU mask is
    recomputed from them), so XLA neither stores the pre-activation nor re-derives
    it through a chain of residual blocks.

    Args:
      x: ``[..., C]`` (the statistics reduce over all other axes).
      scale, bias: ``[C]`` float32.
      residual: None or an array like ``x``, added before the ReLU.
      epsilon: added to the variance.
      relu: apply a ReLU at the end.

    Returns:
      ``(y, mean, var)``: ``y`` like ``x`` (same dtype), the float32 batch mean and
      biased variance ``[C]`` (differentiable too).
    """
    y, mean, var, _ = _bn_forward(x, scale, bias, residual, epsilon, relu)
    return y, mean, var


def _bn_forward(x, scale, bias, residual, epsilon, relu):
    mean, var = _moments(x)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x.astype(jnp.float32) - mean) * (scale * inv) + bias
    if residual is not None:
        y = y + residual.astype(jnp.float32)
    if relu:
        y = jnp.maximum(y, 0.0)
    return y.astype(x.dtype), mean, var, inv


def _bn_fwd(x, scale, bias, residual, epsilon, relu):
    y, mean, var, inv = _bn_forward(x, scale, bias, residual, epsilon, relu)
    # Without a residual the ReLU mask is recomputed from x; with one it is
    # y > 0 (y is the block's output, which the next layer keeps anyway).
    # ``with_residual`` is None (no residual), () or (y,) (with ReLU).
    with_residual = None if residual is None else ((y,) if relu else ())
    return (y, mean, var), (x, scale, bias, mean, inv, with_residual)


def _bn_bwd(epsilon, relu, res, cts):
    del epsilon
    x, scale, bias, mean, inv, with_residual = res
    dy, dmean, dvar = cts
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xc = x.astype(jnp.float32) - mean
    xhat = xc * inv
    dy = dy.astype(jnp.float32)
    if relu:
        positive = (xhat * scale + bias > 0) if with_residual is None else (with_residual[0] > 0)
        dy = jnp.where(positive, dy, 0.0)
    dbias = jnp.sum(dy, axes)
    dscale = jnp.sum(dy * xhat, axes)
    dx = (scale * inv) * (dy - (dbias + xhat * dscale) / n) + (dmean + 2.0 * dvar * xc) / n
    dresidual = None if with_residual is None else dy.astype(x.dtype)
    return dx.astype(x.dtype), dscale, dbias, dresidual


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


class BatchNorm(nn.Module):
    """``nn.BatchNorm`` over the last axis with a fused ``+ residual`` and ReLU.

    Same variables as ``nn.BatchNorm`` (params ``scale``, ``bias``; batch_stats
    ``mean``, ``var``), the same update ``ra = momentum * ra + (1 - momentum) *
    batch`` (biased variance, not updated during ``init``) and the same values;
    in train mode the gradient is ``batch_norm_train``'s closed form.

    ``BatchNorm(...)(x, residual, relu=True)`` is ``relu(BatchNorm(...)(x) + residual)``
    in one step.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array | None = None, *, relu: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.use_running_average:
            y = (x.astype(jnp.float32) - ra_mean.value) * (scale * jax.lax.rsqrt(ra_var.value + self.epsilon)) + bias
            if residual is not None:
                y = y + residual.astype(jnp.float32)
            if relu:
                y = jnp.maximum(y, 0.0)
            return y.astype(self.dtype)
        if residual is not None:
            residual = residual.astype(x.dtype)
        y, mean, var = batch_norm_train(x, scale, bias, residual, self.epsilon, relu)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(self.dtype)


def norm_act(norm: nn.Module, act: Callable[[jax.Array], jax.Array], x: jax.Array, residual: jax.Array | None = None):
    """``act(norm(x) + residual)``; one fused step when ``norm`` is ``BatchNorm`` and ``act`` ReLU."""
    if isinstance(norm, BatchNorm) and act is nn.relu:
        return norm(x, residual, relu=True)
    y = norm(x)
    return act(y if residual is None else y + residual)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions and a shortcut."""

    planes: int
    strides: int = 1
    conv: ModuleDef = nn.Conv
    conv1x1: ModuleDef = Conv1x1
    norm: ModuleDef = BatchNorm
    act: Callable[[jax.Array], jax.Array] = nn.relu

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv(self.planes, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv1")(x)
        y = norm_act(self.norm(name="bn1"), self.act, y)
        y = self.conv(self.planes, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
            residual = self.conv1x1(self.planes * self.expansion, self.strides, name="downsample_0")(x)
            residual = self.norm(name="downsample_1")(residual)
        return norm_act(self.norm(name="bn2"), self.act, y, residual)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (1x1 -> 3x3 with the stride -> 1x1, x4 expansion)."""

    planes: int
    strides: int = 1
    conv: ModuleDef = nn.Conv
    conv1x1: ModuleDef = Conv1x1
    norm: ModuleDef = BatchNorm
    act: Callable[[jax.Array], jax.Array] = nn.relu

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv1x1(self.planes, name="conv1")(x)
        y = norm_act(self.norm(name="bn1"), self.act, y)
        y = self.conv(self.planes, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv2")(y)
        y = norm_act(self.norm(name="bn2"), self.act, y)
        y = self.conv1x1(self.planes * self.expansion, name="conv3")(y)
        if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
            residual = self.conv1x1(self.planes * self.expansion, self.strides, name="downsample_0")(x)
            residual = self.norm(name="downsample_1")(residual)
        return norm_act(self.norm(name="bn3"), self.act, y, residual)


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
      fused_norm: use ``BatchNorm`` (closed-form gradient, fused residual and
        ReLU) instead of ``nn.BatchNorm`` (same variables and values either way).
      matmul_kernel_grad: the other convolutions are ``Conv`` (kernel gradients
        as im2col matmuls on CPU) instead of ``nn.Conv`` (same parameters and values).
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int | None = None
    width: int = 64
    dtype: Any = jnp.float32
    matmul_1x1: bool = True
    fused_norm: bool = True
    matmul_kernel_grad: bool = True

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
        if self.matmul_kernel_grad:
            conv = functools.partial(Conv, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_init)
        else:
            conv = functools.partial(
                nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_init
            )
        if self.matmul_1x1:
            conv1x1 = functools.partial(Conv1x1, dtype=self.dtype)
        else:
            conv1x1 = lambda features, strides=1, **kw: conv(  # noqa: E731
                features, (1, 1), strides, padding=((0, 0), (0, 0)), **kw
            )
        norm = functools.partial(
            BatchNorm if self.fused_norm else nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )

        x = x.astype(self.dtype)
        x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
        x = norm_act(norm(name="bn1"), nn.relu, x)
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
    fused_norm: bool = True,
    matmul_kernel_grad: bool = True,
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
      fused_norm: use ``BatchNorm`` rather than ``nn.BatchNorm`` (faster to
        differentiate; same variables and values).
      matmul_kernel_grad: use ``Conv`` rather than ``nn.Conv`` (faster kernel
        gradients on CPU; same parameters and values).
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
        fused_norm=fused_norm,
        matmul_kernel_grad=matmul_kernel_grad,
        name=name,
    )


def feature_dim(depth: int, width: int = 64) -> int:
    """Size of the pooled features of ``resnet(depth, width=width)``."""
    if depth not in STAGES:
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(STAGES)}")
    expansion = 1 if STAGES[depth][0] == "basic" else 4
    return width * 8 * expansion
