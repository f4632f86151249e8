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
from collections.abc import Mapping
from typing import Any

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

    Errors:
      FileNotFoundError: no such file.
      ImportError: a ``.pth`` file without torch installed.
      ValueError: an unknown file extension, a corrupt or unreadable file, or
        one that is not a flat ``{name: tensor}`` state dict (e.g. a pickled
        whole model, or a checkpoint with other entries); the message names
        the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No state dict file at {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except Exception as err:  # noqa: BLE001 - SafetensorError and friends do not name the file
            raise ValueError(f"{path!r} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    if ext in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"Reading {path!r} needs torch; install it, or save the state dict as "
                "`.safetensors` (safetensors.torch.save_file) and load that instead."
            ) from e
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - e.g. a bare `KeyError: 101` for a non-torch file
            # torch's own advice (weights_only=False) would run arbitrary code: not passed on.
            first = str(err).splitlines()[0][:200] if str(err) else ""
            detail = f": {first}" if first and "weights_only" not in first and "trust" not in first else ""
            raise ValueError(
                f"{path!r} is not a state dict torch.load(weights_only=True) can read ({type(err).__name__}{detail}); "
                "save one with torch.save(model.state_dict(), path), or use .safetensors"
            ) from None
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path!r} does not hold a state dict (got {type(obj).__name__})")
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ValueError(
                f"{path!r} is not a flat state dict: {bad[0]!r} is {type(obj[bad[0]]).__name__}, not a tensor "
                f"(top-level keys: {', '.join(map(repr, list(obj)[:10]))}); pass the model's state_dict()"
            )
        return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in obj.items()}
    raise ValueError(f"Unknown state dict format {ext!r} for {path!r}: use .safetensors or .pth")


def torch_key(collection: str, path: tuple[str, ...]) -> str:
    """The torch state-dict key of the Flax leaf ``variables[collection][path...]``."""
    modules = [re.sub(r"^(.*)_(\d+)$", r"\1.\2", p) for p in path[:-1]]
    return ".".join(modules + [_LEAF_TO_TORCH[(collection, path[-1])]])


def _check_size(name: str, value: Any, *, choices: Any = None) -> int:
    """``value`` as an int >= 1; a str, float or bool is a TypeError (no silent conversion)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        listed = f" (one of {sorted(choices)})" if choices else ""
        raise TypeError(f"{name} must be an int{listed}, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _layout_hint(file_shape: tuple[int, ...], torch_shape: tuple[int, ...]) -> str:
    """Why a tensor of ``file_shape`` may not fit ``torch_shape``: a Flax/TF layout or a transpose."""
    if file_shape == torch_shape or sorted(file_shape) != sorted(torch_shape):
        return ""
    if len(file_shape) == 4 and file_shape == (torch_shape[2], torch_shape[3], torch_shape[1], torch_shape[0]):
        return " (a Flax/TF [kh, kw, I, O] kernel? torch's layout is [O, I, kh, kw])"
    if len(file_shape) == 2:
        return " (transposed? torch's linear layout is [out, in])"
    return " (same sizes, other axis order)"


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
      ``resnet(depth, num_classes=N, width=width)``, where ``N`` is the length
      of ``fc.bias`` (else the rows of ``fc.weight``), or None when the file
      has no classifier.

    Errors:
      TypeError: ``state_dict`` not a mapping; ``depth`` or ``width`` not an
        int (e.g. the string ``"18"``).
      ValueError: an unsupported depth (lists the supported ones), or one
        message listing the missing, unexpected and ill-shaped keys (file
        shape vs. the shape the architecture expects, with a hint for a
        Flax/TF-layout or transposed tensor), the tensors holding NaN/inf, and
        BatchNorm running variances with negative entries.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of torch key -> array, got {type(state_dict).__name__}")
    depth = _check_size("depth", depth, choices=resnet_lib.STAGES)
    width = _check_size("width", width)
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    # The architecture's shapes must not be inferred from a tensor that may itself be wrong: the
    # classes from fc.bias when there is one, the input channels only from an [O=width, I, kh, kw] stem.
    fc_shape = np.shape(sd.get("fc.bias", sd.get("fc.weight", ())))
    num_classes = int(fc_shape[0]) if ("fc.weight" in sd or "fc.bias" in sd) and fc_shape else None
    stem = np.shape(sd.get("conv1.weight", ()))
    in_channels = int(stem[1]) if len(stem) == 4 and stem[0] == width else 3
    model = resnet_lib.resnet(depth, num_classes=num_classes, width=width)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, in_channels)), train=False)
    )

    flat = {}
    missing, ill_shaped, non_finite, negative_var = [], [], [], []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = tuple(k.key for k in key_path)
        collection, path = names[0], names[1:]
        key = torch_key(collection, path)
        if key not in sd:
            missing.append(key)
            continue
        value = _to_flax(sd[key], leaf.ndim)
        if value.shape != leaf.shape:
            file_shape, torch_shape = tuple(np.shape(sd[key])), _torch_shape(leaf.shape)
            ill_shaped.append(
                f"{key}: file {file_shape}, expected torch shape {torch_shape}{_layout_hint(file_shape, torch_shape)}"
            )
            continue
        value = value.astype(np.float32)
        if not np.all(np.isfinite(value)):
            non_finite.append(key)
        elif path[-1] == "var" and value.size and value.min() < 0:
            negative_var.append(f"{key} (min {value.min():.3g})")
        flat[names] = value
    expected = {torch_key(n[0], n[1:]) for n in _leaf_names(shapes)}
    unexpected = sorted(set(sd) - expected)
    problems = (("missing", missing), ("unexpected", unexpected), ("ill-shaped", ill_shaped),
                ("with NaN/inf", non_finite), ("negative running variance", negative_var))
    if any(keys for _, keys in problems):
        lines = [f"State dict does not fit resnet({depth}, num_classes={num_classes}, width={width}):"]
        for title, keys in problems:
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

    Errors:
      As ``read_state_dict`` (missing, corrupt or non-state-dict file, named)
      and ``convert_state_dict`` (``depth``/``width`` not ints, keys missing,
      unexpected or ill-shaped, NaN/inf tensors, negative running variances,
      each tensor named).
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

    Errors:
      ValueError: ``backbone`` lacks ``params``/``batch_stats`` (not from
        ``load_torchvision``), ``name`` is absent, or any shape or key differs.
    """
    missing = [c for c in ("params", "batch_stats") if not isinstance(backbone, Mapping) or c not in backbone]
    if missing:
        raise ValueError(f"backbone lacks {missing}: pass the variables load_torchvision returns")
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
