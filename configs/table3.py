r"""One cell of the paper's Table 3: ``--config=configs/table3.py:INPUT:SUPERVISION[:DATA]``.

The cell is spelled as the Table 3 runner's ``--cells`` spells it
(``image_iuv:3d_dense``); the older ``INPUT,SUPERVISION[,DATA]`` is accepted too.

INPUT: image | iuv | seg | image_iuv | image_seg (single-branch ResNet-101, or
ResNet-50 + ResNet-18 for two inputs, as the paper).
SUPERVISION: 3d_dense | 3d20_dense | 3d | dense | 2d: what the in-the-wild
records supervise ("3d20" keeps 3D labels on a fixed 20% of them, chosen by
record id; sparse 2D is always on).
DATA: synthetic (default: the synthetic in-the-wild set with the studio set as
its Human3.6M) or up3d (UP-3D with Human3.6M; build both, pass your SMPL model).

Every cell trains as the official code does (``default.apply_protocol``): the
3D source is in every batch (half of it) with its SMPL and 2D labels, SMPL and
keypoint loss weights 10 in every cell, dense 1 with in-the-wild 3D and 10 without.

    python run_train.py --config=configs/table3.py:image_iuv:3d_dense --workdir=/tmp/t3_image_iuv_3d_dense
"""

from __future__ import annotations

import re

from configs import default


def get_config(cell: str = "image_iuv:3d_dense"):
    parts = [p.strip() for p in re.split(r"[:,]", cell or "")]
    if len(parts) == 2:
        parts.append("synthetic")
    if (len(parts) != 3 or parts[0] not in default.INPUTS or parts[1] not in default.SUPERVISIONS
            or parts[2] not in default.PROTOCOL_SOURCES):
        raise ValueError(
            f"configs/table3.py takes INPUT:SUPERVISION[:DATA] with INPUT one of {sorted(default.INPUTS)}, "
            f"SUPERVISION one of {sorted(default.SUPERVISIONS)} and DATA one of "
            f"{sorted(default.PROTOCOL_SOURCES)}; got {cell!r}")
    inputs, supervision, data = parts
    config = default.get_config()
    config.model.inputs = inputs
    default.apply_protocol(config, supervision, data)
    if data == "synthetic":
        config.build_dataset_if_missing = True
    return config
