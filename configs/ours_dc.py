r"""Ours-DC (paper Table 5): two-branch image + IUV, dense correspondence + sparse 2D, no 3D labels.

ResNet-50 (image) + ResNet-18 (IUV) at 224x224, batch 128, Adam 1e-4 with cosine
decay, 20 epochs, flip and scale augmentation. The official protocol
(``default.apply_protocol``): the in-the-wild records supervise with 2D and dense
keypoints only, the 3D source (studio, the Human3.6M stand-in; Human3.6M on real
data) with SMPL and 2D labels, half of every batch; loss weights keypoint 10,
SMPL 10, dense 10 (the official weights without in-the-wild 3D).

    python run_train.py --config=configs/ours_dc.py --workdir=/tmp/ours_dc
    python run_train.py --config=configs/ours_dc.py:up3d --workdir=/tmp/ours_dc --config.smpl_path=SMPL_NEUTRAL.pkl

On the synthetic default data (2,000 + 2,000 studio records) 20 epochs are 625
steps; on this 2-core CPU a step of batch 128 takes about a minute (see the
README's speeds), so use a GPU/TPU or --config.batch_size=16 for a local try.
"""

from __future__ import annotations

from configs import default


def get_config(data: str = "synthetic"):
    config = default.get_config()
    config.model.inputs = "image_iuv"
    default.apply_protocol(config, "dense", (data or "synthetic").strip())
    config.build_dataset_if_missing = config.dataset == "synthetic"
    return config
