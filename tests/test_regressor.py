"""Tests of dct_jax.models.regressor."""

import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_resnet
import torch_train_step

from dct_jax.models import regressor as reg
from dct_jax.models.regressor import Regressor

# A tiny two-branch model shared by the tests (compilation dominates CPU time).
TINY = dict(encoder="two_branch", depth=14, aux_depth=10, width=8, feature_dim=32, hidden_dim=16)
B, S = 2, 32


def _inputs(seed=0):
    rng = np.random.RandomState(seed)
    return (rng.uniform(-1, 1, (B, S, S, 3)).astype(np.float32), rng.uniform(-1, 1, (B, S, S, 3)).astype(np.float32))


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "encoder, depth, aux_depth, paper_mb",
    # The paper's Table 2 model sizes (MB). Ours: float32 params + BatchNorm
    # statistics in MiB; the paper's are file sizes, a little larger.
    [("single", 101, 18, 174.97), ("single", 50, 18, 102.27), ("two_branch", 50, 18, 150.97), ("two_branch", 18, 18, 97.783)],
)
def test_model_sizes_match_paper_table2(encoder, depth, aux_depth, paper_mb):
    model = Regressor(encoder=encoder, depth=depth, aux_depth=aux_depth)
    x = jnp.zeros((1, 224, 224, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x if encoder == "two_branch" else None))
    size_mb = _count(shapes) * 4 / 2**20
    assert size_mb == pytest.approx(paper_mb, rel=2e-3)


def test_paper_default_depths():
    assert Regressor(encoder="single").main_depth == 101
    assert Regressor(encoder="two_branch").main_depth == 50
    x = jnp.zeros((1, 64, 64, 3))
    shapes = jax.eval_shape(lambda: Regressor(encoder="two_branch").init(jax.random.key(0), x, x))
    assert [k for k in shapes["params"]["image_encoder"] if k.startswith("layer3")] == [f"layer3_{i}" for i in range(6)]
    assert [k for k in shapes["params"]["aux_encoder"] if k.startswith("layer3")] == ["layer3_0", "layer3_1"]


def test_matches_official_architecture_torch_twin():
    torch.manual_seed(0)
    twin = torch_resnet.TorchRegressor(depth=14, aux_depth=10, width=8, feature_dim=32, hidden_dim=16)
    torch_resnet.randomize_batchnorm_(twin)
    twin.eval()
    variables = torch_train_step.regressor_variables(twin, depth=14, aux_depth=10, width=8)
    image, aux = _inputs()
    model = Regressor(**TINY)
    expected_shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), image, aux))
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, expected_shapes)

    out = jax.jit(functools.partial(model.apply, train=False))(variables, image, aux)
    with torch.no_grad():
        ref = twin(torch.from_numpy(image.transpose(0, 3, 1, 2).copy()), torch.from_numpy(aux.transpose(0, 3, 1, 2).copy()))
    ref = ref.numpy()
    np.testing.assert_allclose(out.residual, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(out.params, ref + reg.default_mean_params(), rtol=1e-5, atol=1e-4 * np.abs(ref).max())


def test_zero_head_gives_mean_params(tmp_path):
    rng = np.random.RandomState(0)
    pose, shape = rng.randn(72), rng.randn(10)
    np.savez(tmp_path / "mean.npz", pose=pose, shape=shape)
    mean = reg.load_mean_params(tmp_path / "mean.npz")
    model = Regressor(**TINY, mean_params=mean)
    image, aux = _inputs()
    variables = torch_resnet.random_variables(model, image, aux)
    variables["params"]["head_out"] = jax.tree.map(jnp.zeros_like, variables["params"]["head_out"])
    out = jax.jit(functools.partial(model.apply, train=False))(variables, image, aux)

    np.testing.assert_allclose(out.params, np.broadcast_to(mean, (B, 85)), rtol=1e-6)
    np.testing.assert_allclose(out.camera, [[0.9, 0.0, 0.0]] * B, rtol=1e-6)
    np.testing.assert_allclose(out.pose[:, 0], [[math.pi, 0.0, 0.0]] * B, rtol=1e-6)
    np.testing.assert_allclose(out.pose[:, 1:], np.broadcast_to(pose[3:].reshape(23, 3), (B, 23, 3)), rtol=1e-6)
    np.testing.assert_allclose(out.betas, np.broadcast_to(shape, (B, 10)), rtol=1e-6)
    np.testing.assert_array_equal(out.residual, 0.0)


def test_default_mean_params():
    mean = reg.default_mean_params()
    assert mean.shape == (85,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean[:6], [0.9, 0, 0, math.pi, 0, 0], rtol=1e-7)
    np.testing.assert_array_equal(mean[6:], 0.0)


def test_mean_param_files(tmp_path, monkeypatch):
    np.savez(tmp_path / "no_shape.npz", pose=np.zeros(72))
    with pytest.raises(ValueError, match=r"lacks \['shape'\]"):
        reg.load_mean_params(tmp_path / "no_shape.npz")
    np.savez(tmp_path / "bad.npz", pose=np.zeros(69), shape=np.zeros(10))
    with pytest.raises(ValueError, match="bad.npz.*72 values"):
        reg.load_mean_params(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        reg.load_mean_params(tmp_path / "missing.npz")
    (tmp_path / "mean.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="use .npz or .h5"):
        reg.load_mean_params(tmp_path / "mean.pkl")
    (tmp_path / "mean.h5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(ImportError, match="needs h5py"):
        reg.load_mean_params(tmp_path / "mean.h5")


def test_mean_param_file_errors_name_the_file(tmp_path):
    # Issue case 11: no bare BadZipFile / numpy allow_pickle advice; every message names the file.
    np.savez(tmp_path / "object.npz", pose=np.array([None] * 72, dtype=object), shape=np.zeros(10))
    np.savez(tmp_path / "nan.npz", pose=np.full(72, np.nan), shape=np.zeros(10))
    (tmp_path / "text.npz").write_bytes(b"not an archive")
    np.savez(tmp_path / "cut.npz", pose=np.zeros(72), shape=np.zeros(10))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:80])
    np.save(tmp_path / "single.npy", np.zeros(82))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    for name, match in (("object.npz", "'pose' is an object"), ("nan.npz", "'pose' holds NaN"),
                        ("text.npz", "not a readable .npz"), ("cut.npz", "BadZipFile"), ("single.npz", "not an .npz")):
        with pytest.raises(ValueError, match=match) as err:
            reg.load_mean_params(tmp_path / name)
        assert name in str(err.value) and "allow_pickle" not in str(err.value)
    pytest.importorskip("h5py")
    (tmp_path / "text.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="text.h5.*not a readable HDF5"):
        reg.load_mean_params(tmp_path / "text.h5")


def test_hmr_h5_mean_params(tmp_path):
    h5py = pytest.importorskip("h5py")
    pose, shape = np.linspace(-1, 1, 72), np.linspace(0, 1, 10)
    with h5py.File(tmp_path / "neutral_smpl_mean_params.h5", "w") as f:  # HMR's layout
        f["pose"], f["shape"] = pose, shape
    mean = reg.load_mean_params(tmp_path / "neutral_smpl_mean_params.h5")
    np.testing.assert_allclose(mean, np.concatenate([[0.9, 0, 0, math.pi, 0, 0], pose[3:], shape]), rtol=1e-6)


def test_train_step_under_jit_updates_batch_stats():
    model = Regressor(**TINY)
    image, aux = _inputs(1)
    variables = torch_resnet.random_variables(model, image, aux)

    @jax.jit
    def step(variables, image, aux):
        def loss_fn(params):
            out, updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, image, aux, train=True, mutable=["batch_stats"]
            )
            return jnp.mean(out.pose**2) + jnp.mean(out.betas**2), (out, updates["batch_stats"])

        (loss, (out, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return out, stats, grads

    out, stats, grads = step(variables, image, aux)
    assert isinstance(out, reg.RegressorOutput)
    assert out.camera.shape == (B, 3) and out.pose.shape == (B, 24, 3) and out.betas.shape == (B, 10)
    assert out.params.shape == out.residual.shape == (B, 85) and out.features.shape == (B, 64)
    np.testing.assert_array_equal(out.params[:, 3:75].reshape(B, 24, 3), out.pose)
    assert not np.allclose(stats["aux_encoder"]["bn1"]["mean"], variables["batch_stats"]["aux_encoder"]["bn1"]["mean"])
    for name in ("image_encoder", "aux_encoder", "head_out"):
        assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads[name]))) > 0


def test_single_branch_output():
    model = Regressor(encoder="single", depth=10, width=8, feature_dim=None, hidden_dim=16)
    image, _ = _inputs()
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], image)
    assert out.features.shape == (B, 64) and out.pose.shape == (B, 24, 3)


def test_bfloat16_close_to_float32():
    image, aux = _inputs(2)
    f32 = Regressor(**TINY)
    bf16 = Regressor(**TINY, dtype=jnp.bfloat16)
    variables = torch_resnet.random_variables(f32, image, aux)
    ref = jax.jit(f32.apply)(variables, image, aux)
    out = jax.jit(bf16.apply)(variables, image, aux)
    for field in ("params", "residual", "features"):
        a, b = getattr(out, field), getattr(ref, field)
        assert a.dtype == jnp.float32
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-2, field


def test_input_encodings():
    iuv = np.array([[[0, 0, 0], [24, 255, 255], [12, 51, 204]]], np.uint8)
    np.testing.assert_allclose(
        reg.encode_iuv(iuv), [[[-1, -1, -1], [1, 1, 1], [0, -0.6, 0.6]]], atol=1e-6
    )  # official: (I / 24 - 0.5) * 2, (U / 255 - 0.5) * 2
    np.testing.assert_allclose(reg.encode_iuv(np.array([[6, 0.5, 1.0]]), uv_max=1.0), [[-0.5, 0.0, 1.0]], atol=1e-6)
    seg = np.array([[0, 12, 24]])
    np.testing.assert_allclose(reg.encode_segmentation(seg), [[[-1] * 3, [0] * 3, [1] * 3]], atol=1e-6)
    np.testing.assert_allclose(reg.encode_image(np.array([0, 127.5, 255])), [-1, 0, 1], atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        reg.encode_iuv(np.zeros((4, 4, 2)))


def test_bad_inputs_raise_clear_errors():
    image, aux = _inputs()
    model = Regressor(**TINY)
    init = lambda *a: jax.eval_shape(lambda: model.init(jax.random.key(0), *a))  # noqa: E731
    with pytest.raises(ValueError, match="needs an aux input"):
        init(image)
    with pytest.raises(ValueError, match=r"image's B=2.*\(1, 32, 32, 3\)"):
        init(image, aux[:1])
    with pytest.raises(ValueError, match=r"image must be \[B, H, W, C\]"):
        init(image[0], aux)
    single = Regressor(encoder="single", depth=10, width=8)
    with pytest.raises(ValueError, match="takes one input"):
        jax.eval_shape(lambda: single.init(jax.random.key(0), image, aux))
    with pytest.raises(ValueError, match="'single' or 'two_branch'"):
        Regressor(encoder="three_branch")
    with pytest.raises(ValueError, match="85 finite numbers"):
        Regressor(mean_params=np.zeros(82))
    assert hash(Regressor(mean_params=reg.default_mean_params())) is not None  # usable as a static jit arg
