r"""Ours-3D (paper Table 5): two-branch image + IUV trained with paired 3D labels and sparse 2D.

As ``ours_dc.py`` but supervised by SMPL parameters (rotation matrices of
joints 1-23 and betas, weight 10) and 2D keypoints (weight 10), no dense loss.

    python run_train.py --config=configs/ours_3d.py --workdir=/tmp/ours_3d
"""

from __future__ import annotations

from configs import default


def get_config():
    config = default.get_config()
    config.model.inputs = "image_iuv"
    default.apply_supervision(config, "3d")
    return config
