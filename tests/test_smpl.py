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
from smpl_fixtures import SMPL_PARENTS, random_smpl_arrays

from dct_jax import smpl
from dct_jax.smpl_io import ModelFileError

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


# 32: the blend shapes and the forward skinning over all vertices, the backward
# skinning in 4 chunks (the last one overlapping); 80: blend shapes and
# skinning per chunk (smpl.lbs).
@pytest.mark.parametrize("batch", [32, 80])
def test_gradients_match_torch_autograd(model, reference, batch):
    pose, betas = _random_inputs(batch, seed=2)
    weights = np.random.default_rng(3).normal(size=(batch, 6890, 3)).astype(np.float32)
    joint_weights = np.random.default_rng(4).normal(size=(batch, 24, 3)).astype(np.float32)

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


# One chunk of vertices; whole blend and forward skinning + chunked backward
# skinning; per-chunk blend and skinning.
@pytest.mark.parametrize("batch", [3, 20, 80])
def test_gradients_wrt_model_arrays_match_plain_autodiff(model, batch):
    pose, betas = _random_inputs(batch, seed=12)
    weights = np.random.default_rng(13).normal(size=(batch, 6890, 3)).astype(np.float32)

    def ours(m):
        return jnp.sum(smpl.forward(m, pose, betas).vertices * weights)

    def naive(m):
        return jnp.sum(_naive_lbs(m, pose, betas) * weights)

    # The vertices, not the objective: float32 rounding of its sum of 60k-830k
    # terms of both signs (up to 5e-5 here, the reference's included) is more
    # than rtol=1e-5 of a sum that nearly cancels (-1.67 at batch 40, once measured).
    np.testing.assert_allclose(smpl.forward(model, pose, betas).vertices, _naive_lbs(model, pose, betas),
                               rtol=0, atol=2e-5)
    # allow_int: the model's integer `faces` leaf gets a float0 "gradient".
    grads = jax.jit(jax.grad(ours, allow_int=True))(model)
    expected = jax.jit(jax.grad(naive, allow_int=True))(model)
    for field in ("v_template", "shapedirs", "posedirs", "regressor_weights", "lbs_weights"):
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


# --- Bad inputs: every one a clear error at the API boundary -------------------
# (Small 50-vertex models: these tests are about errors, not about the body.)


def _dump(path, data, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def small_arrays():
    return random_smpl_arrays(seed=3, num_vertices=50)


@pytest.fixture(scope="module")
def small_pkl(small_arrays, tmp_path_factory):
    return _dump(tmp_path_factory.mktemp("small") / "small.pkl", small_arrays)


@pytest.fixture(scope="module")
def small_model(small_pkl):
    return smpl.load(small_pkl)


def test_load_refuses_non_float_dtypes(small_pkl):  # issue case 3
    for dtype in (jnp.int32, np.uint8, bool, jnp.complex64):
        with pytest.raises(TypeError, match="dtype must be a floating dtype"):
            smpl.load(small_pkl, dtype=dtype)
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*'floaty'"):
        smpl.load(small_pkl, dtype="floaty")
    with pytest.raises(ValueError, match="float64 needs jax_enable_x64"):  # JAX would make float32
        smpl.load(small_pkl, dtype=jnp.float64)
    assert smpl.load(small_pkl, dtype=jnp.bfloat16).v_template.dtype == jnp.bfloat16


def test_load_num_betas_must_be_a_positive_int(small_pkl):  # issue case 4
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=f"num_betas must be >= 1.*got {bad}"):
            smpl.load(small_pkl, num_betas=bad)
    for bad in (1.5, "3", True):
        with pytest.raises(TypeError, match="num_betas must be an int"):
            smpl.load(small_pkl, num_betas=bad)
    assert smpl.load(small_pkl, num_betas=np.int64(3)).num_betas == 3
    assert smpl.load(small_pkl, num_betas=None).num_betas == 10
    assert smpl.load(small_pkl, num_betas=16).num_betas == 10  # what the file has (logged)


def _csc_field(csc_matrix, dense, **changes):
    matrix = csc_matrix(dense)
    for name, value in changes.items():
        setattr(matrix, name, value(getattr(matrix, name)))
    return matrix


@pytest.mark.parametrize("field,changes,message", [
    ("J_regressor", {"indptr": lambda p: p[:-5]}, r"'indptr' has 46 entries, expected 51 \(its 50 columns \+ 1\)"),
    ("J_regressor", {"_shape": lambda s: (10**6, 10**6)},
     r"its shape is \(1000000, 1000000\), expected \(24, 50\) \(kintree_table's joints, v_template's vertices\)"),
    ("J_regressor", {"_shape": lambda s: (24, 60), "indptr": lambda p: np.r_[p, [p[-1]] * 10]},
     r"its shape is \(24, 60\), expected \(24, 50\)"),
    ("J_regressor", {"indices": lambda i: i + 20}, r"row indices outside \[0, 24\)"),
    ("J_regressor", {"data": lambda d: d[:-1]}, r"'indices' and 'data' have \d+ and \d+ entries"),
    ("J_regressor", {"indptr": lambda p: p[::-1].copy()}, r"'indptr' must start at 0 and never decrease"),
    ("J_regressor", {"indices": lambda i: i.astype(np.float64)}, r"'indices' must be a 1-D integer array"),
    ("J_regressor_prior", {"_shape": lambda s: (10**6, 10**6)}, r"its shape \(1000000, 1000000\) is too large for a body-model matrix"),
], ids=["short_indptr", "huge_shape", "other_shape", "index_range", "short_data", "decreasing_indptr",
        "float_indices", "huge_other_field"])
def test_malformed_sparse_matrix_is_refused_before_densifying(small_arrays, chumpy_classes, tmp_path, field,
                                                              changes, message):  # issue case 5
    _, _, csc_matrix = chumpy_classes
    data = dict(small_arrays, **{field: _csc_field(csc_matrix, small_arrays["J_regressor"], **changes)})
    path = _dump(tmp_path / "sparse.pkl", data)
    with pytest.raises(ModelFileError, match=rf"sparse\.pkl: field '{field}': malformed scipy\.sparse\.csc\.csc_matrix: "
                                             + message):
        smpl.load(path)


def test_empty_batch_gives_empty_outputs(small_model):  # issue case 9
    for fn in (smpl.forward, jax.jit(smpl.forward)):
        out = fn(small_model, jnp.zeros((0, 72)), jnp.zeros((0, 10)))
        assert out.vertices.shape == (0, 50, 3) and out.joints.shape == (0, 24, 3)
        assert out.rotmats.shape == (0, 24, 3, 3)
    out = smpl.forward(small_model, np.zeros((2, 0, 24, 3)), np.zeros(4), transl=np.zeros(3))
    assert out.vertices.shape == (2, 0, 50, 3) and out.vertices.dtype == jnp.float32


def test_malformed_chumpy_payloads_name_file_and_field(small_arrays, chumpy_classes, tmp_path):  # issue case 10
    Ch, Select, csc_matrix = chumpy_classes
    shapedirs = small_arrays["shapedirs"]
    empty_ch = Ch(0.0)
    del empty_ch.x
    no_indptr = csc_matrix(small_arrays["J_regressor"])
    del no_indptr.indptr
    cases = [
        ("shapedirs", Select(Ch(shapedirs.ravel()), np.arange(shapedirs.size) + 7, shapedirs.shape),
         r"Select: 'idxs' outside the 1500 elements of 'a'"),
        ("shapedirs", Select(Ch(shapedirs.ravel()), np.arange(shapedirs.size), (50, 3, 11)),
         r"Select: its 1500 elements do not fit 'preferred_shape' \(50, 3, 11\)"),
        ("shapedirs", Select(Ch(shapedirs.ravel()), np.linspace(0, 1, 4), None), r"'idxs' must be integers"),
        ("v_template", empty_ch, r"a pickled chumpy\.ch\.Ch object holds no array"),
        ("J_regressor", no_indptr, r"malformed scipy\.sparse\.csc\.csc_matrix: it has no 'indptr'"),
    ]
    for field, value, message in cases:
        path = _dump(tmp_path / "bad.pkl", dict(small_arrays, **{field: value}))
        with pytest.raises(ModelFileError, match=rf"bad\.pkl: field '{field}': .*{message}"):
            smpl.load(path)


def test_files_that_are_not_models_say_so(small_arrays, tmp_path):  # issue case 10
    npz = tmp_path / "model.npz"
    np.savez(npz, **small_arrays)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    text = tmp_path / "notes.pkl"
    text.write_text("g101\nthis is a text file, not a model\n")
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    cut_pickle = tmp_path / "cut.pkl"
    cut_pickle.write_bytes(pickle.dumps(small_arrays, protocol=2)[:5000])
    for path in (truncated, text, png, cut_pickle):
        with pytest.raises(ModelFileError, match=rf"{path.name}: not an SMPL model file \(expected \.pkl or \.npz\)"):
            smpl.load(path)
    with pytest.raises(IsADirectoryError, match="is a directory; pass the body model file itself"):
        smpl.load(tmp_path)


def test_transl_rotations_and_faces(small_arrays, small_model, tmp_path):  # issue case 15
    pose, betas = np.zeros((2, 72), np.float32), np.zeros((2, 10), np.float32)
    with pytest.raises(ValueError, match=r"transl has shape \(2, 4\); expected \(\.\.\., 3\)"):
        smpl.forward(small_model, pose, betas, transl=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"pose \(2,\), betas \(2,\), transl \(5,\) do not broadcast"):
        smpl.forward(small_model, pose, betas, transl=np.zeros((5, 3)))
    # transl's leading dims broadcast like betas': one pose, two placements.
    out = smpl.forward(small_model, pose[0], betas[0], transl=np.eye(2, 3))
    assert out.vertices.shape == (2, 50, 3) and out.rotmats.shape == (2, 24, 3, 3)

    rotmats = np.tile(np.eye(3, dtype=np.float32), (2, 24, 1, 1))
    smpl.forward(small_model, rotmats, betas)
    for bad in (rotmats * 1.1, rotmats * np.array([1, 1, -1], np.float32)):  # a scale; a reflection
        bad[1, 5] = rotmats[1, 5]
        with pytest.raises(ValueError, match=r"pose\[0, 0\] is not a rotation"):
            smpl.forward(small_model, bad, betas)
    # Traced (under jit, grad, vmap) the values are unknown: not checked, as documented.
    jax.eval_shape(smpl.forward, small_model, rotmats * 1.1, betas)

    for faces in (small_arrays["f"] + 0.5, small_arrays["f"].astype(np.float64) + 1e-3):
        path = tmp_path / "faces.npz"
        np.savez(path, **dict(small_arrays, f=faces))
        with pytest.raises(ModelFileError, match=r"faces\.npz: field 'f' must hold integers"):
            smpl.load(path)
    np.savez(tmp_path / "float_faces.npz", **dict(small_arrays, f=small_arrays["f"].astype(np.float32)))
    np.testing.assert_array_equal(smpl.load(tmp_path / "float_faces.npz").faces, small_model.faces)


def test_forward_argument_types_and_batch_dims(small_model):  # siblings of cases 9 and 15
    pose, betas = np.zeros((2, 72), np.float32), np.zeros((2, 10), np.float32)
    with pytest.raises(TypeError, match="model must be an SMPLModel"):
        smpl.forward("SMPL_NEUTRAL.pkl", pose, betas)
    with pytest.raises(TypeError, match="pose must hold real numbers.*complex"):
        smpl.forward(small_model, pose.astype(np.complex64), betas)
    with pytest.raises(TypeError, match="betas must hold real numbers.*<U"):
        smpl.forward(small_model, pose, np.array(["tall"] * 10))
    with pytest.raises(TypeError, match="pose must hold real numbers.*bool"):
        smpl.forward(small_model, pose > 0, betas)
    with pytest.raises(ValueError, match=r"pose \(2,\), betas \(3,\) do not broadcast"):
        smpl.forward(small_model, pose, np.zeros((3, 10)))
    ints = smpl.forward(small_model, pose.astype(np.int32), [0] * 10)
    np.testing.assert_array_equal(ints.vertices, smpl.forward(small_model, pose, betas).vertices)


def test_model_file_siblings(small_arrays, tmp_path):
    def load_with(**changes):
        path = tmp_path / "model.npz"
        np.savez(path, **dict(small_arrays, **changes))
        return smpl.load(path)

    kintree = small_arrays["kintree_table"]
    not_a_tree = kintree.copy()
    not_a_tree[0, 5] = 7  # joint 5's parent after it
    with pytest.raises(ModelFileError, match=r"'kintree_table' \(parents\) is not a kinematic tree.*parents\[5\] = 7"):
        load_with(kintree_table=not_a_tree)
    with pytest.raises(ModelFileError, match="'kintree_table' row 1 must be the joint ids 0..23"):
        load_with(kintree_table=kintree[:, ::-1])
    weights = small_arrays["weights"].copy()
    weights[3, 4] = np.nan
    with pytest.raises(ModelFileError, match="field 'weights' contains NaN or inf"):
        load_with(weights=weights)
    with pytest.raises(ModelFileError, match="field 'shapedirs' has no shape components"):
        load_with(shapedirs=np.zeros((50, 3, 0)))
    with pytest.raises(ModelFileError, match="field 'v_template' is not a real numeric array"):
        load_with(v_template=small_arrays["v_template"].astype(np.complex128))
    with pytest.raises(ModelFileError, match="field 'extra' is an object array"):
        load_with(extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="field 'v_template' has no vertices"):
        smpl.build_model(v_template=np.zeros((0, 3)), shapedirs=np.zeros((0, 3, 10)),
                         posedirs=np.zeros((0, 3, 207)), J_regressor=np.zeros((24, 0)),
                         lbs_weights=np.zeros((0, 24)), faces=np.zeros((0, 3), int), parents=SMPL_PARENTS)


def test_refuses_allocation_bombs_in_pickles(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (bytearray, (10**13,))

    path = _dump(tmp_path / "bomb.pkl", {"v_template": Bomb()})
    with pytest.raises(ModelFileError, match=r"bomb\.pkl: refusing bytearray\(10000000000000\)"):
        smpl.load(path)
