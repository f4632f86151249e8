"""Tests of dct_jax.models.convert against the torchvision-layout torch twin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_resnet
from safetensors.numpy import save_file

from dct_jax.models import convert
from dct_jax.models.regressor import Regressor
from dct_jax.models.resnet import resnet


def _twin(depth, num_classes=1000, width=64, seed=0):
    torch.manual_seed(seed)
    model = torch_resnet.TorchResNet(depth, num_classes, width)
    torch_resnet.randomize_batchnorm_(model, seed)
    return model.eval()


def _save(model, path):
    save_file(torch_resnet.state_dict_numpy(model), str(path))
    return path


def _save_dict(state, path):
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return path


def _torch_forward(model, x_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


@pytest.mark.parametrize("depth", [18, 50])
def test_converted_resnet_matches_torch_in_eval_mode(depth, tmp_path):
    twin = _twin(depth)
    variables = convert.load_torchvision(_save(twin, tmp_path / f"r{depth}.safetensors"), depth)
    assert set(variables) == {"params", "batch_stats"}
    assert variables["params"]["fc"]["kernel"].shape == (twin.feature_dim, 1000)

    x = np.random.RandomState(depth).randn(2, 64, 64, 3).astype(np.float32)
    model = resnet(depth, num_classes=1000)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    ref = _torch_forward(twin, x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_without_classifier_and_from_pth(tmp_path):
    twin = _twin(10, num_classes=None, width=8, seed=1)
    torch.save(twin.state_dict(), tmp_path / "r10.pth")
    from_pth = convert.load_torchvision(tmp_path / "r10.pth", 10, width=8)
    from_st = convert.load_torchvision(_save(twin, tmp_path / "r10.safetensors"), 10, width=8)
    assert "fc" not in from_st["params"]
    jax.tree.map(np.testing.assert_array_equal, from_pth, from_st)

    x = np.random.RandomState(0).randn(2, 32, 32, 3).astype(np.float32)
    out = resnet(10, width=8).apply(from_st, x)
    ref = _torch_forward(twin, x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_key_mapping():
    assert convert.torch_key("params", ("layer2_0", "downsample_0", "kernel")) == "layer2.0.downsample.0.weight"
    assert convert.torch_key("batch_stats", ("layer4_2", "bn3", "var")) == "layer4.2.bn3.running_var"
    assert convert.torch_key("params", ("bn1", "scale")) == "bn1.weight"
    assert convert.torch_key("params", ("fc", "bias")) == "fc.bias"


def test_mismatched_state_dict_lists_all_problems():
    state = torch_resnet.state_dict_numpy(_twin(10, num_classes=7, width=8))
    del state["layer1.0.bn2.running_var"]
    state["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["layer2.0.conv2.weight"] = np.zeros((16, 16, 5, 5), np.float32)
    with pytest.raises(ValueError) as err:
        convert.convert_state_dict(state, 10, width=8)
    msg = str(err.value)
    assert "resnet(10, num_classes=7, width=8)" in msg
    assert "1 missing: layer1.0.bn2.running_var" in msg
    assert "1 unexpected: layer5.0.conv1.weight" in msg
    assert "1 ill-shaped: layer2.0.conv2.weight: file (16, 16, 5, 5), expected torch shape (16, 16, 3, 3)" in msg


def test_wrong_depth_or_width_raises():
    state = torch_resnet.state_dict_numpy(_twin(10, num_classes=None, width=8))
    with pytest.raises(ValueError, match=r"40 missing: layer1\.1\.bn1\.bias, .*\(20 more\)"):
        convert.convert_state_dict(state, 18, width=8)
    with pytest.raises(ValueError, match=r"60 ill-shaped: .*conv1\.weight: file \(8, 3, 7, 7\), expected torch shape \(16, 3, 7, 7\)"):
        convert.convert_state_dict(state, 10, width=16)
    with pytest.raises(ValueError, match="Unsupported ResNet depth"):
        convert.convert_state_dict(state, 11, width=8)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert.load_torchvision(tmp_path / "nope.safetensors", 18)
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="Unknown state dict format"):
        convert.load_torchvision(tmp_path / "w.npz", 18)


def test_nan_weights_and_negative_running_var_are_named(tmp_path):
    # Issue case 8: each bad tensor is named, nothing loads silently.
    state = torch_resnet.state_dict_numpy(_twin(10, num_classes=None, width=8))
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = np.nan
    state["fc.bias"] = np.full(5, np.inf, np.float32)
    state["fc.weight"] = np.zeros((5, 64), np.float32)
    state["layer2.0.bn1.running_var"][3] = -0.5
    with pytest.raises(ValueError) as err:
        convert.load_torchvision(_save_dict(state, tmp_path / "bad.safetensors"), 10, width=8)
    msg = str(err.value)
    assert "2 with NaN/inf: fc.bias, layer1.0.conv1.weight" in msg
    assert "1 negative running variance: layer2.0.bn1.running_var (min -0.5)" in msg


def test_depth_and_layout_errors_report_the_architecture():
    # Issue case 13: depth "18" is a type error (not "unsupported, choose 18"); an HWIO or transposed
    # tensor is reported against the shape the architecture expects, not one inferred from it.
    state = torch_resnet.state_dict_numpy(_twin(10, num_classes=7, width=8))
    for depth in ("10", 10.0, True):
        with pytest.raises(TypeError, match=r"depth must be an int \(one of \[10, .*got .* of type"):
            convert.convert_state_dict(state, depth, width=8)
    with pytest.raises(TypeError, match="width must be an int"):
        convert.convert_state_dict(state, 10, width="8")
    with pytest.raises(TypeError, match="mapping"):
        convert.convert_state_dict([("conv1.weight", 0)], 10)
    hwio = {**state, "conv1.weight": state["conv1.weight"].transpose(2, 3, 1, 0),
            "fc.weight": state["fc.weight"].T}
    with pytest.raises(ValueError) as err:
        convert.convert_state_dict(hwio, 10, width=8)
    msg = str(err.value)
    assert "resnet(10, num_classes=7, width=8)" in msg
    assert "conv1.weight: file (7, 7, 3, 8), expected torch shape (8, 3, 7, 7) (a Flax/TF [kh, kw, I, O]" in msg
    assert "fc.weight: file (64, 7), expected torch shape (7, 64) (transposed?" in msg


def test_unreadable_files_are_named(tmp_path):
    # Issue case 13: a non-state-dict .pth (no bare `KeyError: 101`), a corrupt safetensors file,
    # a checkpoint with other entries and a pickled whole model all name the file.
    (tmp_path / "text.pth").write_bytes(b"hello world")
    (tmp_path / "text.safetensors").write_bytes(b"hello world")
    torch.save({"epoch": 3, "model": torch.nn.Linear(2, 2).state_dict()}, tmp_path / "ckpt.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    for name, match in (("text.pth", r"KeyError.*state_dict\(\)"), ("text.safetensors", "not a readable safetensors"),
                        ("ckpt.pth", "'epoch' is int, not a tensor"), ("model.pth", "UnpicklingError"),
                        ("list.pth", "does not hold a state dict")):
        with pytest.raises(ValueError, match=match) as err:
            convert.load_torchvision(tmp_path / name, 10)
        assert name in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(ValueError, match="backbone lacks"):
        convert.merge_backbone({"params": {}, "batch_stats": {}}, {"params": {}}, "image_encoder")


def test_merge_backbone_into_regressor(tmp_path):
    model = Regressor(encoder="two_branch", depth=14, aux_depth=10, width=8, feature_dim=16, hidden_dim=16)
    image = jnp.zeros((1, 32, 32, 3))
    variables = torch_resnet.random_variables(model, image, image)
    backbone = convert.load_torchvision(_save(_twin(14, 1000, 8, seed=3), tmp_path / "r14.safetensors"), 14, width=8)
    merged = convert.merge_backbone(variables, backbone, "image_encoder")
    np.testing.assert_array_equal(
        merged["params"]["image_encoder"]["conv1"]["kernel"], backbone["params"]["conv1"]["kernel"]
    )
    np.testing.assert_array_equal(
        merged["batch_stats"]["image_encoder"]["bn1"]["mean"], backbone["batch_stats"]["bn1"]["mean"]
    )
    assert "fc" not in merged["params"]["image_encoder"]
    assert merged["params"]["aux_encoder"] is variables["params"]["aux_encoder"]  # others untouched
    assert variables["params"]["image_encoder"] is not merged["params"]["image_encoder"]  # no mutation
    with pytest.raises(ValueError, match="does not fit 'aux_encoder'"):
        convert.merge_backbone(variables, backbone, "aux_encoder")
    with pytest.raises(ValueError, match="No submodule 'encoder'"):
        convert.merge_backbone(variables, backbone, "encoder")
