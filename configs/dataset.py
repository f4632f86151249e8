r"""Train or evaluate on one real dataset by name: ``--config=configs/dataset.py:NAME``.

NAME: up3d | coco_densepose | pw3d | h36m (build it first with ``python -m
datasets build NAME --manual_dir=M --data_dir=D``). Each sets the dataset's
splits; its evaluation protocol follows from the name (``dct_jax/protocols.py``,
``docs/evaluation.md``). The records are annotated on SMPL, so pass the model:

    python run_train.py --config=configs/dataset.py:up3d --workdir=W --config.smpl_path=SMPL_NEUTRAL.pkl

    python run_eval.py --workdir=W --set=dataset=pw3d \
        --set=eval.j_regressor_h36m_path=J_regressor_h36m.npy \
        --set=eval.smpl_male_path=SMPL_MALE.pkl --set=eval.smpl_female_path=SMPL_FEMALE.pkl

The model takes the photo alone (ResNet-101) with the supervision the dataset
has; override anything on the command line. The builders do not make IUV maps
(DensePose predictions), so the paper's image + IUV models
(``--config.model.inputs=image_iuv``) need records that carry them: build
with ``--iuv_dir`` holding DensePose's ``<image>_IUV.png`` maps (docs/evaluation.md).
"""

from __future__ import annotations

from configs import default

# name -> (train split, eval split, supervision, steps: about 20 epochs at batch 128 from the
# approximate record counts of the train splits; set --config.num_train_steps for yours)
DATASETS = {
    "up3d": ("trainval", "test", "3d", 20 * 7126 // 128),
    "coco_densepose": ("train", "minival", "dense", 20 * 26151 // 128),
    "pw3d": ("train", "test", "3d", 20 * 22735 // 128),
    "h36m": ("train", "valid_protocol2", "3d", 20 * 312188 // 128),
}


def get_config(name: str = "up3d"):
    name = (name or "").strip()
    if name not in DATASETS:
        raise ValueError(f"configs/dataset.py takes a dataset name, one of {sorted(DATASETS)}; got {name!r}")
    train_split, eval_split, supervision, steps = DATASETS[name]
    config = default.get_config()
    config.dataset = name
    config.train_split = train_split
    config.eval_split = eval_split
    config.num_train_steps = steps
    config.model.inputs = "image"
    default.apply_supervision(config, supervision)
    return config
