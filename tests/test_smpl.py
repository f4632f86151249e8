"""Tests for dct_jax.smpl: parity with smplx (the PyTorch reference), loading
SMPL's chumpy pickles without chumpy, malformed and malicious files, batching
and transformations."""

from __future__ import annotations

import os
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dct_jax import smpl
from dct_jax.smpl_io import ModelFileError
from smpl_fixtures import SMPL_PARENTS, random_smpl_arrays

torch = pytest.importorskip("torch")
smplx = pytest.importorskip("smplx")


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays(seed=0)


@pytest.fixture(scope="module")
def plain_pkl(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "SMPL_NEUTRAL.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    return path


@pytest.fixture(scope="module")
def model(plain_pkl):
    return smpl.load(plain_pkl)


@pytest.fixture(scope="module")
def reference(plain_pkl):
    return smplx.SMPL(model_path=str(plain_pkl), num_betas=10)


def _random_inputs(batch, seed=1):
    rng = np.random.default_rng(seed)
    pose = (rng.normal(size=(batch, 72)) * 0.5).astype(np.float32)
    betas = rng.normal(size=(batch, 10)).astype(np.float32)
    return pose, betas


def _smplx_forward(reference, pose, betas):
    return reference(
        betas=torch.as_tensor(betas), body_pose=torch.as_tensor(pose[:, 3:]),
        global_orient=torch.as_tensor(pose[:, :3]),
    )


def test_matches_smplx_float32(model, reference):
    pose, betas = _random_inputs(32)
    ours = jax.jit(smpl.forward)(model, pose, betas)
    theirs = _smplx_forward(reference, pose, betas)
    assert ours.vertices.dtype == jnp.float32
    np.testing.assert_allclose(ours.vertices, theirs.vertices.detach().numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(ours.joints, theirs.joints[:, :24].detach().numpy(), rtol=0, atol=2e-5)


def test_gradients_match_torch_autograd(model, reference):
    pose, betas = _random_inputs(32, seed=2)
    weights = np.random.default_rng(3).normal(size=(32, 6890, 3)).astype(np.float32)
    joint_weights = np.random.default_rng(4).normal(size=(32, 24, 3)).astype(np.float32)

    def objective(pose, betas):
        out = smpl.forward(model, pose, betas)
        return jnp.sum(out.vertices * weights) + jnp.sum(out.joints * joint_weights)

    grad_pose, grad_betas = jax.jit(jax.grad(objective, argnums=(0, 1)))(pose, betas)

    pose_t = torch.tensor(pose, requires_grad=True)
    betas_t = torch.tensor(betas, requires_grad=True)
    out = reference(betas=betas_t, body_pose=pose_t[:, 3:], global_orient=pose_t[:, :3])
    loss = (out.vertices * torch.as_tensor(weights)).sum() + (
        out.joints[:, :24] * torch.as_tensor(joint_weights)).sum()
    loss.backward()
    for ours, theirs in ((grad_pose, pose_t.grad.numpy()), (grad_betas, betas_t.grad.numpy())):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(np.asarray(ours) / scale, theirs / scale, rtol=0, atol=1e-3)


def test_large_batch_is_chunked_consistently(model):
    pose, betas = _random_inputs(150, seed=5)  # > the chunk size, not a multiple of it
    big = jax.jit(smpl.forward)(model, pose, betas)
    small = jax.jit(smpl.forward)(model, pose[140:], betas[140:])
    np.testing.assert_allclose(big.vertices[140:], small.vertices, atol=1e-6)
    np.testing.assert_allclose(big.joints[140:], small.joints, atol=1e-6)


def _naive_lbs(model, pose, betas):
    """smplx's lbs written plainly in jnp (independent of dct_jax's chunked,
    custom-VJP implementation), for gradients with respect to model arrays."""
    from dct_jax import geometry

    n = pose.shape[0]
    rot = geometry.rodrigues(pose.reshape(n, 24, 3))
    v_shaped = model.v_template + jnp.einsum("nb,vkb->nvk", betas, model.shapedirs)
    joints = jnp.einsum("jv,nvk->njk", model.J_regressor, v_shaped)
    feature = (rot[:, 1:] - jnp.eye(3)).reshape(n, -1)
    v_posed = v_shaped + jnp.einsum("np,vkp->nvk", feature, model.posedirs)
    _, rel = geometry.rigid_transform_chain(rot, joints, model.parents)
    t = jnp.einsum("vj,njrc->nvrc", model.lbs_weights, rel)
    return jnp.einsum("nvrc,nvc->nvr", t[..., :3], v_posed) + t[..., 3]


def test_gradients_wrt_model_arrays_match_plain_autodiff(model):
    pose, betas = _random_inputs(3, seed=12)
    weights = np.random.default_rng(13).normal(size=(3, 6890, 3)).astype(np.float32)

    def ours(m):
        return jnp.sum(smpl.forward(m, pose, betas).vertices * weights)

    def naive(m):
        return jnp.sum(_naive_lbs(m, pose, betas) * weights)

    np.testing.assert_allclose(ours(model), naive(model), rtol=1e-5)
    # allow_int: the model's integer `faces` leaf gets a float0 "gradient".
    grads = jax.jit(jax.grad(ours, allow_int=True))(model)
    expected = jax.jit(jax.grad(naive, allow_int=True))(model)
    for field in ("v_template", "shapedirs", "posedirs", "lbs_weights"):
        got, want = np.asarray(getattr(grads, field)), np.asarray(getattr(expected, field))
        scale = np.abs(want).max()
        assert scale > 0, field
        np.testing.assert_allclose(got / scale, want / scale, atol=1e-5, err_msg=field)


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_batch_shapes(model, batch_shape):
    rng = np.random.default_rng(6)
    pose = rng.normal(scale=0.4, size=(*batch_shape, 72)).astype(np.float32)
    betas = rng.normal(size=(*batch_shape, 10)).astype(np.float32)
    out = smpl.forward(model, pose, betas)
    assert out.vertices.shape == (*batch_shape, 6890, 3)
    assert out.joints.shape == (*batch_shape, 24, 3)
    assert out.rotmats.shape == (*batch_shape, 24, 3, 3)
    flat = smpl.forward(model, pose.reshape(-1, 72), betas.reshape(-1, 10))
    np.testing.assert_allclose(out.vertices.reshape(-1, 6890, 3), flat.vertices, atol=1e-6)


def test_pose_formats_and_padding_agree(model):
    rng = np.random.default_rng(7)
    pose = rng.normal(scale=0.5, size=(4, 24, 3)).astype(np.float32)
    betas = rng.normal(size=(4, 4)).astype(np.float32)
    padded = np.concatenate([betas, np.zeros((4, 6), np.float32)], axis=1)
    from_vectors = smpl.forward(model, pose, betas)
    from_flat = smpl.forward(model, pose.reshape(4, 72), padded)
    from_matrices = smpl.forward(model, from_vectors.rotmats, padded)
    np.testing.assert_allclose(from_vectors.vertices, from_flat.vertices, atol=1e-6)
    np.testing.assert_allclose(from_vectors.vertices, from_matrices.vertices, atol=1e-6)


def test_translation_and_broadcast_betas(model):
    pose, _ = _random_inputs(3, seed=8)
    betas = np.random.default_rng(9).normal(size=(10,)).astype(np.float32)
    transl = np.array([[0.1, -0.2, 3.0]] * 3, np.float32)
    base = smpl.forward(model, pose, np.broadcast_to(betas, (3, 10)))
    moved = smpl.forward(model, pose, betas, transl=transl)
    np.testing.assert_allclose(moved.vertices, base.vertices + transl[:, None], atol=1e-6)
    np.testing.assert_allclose(moved.joints, base.joints + transl[:, None], atol=1e-6)


def test_vmap_matches_batch(model):
    pose, betas = _random_inputs(5, seed=10)
    batched = smpl.forward(model, pose, betas)
    mapped = jax.vmap(lambda p, b: smpl.forward(model, p, b).vertices)(pose, betas)
    np.testing.assert_allclose(mapped, batched.vertices, atol=1e-6)


def test_gradient_finite_at_zero_pose(model):
    def height(pose):
        return smpl.forward(model, pose, jnp.zeros(10)).vertices[:, 1].sum()

    grad = jax.grad(height)(jnp.zeros(72))
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0  # the pose does move the vertices


def test_model_is_a_jit_argument(model):
    f = jax.jit(lambda m, p, b: smpl.forward(m, p, b).joints)
    pose, betas = _random_inputs(2)
    np.testing.assert_allclose(f(model, pose, betas), smpl.forward(model, pose, betas).joints, atol=1e-6)
    leaves = jax.tree_util.tree_leaves(model)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_float64_under_x64(plain_pkl, reference):
    pose, betas = _random_inputs(4, seed=11)
    with jax.enable_x64(True):
        model64 = smpl.load(plain_pkl, dtype=jnp.float64)
        out = smpl.forward(model64, pose.astype(np.float64), betas.astype(np.float64))
        assert out.vertices.dtype == jnp.float64
        vertices = np.asarray(out.vertices)
    ref64 = smplx.SMPL(model_path=str(plain_pkl), num_betas=10, dtype=torch.float64)
    theirs = ref64(betas=torch.as_tensor(betas, dtype=torch.float64),
                   body_pose=torch.as_tensor(pose[:, 3:], dtype=torch.float64),
                   global_orient=torch.as_tensor(pose[:, :3], dtype=torch.float64))
    # smplx adds 1e-8 to every rotation vector before normalizing; that is the difference.
    np.testing.assert_allclose(vertices, theirs.vertices.detach().numpy(), atol=1e-7)


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="pose has shape"):
        smpl.forward(model, jnp.zeros((2, 71)), jnp.zeros((2, 10)))
    with pytest.raises(ValueError, match="betas has shape"):
        smpl.forward(model, jnp.zeros((2, 72)), jnp.zeros((2, 11)))


# --- Loading -----------------------------------------------------------------


class _FakeModule(types.ModuleType):
    pass


@pytest.fixture
def chumpy_classes(monkeypatch):
    """Classes named like chumpy's and old scipy.sparse's, so pickles written
    here reference them exactly as SMPL's Python 2 files do."""
    ch_module = _FakeModule("chumpy.ch")
    reordering = _FakeModule("chumpy.reordering")
    csc_module = _FakeModule("scipy.sparse.csc")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

    class csc_matrix:  # noqa: N801 - scipy's name
        def __init__(self, dense):
            dense = np.asarray(dense)
            rows, cols = np.nonzero(dense.T)  # column-major order
            self.data = dense.T[rows, cols]
            self.indices = cols.astype(np.int32)
            self.indptr = np.searchsorted(rows, np.arange(dense.shape[1] + 1)).astype(np.int32)
            self._shape = dense.shape
            self.maxprint = 50

    for cls, module in ((Ch, ch_module), (Select, reordering), (csc_matrix, csc_module)):
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "chumpy", _FakeModule("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_module)
    monkeypatch.setitem(sys.modules, "chumpy.reordering", reordering)
    monkeypatch.setitem(sys.modules, "scipy.sparse.csc", csc_module)
    return Ch, Select, csc_matrix


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_loads_chumpy_pickle_without_chumpy(arrays, model, chumpy_classes, tmp_path, protocol):
    Ch, Select, csc_matrix = chumpy_classes
    shapedirs = arrays["shapedirs"]
    data = dict(arrays)
    data["v_template"] = Ch(arrays["v_template"])
    # SMPL stores shapedirs as a chumpy expression over a larger array.
    data["shapedirs"] = Select(Ch(shapedirs.ravel()), np.arange(shapedirs.size), shapedirs.shape)
    data["posedirs"] = Ch(arrays["posedirs"])
    data["J_regressor"] = csc_matrix(arrays["J_regressor"])
    data["bs_style"] = "lbs"
    path = tmp_path / f"basicModel_p{protocol}.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering", "scipy.sparse.csc"):
        sys.modules.pop(name)  # the loader must not need them
    loaded = smpl.load(path)
    for field in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(model, field), err_msg=field)
    assert loaded.parents == SMPL_PARENTS


def test_loads_npz(arrays, model, tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **arrays)
    loaded = smpl.load(path, num_betas=4)
    assert loaded.num_betas == 4
    np.testing.assert_array_equal(loaded.shapedirs, model.shapedirs[..., :4])
    np.testing.assert_array_equal(loaded.posedirs, model.posedirs)


def test_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": Exploit()}, f, protocol=2)
    with pytest.raises(ModelFileError, match=r"evil\.pkl.*system.*refusing"):
        smpl.load(path)
    assert not marker.exists()


def test_missing_field_names_file_and_field(arrays, tmp_path):
    data = dict(arrays)
    del data["weights"]
    path = tmp_path / "incomplete.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(ModelFileError, match=r"incomplete\.pkl.*'weights'"):
        smpl.load(path)


@pytest.mark.parametrize("field,bad", [
    ("J_regressor", np.zeros((24, 100))),
    ("posedirs", np.zeros((6890, 3, 10))),
    ("shapedirs", np.zeros((6890, 10))),
    ("f", np.full((4, 3), 10**6)),
])
def test_ill_shaped_field_names_file_and_field(arrays, tmp_path, field, bad):
    data = dict(arrays, **{field: bad})
    path = tmp_path / "broken.npz"
    np.savez(path, **data)
    with pytest.raises(ModelFileError, match=rf"broken\.npz.*'{field}'"):
        smpl.load(path)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(ModelFileError, match="garbage.pkl"):
        smpl.load(garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        smpl.load(tmp_path / "nowhere.pkl")
    truncated = tmp_path / "truncated.npz"
    with zipfile.ZipFile(truncated, "w") as archive:
        archive.writestr("v_template.npy", b"\x93NUMPY broken")
    with pytest.raises(ModelFileError, match="truncated.npz"):
        smpl.load(truncated)
