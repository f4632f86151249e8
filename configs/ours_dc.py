r"""Ours-DC (paper Table 5): two-branch image + IUV, dense correspondence + sparse 2D, no 3D labels.

ResNet-50 (image) + ResNet-18 (IUV) at 224x224, batch 128, Adam 1e-4 with cosine
decay, 20 epochs, flip and scale augmentation, loss weights keypoint 10 and
dense 10 (the official weights without 3D supervision).

    python run_train.py --config=configs/ours_dc.py --workdir=/tmp/ours_dc \
        [--config.dataset=up3d --config.smpl_path=SMPL_NEUTRAL.pkl]

On the synthetic default data (2,000 records) 20 epochs are 312 steps; on this
2-core CPU a step of batch 128 takes about a minute (see the README's speeds),
so use a GPU/TPU or --config.batch_size=16 for a local try.
"""

from __future__ import annotations

from configs import default


def get_config():
    config = default.get_config()
    config.model.inputs = "image_iuv"
    default.apply_supervision(config, "dense")
    return config
