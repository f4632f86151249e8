r"""Quickstart: a small network trained on the embedded synthetic data, in minutes on a laptop CPU.

    python run_train.py --config=configs/quickstart.py --workdir=/tmp/dct_quickstart

Builds the synthetic dataset (2,000 train + 200 test records of the free default
body) into ``data_dir`` first if it is missing (about a minute), then trains a
single-branch ResNet-10 (width 16) on the IUV input at 112x112 with 3D + dense +
2D supervision (the SMPL term weighted 100, see below) and prints the evaluation table (official protocol; the
mean-parameter baseline beside it). On a 2-core CPU the whole command takes
under 10 minutes.
"""

from __future__ import annotations

from configs import default


def get_config():
    config = default.get_config()
    config.build_dataset_if_missing = True
    config.batch_size = 32
    config.eval_batch_size = 50
    # The error falls with the examples seen (1,200 steps: PVE 143.4 mm, 1,800: 138.8-139.9, 2,400: 135.3; seed 0,
    # 2026-12-06/07); 1,800 fit in the 10 minutes since the input pipeline keeps the decoded records.
    config.num_train_steps = 1800
    config.learning_rate = 1e-3
    config.end_learning_rate = 1e-4
    config.log_every_steps = 100
    config.image_summary_every_steps = 1000
    config.eval_every_steps = 0  # only after the last step
    config.checkpoint_every_steps = 500

    config.data.image_size = 112
    config.data.num_dense = 150
    config.data.refine_iuv = False  # the synthetic IUV maps are exact
    config.data.scale_jitter = 0.25  # strong augmentation: the 2,000 records are seen ~29 times
    config.data.translate_jitter = 0.1
    config.data.flip_prob = 0.5

    config.model.inputs = "iuv"
    config.model.depth = 10
    config.model.width = 16
    config.model.feature_dim = 256
    config.model.hidden_dim = 512
    default.apply_supervision(config, "3d_dense")
    # The official protocol scores the local pose (global rotations zeroed), which only the SMPL term
    # supervises directly; keypoints and dense points fit the camera-frame body. Weighing the SMPL term
    # 100 instead of the paper's 10 turned that fit into PVE (1,200 steps, seed 0: PVE 155.1 -> 148.9 at
    # 30 -> 143.4 at 100, 2026-12-06). The paper's configs keep the paper's weights.
    config.loss.smpl = 100.0
    return config
