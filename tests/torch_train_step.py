"""Test-only PyTorch twin of ``dct_jax.train``'s loss and step (never imported by ``dct_jax``).

The same computation as ``train.compute_losses`` / ``train.train_step`` for the
terms ``configs/ours_dc.py`` uses (keypoint, SMPL and dense), written the way a
PyTorch codebase would: ``torch_resnet.TorchRegressor`` (one pass of the head,
no iteration, as ``dct_jax.models.regressor``), smplx's ``lbs`` on the arrays of
a ``dct_jax.smpl.SMPLModel``, cocoplus19 keypoints gathered as
``keypoints.from_body``, the weak-perspective camera, the losses of
``dct_jax.losses`` (same masks, reductions and NaN-safe selection) and
``torch.optim.Adam``. Used by ``benchmarks/train_speed.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import torch
import torch_resnet
from smplx.lbs import batch_rodrigues, lbs

from dct_jax import keypoints, losses, smpl
from dct_jax.models import convert
from dct_jax.models import regressor as regressor_lib


class TorchBody:
    """An ``SMPLModel``'s arrays as torch tensors in smplx's layouts, plus a keypoint layout."""

    def __init__(self, body: smpl.SMPLModel, layout: keypoints.Layout, device: torch.device | str = "cpu"):
        def t(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.array(x, np.float32), device=device)

        num_vertices = body.num_vertices
        self.v_template = t(body.v_template)                      # (V, 3)
        self.shapedirs = t(body.shapedirs)                        # (V, 3, NB)
        # Ours (V, 3, P) -> smplx's (P, V * 3).
        self.posedirs = t(np.asarray(body.posedirs).reshape(num_vertices * 3, -1).T.copy())
        self.J_regressor = t(body.J_regressor)                    # (J, V)
        self.lbs_weights = t(body.lbs_weights)                    # (V, J)
        self.parents = torch.as_tensor(body.parents, dtype=torch.long, device=device)
        self.joint_ids = torch.as_tensor(layout.joint_ids, dtype=torch.long, device=device)
        self.vertex_ids = torch.as_tensor(layout.vertex_ids, dtype=torch.long, device=device)
        self.is_vertex = torch.as_tensor(layout.is_vertex, device=device)

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rotmats (B, 24, 3, 3)``, ``betas (B, NB)`` -> ``vertices (B, V, 3)``, ``joints (B, J, 3)``."""
        return lbs(betas, rotmats, self.v_template, self.shapedirs, self.posedirs, self.J_regressor,
                   self.parents, self.lbs_weights, pose2rot=False)

    def keypoints(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """``(B, K, 3)`` keypoints, as ``keypoints.from_body``."""
        return torch.where(self.is_vertex[:, None], vertices[:, self.vertex_ids], joints[:, self.joint_ids])


def weak_perspective_project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3)`` points, ``(B, 3)`` camera ``(s, tx, ty)`` -> ``(B, N, 2)``."""
    return camera[:, None, 0:1] * (points[..., :2] + camera[:, None, 1:3])


def project_surface_points(vertices: torch.Tensor, vertex_ids: torch.Tensor, barycentric: torch.Tensor,
                           camera: torch.Tensor) -> torch.Tensor:
    """As ``densepose.project_surface_points``: ``(B, V, 3)``, ``(B, N, 3)`` ids / weights -> ``(B, N, 2)``."""
    b, n, _ = vertex_ids.shape
    corners = torch.gather(vertices, 1, vertex_ids.reshape(b, n * 3, 1).expand(-1, -1, 3)).reshape(b, n, 3, 3)
    surface = torch.einsum("bnk,bnkc->bnc", barycentric, corners)
    return weak_perspective_project(surface, camera)


def _batch_rescale(mask: torch.Tensor) -> torch.Tensor:
    total = mask.sum()
    return torch.where(total > 0, mask.shape[0] / torch.where(total > 0, total, 1.0), 0.0)


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(|pred - target| * weight * mask) * B / sum(mask)`` with masked points selected out."""
    weight = weight.clamp_min(0) * mask.clamp_min(0)[:, None]
    diff = torch.where(weight[..., None] > 0, pred - target, 0.0)
    return (diff.abs() * weight[..., None]).mean() * _batch_rescale(mask.clamp_min(0))


def rodrigues(pose: torch.Tensor) -> torch.Tensor:
    """``(B, 72)`` axis-angle -> ``(B, 24, 3, 3)`` rotation matrices (smplx's ``batch_rodrigues``)."""
    return batch_rodrigues(pose.reshape(-1, 3)).reshape(pose.shape[0], 24, 3, 3)


def smpl_loss(rotmats: torch.Tensor, target_pose: torch.Tensor, betas: torch.Tensor, target_betas: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """As ``losses.smpl_loss``: squared error of the rotation matrices ``(B, 24, 3, 3)`` of joints
    1..23 (against those of the axis-angle ``target_pose``) and the betas, masked and rescaled by
    ``B / sum(mask)``."""
    b = rotmats.shape[0]
    target = rodrigues(target_pose)
    diff = torch.cat([(rotmats[:, 1:] - target[:, 1:]).reshape(b, -1), betas - target_betas], dim=1)
    mask = mask.clamp_min(0)
    diff = torch.where(mask[:, None] > 0, diff, 0.0)
    return (diff * diff * mask[:, None]).mean() * _batch_rescale(mask)


def compute_losses(residual: torch.Tensor, batch: Mapping[str, torch.Tensor], body: TorchBody,
                   weights: losses.LossWeights, mean_params: torch.Tensor
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``train.compute_losses`` for the keypoint, SMPL and dense terms: ``(total, {term: value})``.

    Args:
      residual: ``(B, 85)`` the head's output.
      batch: the pipeline's fields as torch tensors (``keypoints``, ``keypoints_weight``,
        ``smpl_pose``, ``smpl_betas``, ``has_smpl``, ``dense_*``, ``has_dense``, ``valid``).
      body: the body model and keypoint layout.
      weights: loss weights; ``joints3d`` and ``keypoints3d`` must be 0 (not in this twin).
      mean_params: ``(85,)``.
    """
    if weights.joints3d or weights.keypoints3d:
        raise ValueError("the torch twin has no 3D joint terms (joints3d = keypoints3d = 0)")
    params = residual + mean_params
    camera, pose, betas = params[:, 0:3], params[:, 3:75].contiguous(), params[:, 75:85]
    rotmats = rodrigues(pose)  # once, for the body and the SMPL term (as train.compute_losses)
    vertices, joints = body.forward(rotmats, betas)
    valid = batch["valid"]
    terms = {}
    if weights.keypoint:
        kp2d = weak_perspective_project(body.keypoints(vertices, joints), camera)
        terms["keypoint"] = _masked_l1(kp2d, batch["keypoints"], batch["keypoints_weight"], valid)
    if weights.smpl:
        terms["smpl"] = smpl_loss(rotmats, batch["smpl_pose"], betas, batch["smpl_betas"], valid * batch["has_smpl"])
    if weights.dense:
        pred_xy = project_surface_points(vertices, batch["dense_vertex_ids"], batch["dense_barycentric"], camera)
        terms["dense"] = _masked_l1(pred_xy, batch["dense_xy"], batch["dense_weight"], valid * batch["has_dense"])
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms


def encode_inputs(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(B, H, W, 3)`` image and IUV -> float32 NCHW, as ``regressor.encode_image`` / ``encode_iuv``."""
    image = batch["image"].float() / 127.5 - 1.0
    scale = torch.tensor([1.0 / 24, 1.0 / 255, 1.0 / 255], device=image.device)
    iuv = (batch["iuv"].float() * scale - 0.5) * 2.0
    return (image.permute(0, 3, 1, 2).contiguous(), iuv.permute(0, 3, 1, 2).contiguous())


def to_torch(batch: Mapping[str, Any], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A pipeline batch (numpy) -> torch tensors (int ids as int64 for ``gather``)."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if key == "dense_vertex_ids":
            value = value.astype(np.int64)
        out[key] = torch.as_tensor(value, device=device)
    return out


class TorchTrainStep:
    """The twin of ``train.train_step``: forward, losses, backward and an Adam update."""

    def __init__(self, model: torch_resnet.TorchRegressor, body: TorchBody, weights: losses.LossWeights,
                 *, learning_rate: float = 1e-4, mean_params: np.ndarray | None = None):
        self.model, self.body, self.weights = model, body, weights
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        device = next(model.parameters()).device
        mean = regressor_lib.default_mean_params() if mean_params is None else mean_params
        self.mean_params = torch.as_tensor(np.asarray(mean, np.float32), device=device)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, terms)`` with BatchNorm in train mode (updates its running statistics)."""
        self.model.train()
        image, aux = encode_inputs(batch)
        return compute_losses(self.model(image, aux), batch, self.body, self.weights, self.mean_params)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step; returns the loss (before the update)."""
        self.optimizer.zero_grad(set_to_none=True)
        total, _ = self.loss(batch)
        total.backward()
        self.optimizer.step()
        return total.detach()

    def head_loss(self, features: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The part after the encoders: head on ``(B, F)`` features, body, projection, losses."""
        m = self.model
        residual = m.head_out(torch.relu(m.head_hidden(torch.relu(features))))
        return compute_losses(residual, batch, self.body, self.weights, self.mean_params)[0]


def regressor_variables(twin: torch_resnet.TorchRegressor, *, depth: int, aux_depth: int, width: int,
                        grads: bool = False) -> dict[str, Any]:
    """Our two-branch ``Regressor``'s variables from the twin (or, with ``grads``, its gradients as params)."""
    if grads:
        sd = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in twin.named_parameters()}
        sd.update({k: v for k, v in twin.state_dict().items() if "running" in k})
        sd = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in sd.items()}
    else:
        sd = torch_resnet.state_dict_numpy(twin)
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for prefix, d in (("image", depth), ("aux", aux_depth)):
        sub = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith(f"{prefix}_encoder.")}
        enc = convert.convert_state_dict(sub, d, width=width)
        variables["params"][f"{prefix}_encoder"] = enc["params"]
        variables["batch_stats"][f"{prefix}_encoder"] = enc["batch_stats"]
    for name in ("image_fc", "aux_fc", "head_hidden", "head_out"):
        variables["params"][name] = {"kernel": jnp.asarray(sd[f"{name}.weight"].T),
                                     "bias": jnp.asarray(sd[f"{name}.bias"])}
    return variables
