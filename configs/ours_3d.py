r"""Ours-3D (paper Table 5): two-branch image + IUV trained with paired 3D labels and sparse 2D.

As ``ours_dc.py`` but the in-the-wild records also supervise with their SMPL
parameters (rotation matrices of joints 1-23 and betas, weight 10), no dense loss;
the 3D source (studio / Human3.6M) is in every batch as in every paper run.

    python run_train.py --config=configs/ours_3d.py --workdir=/tmp/ours_3d
    python run_train.py --config=configs/ours_3d.py:up3d --workdir=/tmp/ours_3d --config.smpl_path=SMPL_NEUTRAL.pkl
"""

from __future__ import annotations

from configs import default


def get_config(data: str = "synthetic"):
    config = default.get_config()
    config.model.inputs = "image_iuv"
    default.apply_protocol(config, "3d", (data or "synthetic").strip())
    config.build_dataset_if_missing = config.dataset == "synthetic"
    return config
