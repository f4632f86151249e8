"""Tests of dct_jax.models.resnet (parity with the torch twin: test_convert.py).

Compilation dominates the runtime on CPU, so the tests share a few jitted
functions of one tiny network and build weights without compiling an init.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_resnet

from dct_jax.models import resnet as resnet_lib
from dct_jax.models.resnet import resnet

TINY = resnet(10, width=8)
X_SHAPE = (4, 32, 32, 3)
tiny_eval = jax.jit(functools.partial(TINY.apply, train=False))
tiny_train = jax.jit(functools.partial(TINY.apply, train=True, mutable=["batch_stats"]))


@pytest.fixture(scope="module")
def tiny_variables():
    return torch_resnet.random_variables(TINY, jnp.zeros(X_SHAPE), seed=0)


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "depth, expected",
    # torchvision's published parameter counts (its ResNet18/50/101_Weights docs).
    [(18, 11_689_512), (50, 25_557_032), (101, 44_549_160)],
)
def test_parameter_counts_match_torchvision(depth, expected):
    model = resnet(depth, num_classes=1000)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert _count(shapes["params"]) == expected
    assert set(shapes) == {"params", "batch_stats"}


def test_submodule_names_follow_torchvision():
    shapes = jax.eval_shape(lambda: resnet(50).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    params = shapes["params"]
    assert {"conv1", "bn1", "layer1_0", "layer4_2"} <= set(params)
    assert [k for k in params if k.startswith("layer3")] == [f"layer3_{i}" for i in range(6)]
    assert set(params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_0", "downsample_1"}
    assert params["layer2_0"]["downsample_0"]["kernel"].shape == (1, 1, 256, 512)
    assert set(shapes["batch_stats"]["layer2_0"]["downsample_1"]) == {"mean", "var"}
    assert "fc" not in params


@pytest.mark.parametrize("depth, kind", [(10, "basic"), (14, "bottleneck"), (34, "basic"), (152, "bottleneck")])
def test_variants_output_shapes(depth, kind):
    model = resnet(depth, width=8)
    assert resnet_lib.STAGES[depth][0] == kind
    out = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0], jax.ShapeDtypeStruct((2, 64, 48, 3), jnp.float32)
    )
    assert out.shape == (2, resnet_lib.feature_dim(depth, 8)) and out.dtype == jnp.float32


def test_matmul_1x1_equals_convolution():
    x = jax.random.normal(jax.random.key(1), (2, 33, 33, 3))  # odd size: strided 1x1 subsampling
    fast = resnet(14, num_classes=5, width=8, matmul_1x1=True)
    slow = resnet(14, num_classes=5, width=8, matmul_1x1=False)
    variables = torch_resnet.random_variables(fast, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, torch_resnet.random_variables(slow, x)
    )
    np.testing.assert_allclose(
        jax.jit(fast.apply)(variables, x), jax.jit(slow.apply)(variables, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 8, 8, 2), (1, 1, 2, 1)])
def test_max_pool_matches_torch_layout(shape):
    x = np.random.RandomState(0).randn(*shape).astype(np.float32)
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3, stride=2, padding=1)
    np.testing.assert_array_equal(resnet_lib.max_pool_3x3_s2(jnp.asarray(x)), ref.numpy().transpose(0, 2, 3, 1))


def test_train_mode_updates_batch_stats_like_torch(tiny_variables):
    x = np.random.RandomState(0).randn(*X_SHAPE).astype(np.float32)
    _, updates = tiny_train(tiny_variables, x)
    stats, old = updates["batch_stats"], tiny_variables["batch_stats"]
    assert jax.tree.structure(stats) == jax.tree.structure(old)
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(old)))

    # Reference: torch's BatchNorm2d (momentum 0.1) after the same first convolution.
    conv = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    bn = torch.nn.BatchNorm2d(8)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.array(tiny_variables["params"]["conv1"]["kernel"]).transpose(3, 2, 0, 1)))
        bn.running_mean.copy_(torch.from_numpy(np.array(old["bn1"]["mean"])))
        bn.running_var.copy_(torch.from_numpy(np.array(old["bn1"]["var"])))
        bn.train()(conv(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    np.testing.assert_allclose(stats["bn1"]["mean"], bn.running_mean.numpy(), rtol=1e-4, atol=1e-6)
    # torch keeps the unbiased batch variance, Flax the biased one (see the module docstring).
    n = 4 * 16 * 16
    torch_batch_var = (bn.running_var.numpy() - 0.9 * np.asarray(old["bn1"]["var"])) / 0.1
    flax_batch_var = (np.asarray(stats["bn1"]["var"]) - 0.9 * np.asarray(old["bn1"]["var"])) / 0.1
    np.testing.assert_allclose(flax_batch_var, torch_batch_var * (n - 1) / n, rtol=1e-4, atol=1e-6)


def test_eval_mode_uses_running_stats(tiny_variables):
    rng = np.random.RandomState(1)
    x = rng.randn(*X_SHAPE).astype(np.float32)
    x_other = x.copy()
    x_other[1:] = rng.randn(*x[1:].shape)  # same first example, different rest of the batch
    # Eval mode is per example (running statistics); train mode is not.
    np.testing.assert_allclose(tiny_eval(tiny_variables, x)[0], tiny_eval(tiny_variables, x_other)[0], rtol=1e-5, atol=1e-6)
    train_x, _ = tiny_train(tiny_variables, x)
    train_other, _ = tiny_train(tiny_variables, x_other)
    assert not np.allclose(train_x[0], train_other[0], atol=1e-4)
    # Changing the running statistics changes the eval output.
    shifted = {
        "params": tiny_variables["params"],
        "batch_stats": jax.tree.map(lambda s: s * 1.5 + 0.1, tiny_variables["batch_stats"]),
    }
    assert not np.allclose(tiny_eval(shifted, x), tiny_eval(tiny_variables, x), atol=1e-4)


def test_bfloat16_close_to_float32_with_float32_params():
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    f32 = resnet(18, num_classes=10, width=16)
    bf16 = resnet(18, num_classes=10, width=16, dtype=jnp.bfloat16)
    variables = torch_resnet.random_variables(f32, x)
    bf16_shapes = jax.eval_shape(lambda: bf16.init(jax.random.key(0), x))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(bf16_shapes))
    ref = jax.jit(f32.apply)(variables, x)
    out = jax.jit(bf16.apply)(variables, x)
    assert out.dtype == jnp.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2


def test_gradients_under_jit(tiny_variables):
    @jax.jit
    def grads(params, batch_stats, x):
        def loss(p):
            out, _ = TINY.apply({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
            return jnp.mean(out**2)

        return jax.grad(loss)(params)

    x = jax.random.normal(jax.random.key(3), X_SHAPE)
    g = grads(tiny_variables["params"], tiny_variables["batch_stats"], x)
    assert jax.tree.structure(g) == jax.tree.structure(tiny_variables["params"])
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
    assert float(jnp.abs(g["conv1"]["kernel"]).sum()) > 0


def test_bad_inputs_raise_clear_errors(tiny_variables):
    with pytest.raises(ValueError, match="Unsupported ResNet depth 19"):
        resnet(19)
    with pytest.raises(ValueError, match="width"):
        resnet(18, width=0)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*\(32, 32, 3\)"):
        TINY.apply(tiny_variables, jnp.zeros((32, 32, 3)))
    with pytest.raises(Exception, match=r"\(7, 7, 1, 8\).*\(7, 7, 3, 8\)"):
        TINY.apply(tiny_variables, jnp.zeros((1, 32, 32, 1)))


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (2, 8, 8, 2)])
def test_max_pool_gradient_matches_torch_including_ties(shape):
    # Small integers make ties common; torch sends a tied window's gradient to its
    # first maximum (row-major), as max_pool_3x3_s2 does.
    rng = np.random.RandomState(0)
    x = rng.randint(0, 3, shape).astype(np.float32)
    x_t = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    out_t = torch.nn.functional.max_pool2d(x_t, 3, stride=2, padding=1)
    g = rng.randn(*out_t.shape).astype(np.float32)
    out_t.backward(torch.from_numpy(g))
    _, vjp = jax.vjp(resnet_lib.max_pool_3x3_s2, jnp.asarray(x))
    (dx,) = jax.jit(vjp)(jnp.asarray(g.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(dx, x_t.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def _flax_bn_act(x, residual, variables, *, train, relu):
    """Reference: flax.linen.BatchNorm, then ``+ residual`` and ReLU as separate ops."""
    bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    y, updates = bn.apply(variables, x, mutable=["batch_stats"])
    if residual is not None:
        y = y + residual
    return (jax.nn.relu(y) if relu else y), updates


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("with_residual, relu", [(False, False), (False, True), (True, True), (True, False)])
def test_batch_norm_matches_flax_values_stats_and_gradients(train, with_residual, relu):
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(3, 5, 4, 6).astype(np.float32) * 2 + 1)
    residual = jnp.asarray(rng.randn(3, 5, 4, 6).astype(np.float32)) if with_residual else None
    g = jnp.asarray(rng.randn(3, 5, 4, 6).astype(np.float32))
    variables = {
        "params": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, 6), jnp.float32), "bias": jnp.asarray(rng.randn(6))},
        "batch_stats": {"mean": jnp.asarray(rng.randn(6)), "var": jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32)},
    }
    ours_bn = resnet_lib.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    assert jax.tree.map(jnp.shape, ours_bn.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)

    def ours(x, residual, params):
        return ours_bn.apply({**variables, "params": params}, x, residual, relu=relu, mutable=["batch_stats"])

    def ref(x, residual, params):
        return _flax_bn_act(x, residual, {**variables, "params": params}, train=train, relu=relu)

    results = []
    for fn in (ours, ref):
        (y, updates), vjp_fn = jax.vjp(lambda x, r, p, fn=fn: fn(x, r, p), x, residual, variables["params"])
        grads = jax.jit(vjp_fn)((g, jax.tree.map(jnp.zeros_like, updates)))
        results.append((y, updates, grads))
    (y, updates, grads), (y_ref, updates_ref, grads_ref) = results
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves((updates, grads)), jax.tree.leaves((updates_ref, grads_ref))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert (grads[1] is None) == (residual is None)


def test_batch_norm_gradient_through_statistics():
    # The batch mean / variance are differentiable outputs too (a loss on them).
    x = jax.random.normal(jax.random.key(4), (4, 3, 3, 5)) * 3 + 2
    scale, bias = jnp.linspace(0.5, 1.5, 5), jnp.linspace(-1, 1, 5)

    def loss(fn, x):
        y, mean, var = fn(x, scale, bias)
        return jnp.sum(jnp.sin(y)) + jnp.sum(mean**2) + jnp.sum(jnp.sqrt(var))

    def plain(x, scale, bias):
        mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
        return jax.nn.relu((x - mean) / jnp.sqrt(var + 1e-5) * scale + bias), mean, var

    fused = lambda x, s, b: resnet_lib.batch_norm_train(x, s, b, None, 1e-5, True)  # noqa: E731
    np.testing.assert_allclose(
        jax.grad(functools.partial(loss, fused))(x), jax.grad(functools.partial(loss, plain))(x), rtol=1e-4, atol=1e-5
    )


def test_batch_norm_matches_torch_train_mode_gradient():
    rng = np.random.RandomState(5)
    x, r, g = (rng.randn(2, 4, 4, 3).astype(np.float32) for _ in range(3))
    bn_t = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn_t.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        bn_t.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x_t = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    r_t = torch.from_numpy(r.transpose(0, 3, 1, 2)).requires_grad_()
    y_t = torch.relu(bn_t.train()(x_t) + r_t)
    y_t.backward(torch.from_numpy(g.transpose(0, 3, 1, 2)))

    scale, bias = jnp.array([0.5, 1.0, 2.0]), jnp.array([0.1, -0.2, 0.3])
    y, vjp = jax.vjp(lambda x, r, s, b: resnet_lib.batch_norm_train(x, s, b, r, 1e-5, True)[0], x, r, scale, bias)
    dx, dr, ds, db = vjp(jnp.asarray(g))
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)  # noqa: E731
    np.testing.assert_allclose(y, nhwc(y_t), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, nhwc(x_t.grad), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dr, nhwc(r_t.grad), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds, bn_t.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, bn_t.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [10, 14])
def test_fused_norm_equals_flax_batch_norm_network(depth):
    x = jax.random.normal(jax.random.key(6), (2, 32, 32, 3))
    fast = resnet(depth, num_classes=5, width=8, fused_norm=True)
    slow = resnet(depth, num_classes=5, width=8, fused_norm=False)
    variables = torch_resnet.random_variables(fast, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, torch_resnet.random_variables(slow, x))

    @functools.partial(jax.jit, static_argnums=0)
    def run(model, params, x):
        def loss(p):
            out, updates = model.apply(
                {"params": p, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(jnp.sin(out)), (out, updates)

        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return aux, grads, model.apply(variables, x, train=False)

    # Float32 rounding differs (other summation orders) and grows through the
    # layers: the last stage normalizes over only B * 1 * 1 = 2 values (observed
    # relative differences up to 5e-4).
    ours, ref = run(fast, variables["params"], x), run(slow, variables["params"], x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        assert np.linalg.norm(a - b) <= 2e-3 * np.linalg.norm(b) + 1e-6


@pytest.mark.parametrize(
    "shape, kernel_size, stride, padding",
    [
        ((2, 15, 13, 3), (7, 7), 2, 3),  # the stem, odd sizes
        ((3, 8, 8, 5), (3, 3), 1, 1),
        ((2, 9, 10, 4), (3, 3), 2, 1),  # a bottleneck's strided 3x3
        ((2, 9, 9, 4), (1, 1), 2, 0),  # a strided 1x1 shortcut
    ],
)
@pytest.mark.parametrize("grad_pixels", [1, 10_000])  # one example per group / all in one group
def test_conv_kernel_grad_equals_xla(monkeypatch, shape, kernel_size, stride, padding, grad_pixels):
    monkeypatch.setattr(resnet_lib, "_GRAD_PIXELS", grad_pixels)
    kx, kk, kd = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(kx, shape)
    kernel = jax.random.normal(kk, (*kernel_size, shape[-1], 6))
    y, vjp = jax.vjp(lambda k: resnet_lib._conv(x, k, stride, padding), kernel)
    dy = jax.random.normal(kd, y.shape)
    ours = jax.jit(resnet_lib.conv_kernel_grad, static_argnums=(2, 3, 4))(x, dy, kernel_size, stride, padding)
    np.testing.assert_allclose(ours, vjp(dy)[0], rtol=1e-5, atol=1e-4)


def test_conv_layer_equals_flax_conv_values_and_gradients():
    x = jax.random.normal(jax.random.key(8), (3, 11, 11, 4))
    ours = resnet_lib.Conv(6, (3, 3), strides=2, padding=1)
    ref = nn.Conv(6, (3, 3), strides=2, padding=1, use_bias=False)
    params = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x))

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_grads(module, params, x):
        return jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))(params, x)

    (v, (dp, dx)), (v_ref, (dp_ref, dx_ref)) = value_and_grads(ours, params, x), value_and_grads(ref, params, x)
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dp["params"]["kernel"], dp_ref["params"]["kernel"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="symmetric"):
        resnet_lib.Conv(6, (3, 3), padding=((1, 0), (1, 0))).init(jax.random.key(0), x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_kernel_grad_equals_xla_network(dtype):
    x = jax.random.normal(jax.random.key(9), (2, 33, 33, 3))
    fast = resnet(14, num_classes=5, width=8, dtype=dtype, matmul_kernel_grad=True)
    slow = resnet(14, num_classes=5, width=8, dtype=dtype, matmul_kernel_grad=False)
    variables = torch_resnet.random_variables(fast, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, torch_resnet.random_variables(slow, x))

    @functools.partial(jax.jit, static_argnums=0)
    def grads(model, params, x):
        def loss(p):
            out, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=True,
                                 mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out.astype(jnp.float32)))

        return jax.grad(loss)(params)

    ours, ref = grads(fast, variables["params"], x), grads(slow, variables["params"], x)
    tol = 1e-3 if dtype == jnp.float32 else 5e-2  # bfloat16: other summation orders, 8-bit mantissa
    for path, a in jax.tree_util.tree_flatten_with_path(ours)[0]:
        b = functools.reduce(lambda t, k: t[k.key], path, ref)
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b) + 1e-6, jax.tree_util.keystr(path)
