"""The DCT SMPL regressor: input encoder(s) + parameter estimator (paper Sec. 3.1, Fig. 2).

Architecture (the official code, ``src/models/dct_networks.py`` and ``resnet.py``)::

  single branch:  x ------> ResNet-101 -> relu -> fc1 (1024) -> relu = f
  two branch:     image --> ResNet-50  -> relu -> fc1 (1024) -> relu = f_m
                  aux ----> ResNet-18  -> relu -> fc1 (1024) -> relu = f_a,  f = [f_m, f_a]
  head:           f -> relu -> fc (1024) -> relu -> fc (85) = residual
  output:         params = mean_params + residual      (one pass, no HMR iteration)

The per-branch ``fc1`` is part of the official ResNet (``ResNet.fc1``); with it the
model sizes match the paper's Table 2 (ResNet-101: 174.97 MB, ResNet-50 &
ResNet-18: 150.97 MB). ``feature_dim=None`` leaves it out (pooled ResNet features
go straight into the head).

The 85 numbers: ``[0:3]`` camera ``(s, tx, ty)``, ``[3:75]`` pose (24 joints x 3
axis-angle, joint-major, joint 0 the global rotation), ``[75:85]`` betas.

Inputs, ``[B, H, W, 3]`` float (224 x 224 in the paper), encoded as the official
code does (``encode_image``, ``encode_iuv``, ``encode_segmentation`` below):
  * image: RGB / 255, then ``(x - 0.5) / 0.5`` -> [-1, 1];
  * IUV: channels (I, U, V) with I the DensePose part 0..24 (0 = background) and
    U, V in 0..255: ``(I / 24 - 0.5) * 2``, ``(U / 255 - 0.5) * 2``, ``(V / 255 - 0.5) * 2``;
  * part segmentation (the official code never released this input; our choice):
    the part index encoded exactly like the IUV's I channel, replicated to 3
    channels, i.e. an IUV map whose U and V are replaced by I.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dct_jax import npz_files
from dct_jax.models import resnet as resnet_lib

NUM_PARAMS = 85
CAMERA = slice(0, 3)
POSE = slice(3, 75)
BETAS = slice(75, 85)
MEAN_CAMERA = (0.9, 0.0, 0.0)
MEAN_GLOBAL_ROTATION = (math.pi, 0.0, 0.0)

# HMR's init of its final regression layer (xavier_uniform, gain 0.01), so that a
# fresh model starts near the mean parameters.
head_out_init = nn.initializers.variance_scaling(1e-4, "fan_avg", "uniform")


# ----------------------------------------------------------------- inputs


def encode_image(rgb: Any) -> jax.Array:
    """``[..., H, W, 3]`` RGB in 0..255 -> float32 in [-1, 1] (official: ToTensor + Normalize(0.5, 0.5))."""
    return jnp.asarray(rgb, jnp.float32) / 127.5 - 1.0


def encode_iuv(iuv: Any, *, num_parts: int = 24, uv_max: float = 255.0) -> jax.Array:
    """Official DCT IUV encoding.

    Args:
      iuv: ``[..., H, W, 3]`` with channel 0 the part index I in ``0..num_parts``
        (0 = background) and channels 1, 2 the chart coordinates U, V in ``0..uv_max``
        (DensePose's PNG layout: 0..255).
      num_parts: the largest part index (DensePose: 24).
      uv_max: the value of U = 1 (255 for DensePose PNGs, 1 for float charts).

    Returns:
      ``[..., H, W, 3]`` float32 in [-1, 1]: ``(I / num_parts - 0.5) * 2``,
      ``(U / uv_max - 0.5) * 2``, ``(V / uv_max - 0.5) * 2``.
    """
    iuv = jnp.asarray(iuv, jnp.float32)
    if iuv.shape[-1] != 3:
        raise ValueError(f"IUV must have 3 channels (I, U, V) last, got shape {iuv.shape}")
    scale = jnp.array([1.0 / num_parts, 1.0 / uv_max, 1.0 / uv_max], jnp.float32)
    return (iuv * scale - 0.5) * 2.0


def encode_segmentation(parts: Any, *, num_parts: int = 24) -> jax.Array:
    """Part segmentation -> the 3-channel input of an encoder.

    Args:
      parts: ``[..., H, W]`` integer part index in ``0..num_parts`` (0 = background).
      num_parts: the largest part index (DensePose: 24 fine parts).

    Returns:
      ``[..., H, W, 3]`` float32: ``(p / num_parts - 0.5) * 2`` replicated over the
      channels (the IUV encoding of I, used for I, U and V).
    """
    p = (jnp.asarray(parts, jnp.float32) / num_parts - 0.5) * 2.0
    return jnp.repeat(p[..., None], 3, axis=-1)


# ------------------------------------------------------------ mean params


def default_mean_params() -> np.ndarray:
    """``[85]``: camera (0.9, 0, 0), global rotation (pi, 0, 0), zero body pose and betas."""
    return mean_params_from(np.zeros(72), np.zeros(10))


def mean_params_from(pose: Any, betas: Any) -> np.ndarray:
    """The official mean parameters from a mean pose ``[72]`` and betas ``[10]``.

    As the official ``load_mean_params``: camera ``(0.9, 0, 0)``, and the global
    rotation of ``pose`` replaced by ``(pi, 0, 0)``.

    Returns:
      ``[85]`` float32.
    """
    pose = np.asarray(pose, np.float64).reshape(-1)
    betas = np.asarray(betas, np.float64).reshape(-1)
    if pose.shape != (72,) or betas.shape != (10,):
        raise ValueError(f"Mean pose must have 72 values and betas 10, got {pose.size} and {betas.size}")
    pose = pose.copy()
    pose[:3] = MEAN_GLOBAL_ROTATION
    return np.concatenate([MEAN_CAMERA, pose, betas]).astype(np.float32)


def load_mean_params(path: str | os.PathLike) -> np.ndarray:
    """Reads a mean-parameter file, e.g. HMR's ``neutral_smpl_mean_params.h5``.

    Args:
      path: ``.npz`` with arrays ``pose [72]`` and ``shape [10]``, or ``.h5`` with
        datasets ``pose`` and ``shape`` (HMR's file; needs ``h5py``).

    Returns:
      ``[85]`` float32, see ``mean_params_from``.

    Errors:
      FileNotFoundError: no such file.
      ImportError: an ``.h5`` file without h5py.
      ValueError: an unknown extension; a corrupt or unreadable file; ``pose``
        or ``shape`` missing, an object (pickled) array, not 72 / 10 numbers,
        or not finite. Every message names the file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No mean-parameter file at {path!r}")
    if ext == ".npz":
        fields = npz_files.read_arrays(path, ("pose", "shape"), where=repr(path))
    elif ext in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError as e:
            raise ImportError(
                f"Reading {path!r} needs h5py (pip install h5py), or convert it to .npz "
                "with arrays 'pose' [72] and 'shape' [10]."
            ) from e
        try:
            with h5py.File(path, "r") as f:
                fields = {k: np.asarray(f[k]) for k in ("pose", "shape") if k in f}
        except Exception as err:  # noqa: BLE001 - OSError of a corrupt file, a group instead of a dataset, ...
            raise ValueError(f"{path!r} is not a readable HDF5 file ({type(err).__name__}: {err})") from None
    else:
        raise ValueError(f"Unknown mean-parameter format {ext!r} for {path!r}: use .npz or .h5")
    missing = [k for k in ("pose", "shape") if k not in fields]
    if missing:
        raise ValueError(f"{path!r} lacks {missing} (needs 'pose' [72] and 'shape' [10])")
    for key, value in fields.items():
        if not np.issubdtype(value.dtype, np.number):
            raise ValueError(f"{path!r}: {key!r} must be numbers, got dtype {value.dtype}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path!r}: {key!r} holds NaN or inf")
    try:
        return mean_params_from(fields["pose"], fields["shape"])
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}") from None


# ------------------------------------------------------------------ model


@flax.struct.dataclass
class RegressorOutput:
    """What ``Regressor`` returns (a pytree; all float32).

    Attributes:
      camera: ``[B, 3]`` weak-perspective ``(s, tx, ty)``.
      pose: ``[B, 24, 3]`` axis-angle, joint 0 the global rotation.
      betas: ``[B, 10]`` shape coefficients.
      params: ``[B, 85]`` the three above, concatenated in the official layout.
      residual: ``[B, 85]`` the head's output, ``params - mean_params``.
      features: ``[B, F]`` the encoder's output ``f`` (F = 1024 single branch,
        2048 two branch with the default ``feature_dim``).
    """

    camera: jax.Array
    pose: jax.Array
    betas: jax.Array
    params: jax.Array
    residual: jax.Array
    features: jax.Array


class Regressor(nn.Module):
    """DCT's encoder + parameter estimator.

    Attributes:
      encoder: ``"single"`` (one input: image, IUV or segmentation) or
        ``"two_branch"`` (image + auxiliary IUV or segmentation).
      depth: ResNet depth of the (main) encoder; None for the paper's 101 (single)
        or 50 (two branch).
      aux_depth: ResNet depth of the auxiliary encoder (two branch only).
      width: ResNet stem width (64 as torchvision; e.g. 8 for tests).
      feature_dim: per-branch fc1 size (official 1024), None to leave fc1 out.
      hidden_dim: the head's hidden layer (1024).
      mean_params: ``[85]`` from ``load_mean_params`` / ``mean_params_from``;
        None for ``default_mean_params()``.
      dtype: computation dtype; parameters and outputs stay float32.
      matmul_1x1: compute the ResNets' 1x1 convolutions as matmuls (faster on
        CPU; the parameters are the same either way).
      fused_norm: the ResNets use ``resnet.BatchNorm`` (faster to differentiate)
        rather than ``nn.BatchNorm``; same variables and values either way.
      matmul_kernel_grad: the ResNets' other convolutions take their kernel
        gradients as im2col matmuls on CPU (``resnet.Conv``); same parameters and values.

    Submodules: ``image_encoder``, ``image_fc`` (the single branch uses these
    names too), ``aux_encoder``, ``aux_fc``, ``head_hidden``, ``head_out``.
    """

    encoder: str = "single"
    depth: int | None = None
    aux_depth: int = 18
    width: int = 64
    feature_dim: int | None = 1024
    hidden_dim: int = 1024
    mean_params: Sequence[float] | None = None
    dtype: Any = jnp.float32
    matmul_1x1: bool = True
    fused_norm: bool = True
    matmul_kernel_grad: bool = True

    def __post_init__(self):
        if self.encoder not in ("single", "two_branch"):
            raise ValueError(f"encoder must be 'single' or 'two_branch', got {self.encoder!r}")
        if self.mean_params is not None:
            mean = np.asarray(self.mean_params, np.float32).reshape(-1)
            if mean.shape != (NUM_PARAMS,) or not np.all(np.isfinite(mean)):
                raise ValueError(f"mean_params must be {NUM_PARAMS} finite numbers, got shape {mean.shape}")
            # A tuple keeps the module hashable.
            object.__setattr__(self, "mean_params", tuple(float(v) for v in mean))
        super().__post_init__()

    @property
    def main_depth(self) -> int:
        if self.depth is not None:
            return self.depth
        return 101 if self.encoder == "single" else 50

    def _branch(self, x: jax.Array, depth: int, prefix: str, train: bool) -> jax.Array:
        f = resnet_lib.resnet(
            depth,
            width=self.width,
            dtype=self.dtype,
            matmul_1x1=self.matmul_1x1,
            fused_norm=self.fused_norm,
            matmul_kernel_grad=self.matmul_kernel_grad,
            name=f"{prefix}_encoder",
        )(x, train=train)
        if self.feature_dim is not None:
            f = nn.relu(f)
            f = nn.Dense(
                self.feature_dim, dtype=self.dtype, kernel_init=resnet_lib.dense_init, name=f"{prefix}_fc"
            )(f)
            f = nn.relu(f)
        return f

    @nn.compact
    def __call__(self, image: jax.Array, aux: jax.Array | None = None, *, train: bool = False) -> RegressorOutput:
        """Predicts SMPL and camera parameters.

        Args:
          image: ``[B, H, W, 3]`` the main input (an encoded image; for a single
            branch on IUV / segmentation, the encoded IUV / segmentation).
          aux: ``[B, H, W, 3]`` the encoded IUV or segmentation (two branch
            only; same B as ``image``).
          train: BatchNorm mode (pass ``mutable=['batch_stats']`` when True).

        Returns:
          A ``RegressorOutput``.
        """
        if image.ndim != 4:
            raise ValueError(f"image must be [B, H, W, C], got shape {tuple(image.shape)}")
        if self.encoder == "two_branch":
            if aux is None:
                raise ValueError("A two-branch Regressor needs an aux input (encoded IUV or segmentation)")
            if aux.ndim != 4 or aux.shape[0] != image.shape[0]:
                raise ValueError(
                    f"aux must be [B, H, W, C] with the image's B={image.shape[0]}, got shape {tuple(aux.shape)}"
                )
        elif aux is not None:
            raise ValueError("A single-branch Regressor takes one input; got an aux input too")

        features = self._branch(image, self.main_depth, "image", train)
        if self.encoder == "two_branch":
            features = jnp.concatenate([features, self._branch(aux, self.aux_depth, "aux", train)], axis=-1)

        h = nn.relu(features)
        h = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=resnet_lib.dense_init, name="head_hidden")(h)
        h = nn.relu(h)
        residual = nn.Dense(
            NUM_PARAMS, dtype=self.dtype, kernel_init=head_out_init, name="head_out"
        )(h).astype(jnp.float32)

        mean = self.mean_params if self.mean_params is not None else default_mean_params()
        params = residual + jnp.asarray(mean, jnp.float32)
        batch = params.shape[0]
        return RegressorOutput(
            camera=params[:, CAMERA],
            pose=params[:, POSE].reshape(batch, 24, 3),
            betas=params[:, BETAS],
            params=params,
            residual=residual,
            features=features.astype(jnp.float32),
        )
