"""Test-only PyTorch twins of ``dct_jax.models`` (never imported by ``dct_jax``).

``TorchResNet`` follows torchvision's ``torchvision.models.resnet`` architecture and
state-dict names exactly (torchvision itself does not import with the CPU torch
here). ``TorchRegressor`` follows the official DCT code
(``src/models/dct_networks.py`` and its ``resnet.py``): a ResNet per branch, then
ReLU -> fc1 (1024) -> ReLU per branch, concatenation, ReLU -> fc (1024) -> ReLU ->
fc (85). Used by the tests and by ``benchmarks/encoder_speed.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

STAGES = {
    10: ("basic", (1, 1, 1, 1)),
    14: ("bottleneck", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    """torchvision's ``ResNet``; ``num_classes=None`` drops ``fc`` (pooled features)."""

    def __init__(self, depth: int, num_classes: int | None = 1000, width: int = 64, in_channels: int = 3):
        super().__init__()
        kind, layers = STAGES[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = width * 8 * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes is not None else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x) if self.fc is not None else x


class TorchRegressor(nn.Module):
    """The official DCT encoder + head (single or two branch), batch-first NCHW."""

    def __init__(self, depth=50, aux_depth=18, two_branch=True, width=64, feature_dim=1024, hidden_dim=1024):
        super().__init__()
        self.image_encoder = TorchResNet(depth, None, width)
        self.image_fc = nn.Linear(self.image_encoder.feature_dim, feature_dim)
        self.two_branch = two_branch
        total = feature_dim
        if two_branch:
            self.aux_encoder = TorchResNet(aux_depth, None, width)
            self.aux_fc = nn.Linear(self.aux_encoder.feature_dim, feature_dim)
            total += feature_dim
        self.head_hidden = nn.Linear(total, hidden_dim)
        self.head_out = nn.Linear(hidden_dim, 85)

    def forward(self, image, aux=None):
        relu = torch.relu
        f = relu(self.image_fc(relu(self.image_encoder(image))))
        if self.two_branch:
            fa = relu(self.aux_fc(relu(self.aux_encoder(aux))))
            f = torch.cat([f, fa], dim=1)
        return self.head_out(relu(self.head_hidden(relu(f))))


def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> None:
    """Gives every BatchNorm random affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(7)


def state_dict_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The state dict as contiguous numpy arrays (for ``safetensors.numpy.save_file``)."""
    return {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in model.state_dict().items()}


def random_variables(model, *args, seed: int = 0, **kwargs) -> dict:
    """Random Flax variables for ``model`` without compiling its init (test speed).

    Shapes come from ``jax.eval_shape(model.init, ...)``; kernels are He-normal
    over their fan-in, BatchNorm gets random affine parameters and statistics,
    biases are small. ``args`` / ``kwargs`` are the inputs ``model.init`` takes.
    """
    import jax

    rng = np.random.RandomState(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))

    def leaf(path, s):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            value = rng.randn(*s.shape) * np.sqrt(2.0 / fan_in)
        elif name == "scale":
            value = 1.0 + 0.2 * rng.randn(*s.shape)
        elif name == "var":
            value = rng.uniform(0.5, 1.5, s.shape)
        else:  # bias, mean
            value = 0.1 * rng.randn(*s.shape)
        return jax.numpy.asarray(value, s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)
