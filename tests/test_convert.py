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
