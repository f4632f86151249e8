"""Tests for ``python -m dct_jax.smpl_io convert``: SMPL pickles (chumpy inside)
to plain .npz files that dct_jax, numpy without pickle and smplx all read."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
from smpl_fixtures import random_smpl_arrays

from dct_jax import smpl, smpl_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces")


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays(seed=0)


def _fake_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so submodules resolve
    return module


@pytest.fixture(scope="module")
def chumpy_pkl(arrays, tmp_path_factory):
    """An SMPL pickle as the original Python 2 files are: chumpy arrays, a chumpy
    ``Select`` expression, a ``scipy.sparse.csc`` J_regressor, string and dict
    fields (written with stand-in classes of the same module and class names)."""
    ch_module, reordering, csc_module = (_fake_module(n) for n in ("chumpy.ch", "chumpy.reordering",
                                                                      "scipy.sparse.csc"))

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

    class csc_matrix:  # scipy's name
        def __init__(self, dense):
            dense = np.asarray(dense)
            cols, rows = np.nonzero(dense.T)  # column-major order
            self.data = dense[rows, cols]
            self.indices = rows.astype(np.int32)
            self.indptr = np.searchsorted(cols, np.arange(dense.shape[1] + 1)).astype(np.int32)
            self._shape = dense.shape

    for cls, module in ((Ch, ch_module), (Select, reordering), (csc_matrix, csc_module)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    shapedirs = arrays["shapedirs"]
    data = dict(arrays)
    data.update(
        v_template=Ch(arrays["v_template"]),
        shapedirs=Select(Ch(shapedirs.ravel()), np.arange(shapedirs.size), shapedirs.shape),
        posedirs=Ch(arrays["posedirs"]),
        J_regressor=csc_matrix(arrays["J_regressor"]),
        J=Ch(np.arange(72.0).reshape(24, 3)),
        bs_style="lbs",
        pose_training_info={"frames": 1786},  # not an array: dropped
    )
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch", "chumpy.reordering",
                                                      "scipy.sparse.csc")}
    sys.modules.update({"chumpy": _fake_module("chumpy"), "chumpy.ch": ch_module,
                        "chumpy.reordering": reordering, "scipy.sparse.csc": csc_module})
    path = tmp_path_factory.mktemp("model") / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    try:
        with open(path, "wb") as stream:
            pickle.dump(data, stream, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


@pytest.fixture(scope="module")
def converted(chumpy_pkl, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "SMPL_NEUTRAL.npz"
    return out, smpl_io.convert(chumpy_pkl, out)


def test_npz_loads_exactly_as_the_pickle(arrays, chumpy_pkl, converted):
    out, done = converted
    from_pkl, from_npz = smpl.load(chumpy_pkl), smpl.load(out)
    for field in MODEL_FIELDS:
        np.testing.assert_array_equal(getattr(from_npz, field), getattr(from_pkl, field), err_msg=field)
        assert getattr(from_npz, field).dtype == getattr(from_pkl, field).dtype, field
    assert from_npz.parents == from_pkl.parents == smpl.SMPL_PARENTS
    # The pickle's values, not just something equal after dct_jax's float32 cast.
    with np.load(out, allow_pickle=False) as npz:
        for key, value in arrays.items():
            np.testing.assert_array_equal(npz[key], value, err_msg=key)
            assert npz[key].dtype == np.asarray(value).dtype, key
    assert (done.num_vertices, done.num_joints, done.num_betas) == (6890, 24, 10)


def test_npz_is_plain_arrays_with_smplx_names(converted):
    out, done = converted
    with np.load(out, allow_pickle=False) as npz:
        contents = {key: npz[key] for key in npz.files}  # reading every member needs no pickle
    assert set(contents) == set(smpl_io.SMPL_FIELDS) | {"J", "bs_style"}
    assert set(done.fields) == set(contents)
    assert done.dropped == ("pose_training_info",)
    assert all(a.dtype != object for a in contents.values())
    assert contents["J_regressor"].shape == (24, 6890) and contents["J_regressor"].dtype == np.float64
    assert contents["posedirs"].shape == (6890, 3, 207)
    np.testing.assert_array_equal(contents["J"], np.arange(72.0).reshape(24, 3))
    assert str(contents["bs_style"]) == "lbs"


def test_smplx_reads_the_npz(arrays, converted, tmp_path):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    out, _ = converted
    # smplx.SMPL reads only pickles itself; an .npz goes in through data_struct
    # (as smplx's SMPL-H/SMPL-X loaders do with their .npz files).
    with np.load(out, allow_pickle=False) as npz:
        from_npz = smplx.SMPL(model_path=str(out), data_struct=smplx.utils.Struct(**npz), num_betas=10)
    plain_pkl = tmp_path / "SMPL_NEUTRAL.pkl"  # what smplx reads without chumpy
    with open(plain_pkl, "wb") as stream:
        pickle.dump(arrays, stream, protocol=2)
    reference = smplx.SMPL(model_path=str(plain_pkl), num_betas=10)
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(dict(from_npz.named_buffers())[name], buffer, rtol=0, atol=0, msg=name)
    rng = np.random.default_rng(1)
    pose = torch.as_tensor(rng.normal(scale=0.4, size=(2, 72)), dtype=torch.float32)
    betas = torch.as_tensor(rng.normal(size=(2, 10)), dtype=torch.float32)
    posed = [model(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3]).vertices
             for model in (from_npz, reference)]
    torch.testing.assert_close(posed[0], posed[1], rtol=0, atol=0)
    assert float(posed[0].detach().std()) > 0.1  # a body, not zeros


def test_npz_input_in_smplx_buffer_layout_is_normalized(arrays, tmp_path):
    # posedirs as smplx keeps it, (P, V * 3), and an integer J_regressor.
    data = dict(arrays, posedirs=arrays["posedirs"].reshape(-1, 207).T,
                J_regressor=(arrays["J_regressor"] > 0).astype(np.int64))
    src, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, **data)
    smpl_io.convert(src, out)
    with np.load(out, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["posedirs"], arrays["posedirs"])
        assert npz["J_regressor"].dtype == np.float64
        np.testing.assert_array_equal(npz["J_regressor"], data["J_regressor"])
    np.testing.assert_array_equal(smpl.load(out).posedirs, smpl.load(src).posedirs)


def _write_pickle(path, data):
    with open(path, "wb") as stream:
        pickle.dump(data, stream, protocol=2)
    return path


def _user_errors(tmp):
    """``(argv, text the error line must contain)`` for each kind of user error."""
    arrays = random_smpl_arrays(seed=2, num_vertices=50)  # small: these never get far
    good = _write_pickle(tmp / "good.pkl", arrays)
    garbage = tmp / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    incomplete = _write_pickle(tmp / "incomplete.pkl", {k: v for k, v in arrays.items() if k != "weights"})
    ill_shaped = _write_pickle(tmp / "ill_shaped.pkl", dict(arrays, J_regressor=np.zeros((24, 100))))
    stringly = _write_pickle(tmp / "stringly.pkl", dict(arrays, f="faces"))
    png = tmp / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    fractional = _write_pickle(tmp / "fractional.pkl", dict(arrays, f=arrays["f"] + 0.5))
    not_a_tree = _write_pickle(tmp / "not_a_tree.pkl", dict(arrays, kintree_table=arrays["kintree_table"][:, ::-1]))
    return [
        (["convert", str(tmp / "nowhere.pkl"), str(tmp / "a.npz")], "no SMPL model file at"),
        (["convert", str(good), str(tmp / "missing_dir" / "a.npz")], "output directory"),
        (["convert", str(good), str(tmp / "a.npy")], "must end in .npz"),
        (["convert", str(garbage), str(tmp / "a.npz")], f"{garbage}: not an SMPL model file (expected .pkl or .npz)"),
        (["convert", str(incomplete), str(tmp / "a.npz")], "missing field(s) ['weights']"),
        (["convert", str(ill_shaped), str(tmp / "a.npz")], "'J_regressor' has shape (24, 100)"),
        (["convert", str(stringly), str(tmp / "a.npz")], "field 'f' is not a numeric array"),
        (["convert", str(png), str(tmp / "a.npz")], f"{png}: not an SMPL model file (expected .pkl or .npz)"),
        (["convert", str(fractional), str(tmp / "a.npz")], "field 'f' must hold integers"),
        (["convert", str(not_a_tree), str(tmp / "a.npz")], "'kintree_table' row 1 must be the joint ids"),
    ]


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    for argv, expected in _user_errors(tmp_path):
        assert smpl_io.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
        assert expected in lines[0], (expected, lines[0])
    # Nothing written, no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz" or p.name.startswith(".")) == []


def test_refuses_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = _write_pickle(tmp_path / "evil.pkl", {"v_template": Exploit()})
    assert smpl_io.main(["convert", str(evil), str(tmp_path / "out.npz")]) == 2
    assert "refusing" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.npz").exists()


def test_replaces_an_existing_output(arrays, chumpy_pkl, tmp_path):
    out = tmp_path / "model.npz"
    out.write_bytes(b"old")
    smpl_io.convert(chumpy_pkl, out)
    np.testing.assert_array_equal(np.load(out, allow_pickle=False)["v_template"], arrays["v_template"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_command_line(chumpy_pkl, tmp_path):
    out = tmp_path / "SMPL_NEUTRAL.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "dct_jax.smpl_io", *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    ok = run("convert", chumpy_pkl, out)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 1
    for part in (str(out), "6890 vertices", "24 joints", "10 betas"):
        assert part in lines[0], (part, lines[0])
    np.testing.assert_array_equal(smpl.load(out).v_template, smpl.load(chumpy_pkl).v_template)

    missing = run("convert", tmp_path / "nowhere.pkl", tmp_path / "other.npz")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [f"error: no SMPL model file at {str(tmp_path / 'nowhere.pkl')!r}"]
    assert not (tmp_path / "other.npz").exists()
