r"""Hybrid annotations as the paper trains: UP-3D + COCO-DensePose + Human3.6M in every batch.

Each batch mixes records of the three datasets (``config.train_mixture``); the
losses use what each record has (the ``has_*`` flags): SMPL labels and 2D
keypoints on UP-3D, dense keypoints and 2D keypoints on COCO-DensePose, 3D
motion-capture keypoints (and SMPL fits if your Human3.6M files have them) on
Human3.6M. Evaluation is on UP-3D's test split with the official protocol.

    python run_train.py --config=configs/mixed.py --workdir=W --config.smpl_path=SMPL_NEUTRAL.pkl \
        [--config.train_mixture=up3d:trainval=1,coco_densepose:train=1,h36m:train=1]

The paper does not state mixing ratios; equal weights are the default. The
model takes the photo alone by default, because records carry IUV maps only
when built with ``--iuv_dir`` (DensePose's predictions, which you make); with
them, set ``--config.model.inputs=image_iuv``.
"""

from __future__ import annotations

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = "up3d"
    config.eval_split = "test"
    config.train_mixture = "up3d:trainval=1,coco_densepose:train=1,h36m:train=1"
    config.model.inputs = "image"
    default.apply_supervision(config, "3d_dense")
    config.num_train_steps = 20 * (7126 + 26151 + 312188 // 10) // 128
    return config
