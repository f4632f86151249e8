r"""One cell of the paper's Table 3: ``--config=configs/table3.py:INPUT,SUPERVISION``.

INPUT: image | iuv | seg | image_iuv | image_seg (single-branch ResNet-101, or
ResNet-50 + ResNet-18 for two inputs, as the paper).
SUPERVISION: 3d_dense | 3d20_dense | 3d | dense | 2d ("3d20" keeps 3D labels on
a fixed 20% of the records, chosen by record id; sparse 2D is always on).

    python run_train.py --config=configs/table3.py:image_iuv,3d_dense --workdir=/tmp/t3_image_iuv_3d_dense
"""

from __future__ import annotations

from configs import default


def get_config(cell: str = "image_iuv,3d_dense"):
    parts = [p.strip() for p in (cell or "").split(",")]
    if len(parts) != 2 or parts[0] not in default.INPUTS or parts[1] not in default.SUPERVISIONS:
        raise ValueError(
            f"configs/table3.py takes INPUT,SUPERVISION with INPUT one of {sorted(default.INPUTS)} and "
            f"SUPERVISION one of {sorted(default.SUPERVISIONS)}; got {cell!r}")
    inputs, supervision = parts
    config = default.get_config()
    config.model.inputs = inputs
    default.apply_supervision(config, supervision)
    return config
