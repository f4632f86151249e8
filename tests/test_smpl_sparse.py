"""Tests for the static structure of dct_jax.smpl's model: a body without pose
correctives (``pose_correctives=None``) and the sparse joint regressor
(``regressor_weights`` over the static ``regressor_vertices``)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smpl_fixtures import SMPL_PARENTS, random_smpl_arrays

from dct_jax import geometry, smpl


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays(seed=0)


def _build(arrays, **changes):
    a = dict(arrays, **changes)
    return smpl.build_model(v_template=a["v_template"], shapedirs=a["shapedirs"], posedirs=a["posedirs"],
                            J_regressor=a["J_regressor"], lbs_weights=a["weights"], faces=a["f"],
                            parents=SMPL_PARENTS)


@pytest.fixture(scope="module")
def model(arrays):
    return _build(arrays)


@pytest.fixture(scope="module")
def bodies(arrays):
    """The same body without pose correctives (all-zero posedirs dropped) and
    with them as a zero array."""
    without = _build(arrays, posedirs=np.zeros_like(arrays["posedirs"]))
    with_zeros = without.replace(posedirs=jnp.zeros((6890, 3, 207), jnp.float32))
    return without, with_zeros


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=(*batch, 72)) * 0.5).astype(np.float32),
            rng.normal(size=(*batch, 10)).astype(np.float32))


def _dense_joints(regressor, model, betas):
    """``J_regressor @ (v_template + shapedirs . betas)``, the plain dense einsum."""
    v_shaped = model.v_template + jnp.einsum("nb,vkb->nvk", betas, model.shapedirs)
    return jnp.einsum("jv,nvk->njk", regressor, v_shaped)


# --- Pose correctives ----------------------------------------------------------


def test_zero_posedirs_are_dropped_statically(arrays, bodies):
    without, with_zeros = bodies
    assert without.pose_correctives is None
    assert with_zeros.pose_correctives is not None
    assert _build(arrays).pose_correctives is not None
    assert _build(arrays, posedirs=None).pose_correctives is None
    # Read as smplx's buffer: zeros of the usual shape.
    np.testing.assert_array_equal(without.posedirs, np.zeros((6890, 3, 207), np.float32))
    # Not a leaf: nothing a tree map, jit or grad could change behind the structure.
    assert len(jax.tree_util.tree_leaves(without)) == len(jax.tree_util.tree_leaves(with_zeros)) - 1
    doubled = jax.tree.map(lambda x: x * 2, without)
    assert doubled.pose_correctives is None


# 1: whole blend; 3: one chunk; 80: per-chunk blend and skinning; (2, 3): batch dims.
@pytest.mark.parametrize("batch", [(1,), (3,), (80,), (2, 3)])
def test_without_pose_correctives_equals_zero_posedirs(bodies, batch):
    """Bit for bit (compared with ==): the skipped product is exactly zero."""
    without, with_zeros = bodies
    pose, betas = _inputs(batch, seed=len(batch) + batch[0])
    transl = np.full((*batch, 3), 0.25, np.float32)
    for fn in (smpl.forward, jax.jit(smpl.forward)):
        a, b = fn(without, pose, betas, transl=transl), fn(with_zeros, pose, betas, transl=transl)
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.joints, b.joints)

    weights = np.random.default_rng(1).normal(size=(*batch, 6890, 3)).astype(np.float32)

    def objective(m, pose, betas):
        out = smpl.forward(m, pose, betas)
        return jnp.sum(out.vertices * weights) + jnp.sum(out.joints)

    grad = jax.jit(jax.grad(objective, argnums=(0, 1, 2), allow_int=True))
    (grad_model_a, *grads_a), (grad_model_b, *grads_b) = grad(without, pose, betas), grad(with_zeros, pose, betas)
    for a, b in zip(grads_a, grads_b):  # pose, betas
        np.testing.assert_array_equal(a, b)
    for field in ("v_template", "shapedirs", "regressor_weights", "lbs_weights"):
        np.testing.assert_array_equal(getattr(grad_model_a, field), getattr(grad_model_b, field), err_msg=field)
    assert grad_model_a.pose_correctives is None and grad_model_b.pose_correctives is not None


def test_without_pose_correctives_vmap_and_jit_argument(bodies):
    without, with_zeros = bodies
    pose, betas = _inputs((4,), seed=3)
    forward = jax.jit(lambda m, p, b: smpl.forward(m, p, b).vertices)
    mapped = jax.vmap(lambda p, b: smpl.forward(without, p, b).vertices)(pose, betas)
    np.testing.assert_array_equal(forward(without, pose, betas), forward(with_zeros, pose, betas))
    np.testing.assert_array_equal(mapped, jax.vmap(lambda p, b: smpl.forward(with_zeros, p, b).vertices)(pose, betas))
    np.testing.assert_allclose(mapped, forward(without, pose, betas), atol=1e-6)


def test_replacing_posedirs_is_never_stale(arrays, model, bodies):
    without, _ = bodies
    pose, betas = _inputs((2,), seed=4)
    forward = jax.jit(lambda m, p, b: smpl.forward(m, p, b).vertices)
    restored = without.replace(posedirs=model.posedirs)
    np.testing.assert_array_equal(forward(restored, pose, betas), forward(model, pose, betas))
    dropped = model.replace(posedirs=None)
    np.testing.assert_array_equal(forward(dropped, pose, betas), forward(without, pose, betas))
    # Pose correctives as a jit argument of their own, replaced inside the jitted function.
    inside = jax.jit(lambda m, posedirs, p, b: smpl.forward(m.replace(posedirs=posedirs), p, b).vertices)
    np.testing.assert_array_equal(inside(without, model.posedirs, pose, betas), forward(model, pose, betas))
    with pytest.raises(TypeError):  # the stored fields only: loud, never stale
        dataclasses.replace(model, posedirs=None)


# --- Sparse joint regressor ---------------------------------------------------


def test_regressor_is_kept_over_its_support(arrays, model):
    support = np.flatnonzero(np.any(arrays["J_regressor"] != 0, axis=0))
    assert 0 < len(support) < 6890 // 2
    assert model.regressor_vertices == tuple(support.tolist())
    assert model.regressor_weights.shape == (24, len(support))
    np.testing.assert_array_equal(model.J_regressor, arrays["J_regressor"].astype(np.float32))
    # A static, hashable part of the structure: the model stays a jit argument.
    assert hash(jax.tree_util.tree_structure(model)) is not None


def _regressors(arrays):
    rng = np.random.default_rng(5)
    dense = rng.uniform(0.0, 1.0, size=(24, 6890)) / 6890  # every column
    other = np.zeros((24, 6890))  # another support: 5 vertices per joint, mostly new ones
    for joint in range(24):
        other[joint, rng.choice(6890, size=5, replace=False)] = rng.uniform(0.1, 1.0, size=5)
    other /= other.sum(axis=1, keepdims=True)
    return {"dense": dense, "other": other, "same support": arrays["J_regressor"] * 1.5}


@pytest.mark.parametrize("name", ["dense", "other", "same support"])
@pytest.mark.parametrize("batch", [1, 16])  # the per-body and the per-model regression
def test_replaced_regressor_gives_exact_joints(arrays, model, name, batch):
    regressor = _regressors(arrays)[name].astype(np.float32)
    replaced = model.replace(J_regressor=regressor)
    if name == "dense":
        assert replaced.regressor_vertices is None
    else:
        assert replaced.regressor_vertices == tuple(np.flatnonzero(regressor.any(axis=0)).tolist())
    np.testing.assert_array_equal(replaced.J_regressor, regressor)

    pose, betas = _inputs((batch,), seed=6)
    expected = _dense_joints(regressor, model, betas)
    # Float rounding only: the sum over the support is the dense sum without its zero terms.
    np.testing.assert_allclose(smpl._regress_joints(replaced, betas), expected, rtol=0, atol=1e-6)
    jitted = jax.jit(smpl._regress_joints)(replaced, betas)
    np.testing.assert_allclose(jitted, expected, rtol=0, atol=1e-6)
    # The posed joints follow: the chain from the replaced rest joints.
    rot = geometry.rodrigues(pose.reshape(batch, 24, 3))
    posed, _ = geometry.rigid_transform_chain(rot, expected, SMPL_PARENTS)
    np.testing.assert_allclose(jax.jit(smpl.forward)(replaced, pose, betas).joints, posed, rtol=0, atol=2e-6)


def test_traced_regressor_is_dense_and_differentiable(arrays, model):
    regressor = jnp.asarray(_regressors(arrays)["other"], jnp.float32)
    pose, betas = _inputs((3,), seed=7)

    def joints(regressor):
        replaced = model.replace(J_regressor=regressor)
        assert replaced.regressor_vertices is None  # traced: its zeros are unknown
        return smpl.forward(replaced, pose, betas).joints

    np.testing.assert_allclose(jax.jit(joints)(regressor), smpl.forward(model.replace(J_regressor=regressor),
                                                                        pose, betas).joints, atol=1e-6)
    weights = np.random.default_rng(8).normal(size=(3, 24, 3)).astype(np.float32)
    grad = jax.grad(lambda r: jnp.sum(joints(r) * weights))(regressor)

    def naive(regressor):
        rot = geometry.rodrigues(pose.reshape(3, 24, 3))
        posed, _ = geometry.rigid_transform_chain(rot, _dense_joints(regressor, model, betas), SMPL_PARENTS)
        return jnp.sum(posed * weights)

    expected = jax.grad(naive)(regressor)
    assert np.count_nonzero(expected) > 0.9 * expected.size  # every column, not just the support
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_sparse_regressor_gradients_and_tree_maps(arrays, model):
    pose, betas = _inputs((2,), seed=9)
    # Gradients of the stored weights are those of the dense regressor on its support.
    grad = jax.grad(lambda m: jnp.sum(smpl.forward(m, pose, betas).joints), allow_int=True)(model)
    rot = geometry.rodrigues(pose.reshape(2, 24, 3))

    def naive(regressor):
        return jnp.sum(geometry.rigid_transform_chain(rot, _dense_joints(regressor, model, betas), SMPL_PARENTS)[0])

    dense_grad = jax.grad(naive)(jnp.asarray(arrays["J_regressor"], jnp.float32))
    np.testing.assert_allclose(grad.regressor_weights, dense_grad[:, np.asarray(model.regressor_vertices)],
                               rtol=0, atol=1e-5 * np.abs(dense_grad).max())
    # Maps over the leaves keep weights and their vertices together.
    halved = jax.tree.map(lambda x: x / 2 if x.dtype == jnp.float32 else x, model)
    assert halved.regressor_vertices == model.regressor_vertices
    np.testing.assert_array_equal(halved.J_regressor, model.J_regressor / 2)
    with pytest.raises(TypeError):  # the stored fields only: loud, never stale
        dataclasses.replace(model, J_regressor=arrays["J_regressor"])


def test_all_zero_regressor(arrays, model):
    replaced = model.replace(J_regressor=np.zeros((24, 6890), np.float32))
    assert replaced.regressor_vertices == ()
    _, betas = _inputs((2,), seed=10)
    np.testing.assert_array_equal(smpl._regress_joints(replaced, betas), np.zeros((2, 24, 3)))


def test_default_body_has_no_pose_correctives():
    try:
        body = smpl.load()
    except FileNotFoundError:
        pytest.skip("no embedded default body")
    assert body.pose_correctives is None
    assert body.regressor_vertices is not None and len(body.regressor_vertices) < body.num_vertices // 2
    pose, betas = _inputs((2,), seed=11)
    with_zeros = body.replace(posedirs=jnp.zeros_like(body.posedirs))
    np.testing.assert_array_equal(jax.jit(smpl.forward)(body, pose, betas).vertices,
                                  jax.jit(smpl.forward)(with_zeros, pose, betas).vertices)
