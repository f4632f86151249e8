"""torchvision ResNet state dicts -> Flax variables of ``dct_jax.models.resnet``.

Key mapping (one to one; ``num_batches_tracked`` is ignored)::

  conv1.weight                       [O, I, kh, kw] -> params/conv1/kernel [kh, kw, I, O]
  bn1.weight / bn1.bias              [C]            -> params/bn1/scale, params/bn1/bias
  bn1.running_mean / running_var     [C]            -> batch_stats/bn1/mean, batch_stats/bn1/var
  layer2.0.downsample.0.weight                      -> params/layer2_0/downsample_0/kernel
  layer2.0.downsample.1.running_var                 -> batch_stats/layer2_0/downsample_1/var
  fc.weight [N, D], fc.bias [N]                     -> params/fc/kernel [D, N], params/fc/bias

A module path component ``name_<digits>`` in Flax is ``name.<digits>`` in torch.
Nothing is downloaded: pass a file you have (e.g. torchvision's
``resnet50-0676ba61.pth``, or the same weights saved as ``.safetensors``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dct_jax.models import resnet as resnet_lib

# Flax leaf (collection, name) -> torch state-dict leaf name.
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict as numpy arrays.

    ``.safetensors`` files are read with ``safetensors.numpy`` (no torch needed);
    ``.pth`` / ``.pt`` files need torch (loaded with ``weights_only=True``); a
    checkpoint holding ``{"state_dict": ...}`` is unwrapped.

    Raises:
      FileNotFoundError: no such file.
      ImportError: a ``.pth`` file without torch installed.
      ValueError: an unknown file extension.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No state dict file at {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if ext in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"Reading {path!r} needs torch; install it, or save the state dict as "
                "`.safetensors` (safetensors.torch.save_file) and load that instead."
            ) from e
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path!r} does not hold a state dict (got {type(obj).__name__})")
        return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in obj.items()}
    raise ValueError(f"Unknown state dict format {ext!r} for {path!r}: use .safetensors or .pth")


def torch_key(collection: str, path: tuple[str, ...]) -> str:
    """The torch state-dict key of the Flax leaf ``variables[collection][path...]``."""
    modules = [re.sub(r"^(.*)_(\d+)$", r"\1.\2", p) for p in path[:-1]]
    return ".".join(modules + [_LEAF_TO_TORCH[(collection, path[-1])]])


def _to_flax(value: np.ndarray, flax_ndim: int) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 4 and flax_ndim == 4:  # conv [O, I, kh, kw] -> [kh, kw, I, O]
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2 and flax_ndim == 2:  # linear [out, in] -> [in, out]
        return value.T
    return value


def convert_state_dict(
    state_dict: Mapping[str, Any], depth: int, *, width: int = 64
) -> dict[str, Any]:
    """Turns a torchvision ResNet state dict into Flax variables.

    Args:
      state_dict: torch key -> array (numpy or anything ``np.asarray`` takes).
      depth: the ResNet depth the weights are for (see ``resnet.STAGES``).
      width: stem width (64 for torchvision's weights).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32 jax arrays) for
      ``resnet(depth, num_classes=N, width=width)``, where ``N`` is the number of
      rows of ``fc.weight``, or None when the file has no classifier.

    Raises:
      ValueError: listing the missing, unexpected and ill-shaped keys.
    """
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    num_classes = int(np.shape(sd["fc.weight"])[0]) if "fc.weight" in sd else None
    in_channels = int(np.shape(sd["conv1.weight"])[1]) if "conv1.weight" in sd else 3
    model = resnet_lib.resnet(depth, num_classes=num_classes, width=width)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, in_channels)), train=False)
    )

    flat = {}
    missing, ill_shaped = [], []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = tuple(k.key for k in key_path)
        collection, path = names[0], names[1:]
        key = torch_key(collection, path)
        if key not in sd:
            missing.append(key)
            continue
        value = _to_flax(sd[key], leaf.ndim)
        if value.shape != leaf.shape:
            ill_shaped.append(
                f"{key}: file {tuple(np.shape(sd[key]))}, expected torch shape "
                f"{_torch_shape(leaf.shape)}"
            )
            continue
        flat[names] = value.astype(np.float32)
    expected = {torch_key(n[0], n[1:]) for n in _leaf_names(shapes)}
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected or ill_shaped:
        lines = [f"State dict does not match resnet({depth}, num_classes={num_classes}, width={width}):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("ill-shaped", ill_shaped)):
            if keys:
                keys = sorted(keys)
                more = f" ... ({len(keys) - 20} more)" if len(keys) > 20 else ""
                lines.append(f"  {len(keys)} {title}: " + ", ".join(keys[:20]) + more)
        raise ValueError("\n".join(lines))

    variables: dict[str, Any] = {}
    for names, value in flat.items():
        node = variables
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = jnp.asarray(value)
    return variables


def _leaf_names(tree) -> list[tuple[str, ...]]:
    return [tuple(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return tuple(flax_shape)


def load_torchvision(path: str | os.PathLike, depth: int, *, width: int = 64) -> dict[str, Any]:
    """Reads a torchvision-format ResNet state dict and converts it (see ``convert_state_dict``).

    Args:
      path: a ``.safetensors`` file (no torch needed) or a ``.pth`` file (needs torch).
      depth: 18, 34, 50, 101 or 152 for torchvision's weights.
      width: stem width (64 for torchvision's weights).

    Returns:
      ``{"params", "batch_stats"}`` for ``resnet(depth, num_classes=...)``, the
      classifier ``fc`` included when the file has one.
    """
    return convert_state_dict(read_state_dict(path), depth, width=width)


def merge_backbone(variables: Mapping[str, Any], backbone: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Puts converted ResNet weights into a larger model's variables.

    Args:
      variables: e.g. a ``Regressor``'s ``{"params", "batch_stats"}``.
      backbone: from ``load_torchvision``; its classifier ``fc`` is dropped.
      name: the ResNet submodule, e.g. ``"image_encoder"`` or ``"aux_encoder"``.

    Returns:
      A copy of ``variables`` with ``name``'s params and batch_stats replaced.

    Raises:
      ValueError: if ``name`` is absent or any shape or key differs.
    """
    out = {c: dict(v) for c, v in variables.items()}
    for collection in ("params", "batch_stats"):
        if name not in out.get(collection, {}):
            raise ValueError(f"No submodule {name!r} in variables[{collection!r}]")
        new = {k: v for k, v in backbone[collection].items() if k != "fc"}
        old_shapes = jax.tree.map(np.shape, out[collection][name])
        new_shapes = jax.tree.map(np.shape, new)
        if old_shapes != new_shapes:
            old_flat = dict(_flat_shapes(old_shapes))
            new_flat = dict(_flat_shapes(new_shapes))
            diff = sorted(k for k in set(old_flat) | set(new_flat) if old_flat.get(k) != new_flat.get(k))
            raise ValueError(
                f"Backbone does not fit {name!r} ({collection}): "
                + ", ".join(f"{k}: model {old_flat.get(k)}, backbone {new_flat.get(k)}" for k in diff[:20])
            )
        out[collection][name] = jax.tree.map(jnp.asarray, new)
    return out


def _flat_shapes(tree) -> list[tuple[str, tuple[int, ...]]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
    return [("/".join(str(k.key) for k in p), v) for p, v in leaves]
