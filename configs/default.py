r"""The paper's training setup (DCT, Rong et al. ICCV 2019; official code defaults).

Every experiment config imports this and overrides what differs. Fields that
scripts rely on (DESIGN.md, "Interfaces"): ``seed``, ``dataset``, ``data_dir``,
``batch_size`` (global), ``num_train_steps``, ``learning_rate``,
``eval_every_steps``, ``checkpoint_every_steps``, ``model``. Any field can be
overridden on the command line, e.g. ``--config.num_train_steps=100``.

    python run_train.py --config=configs/default.py --workdir=/tmp/dct
"""

from __future__ import annotations

import ml_collections

from dct_jax.state import MODEL_INPUTS

# Table 3's supervision settings -> (3D labels kept on this fraction of the in-the-wild
# records, in-the-wild 3D labels used, dense loss on). Official weights: keypoint 10,
# 3D 10, dense 1 with in-the-wild 3D supervision and 10 without.
SUPERVISIONS = {
    "3d_dense": (1.0, True, True),
    "3d20_dense": (0.2, True, True),
    "3d": (1.0, True, False),
    "dense": (1.0, False, True),
    "2d": (1.0, False, False),
}
# Table 3's inputs (config.model.inputs) -> (main branch input, auxiliary branch input or None).
INPUTS = MODEL_INPUTS


# The paper's protocol (official code, compose_dataset.py): every training run adds
# Human3.6M, sized to the other training sets, beside the in-the-wild data.
# In-the-wild data name -> (its training source, the 3D source, evaluation dataset,
# in-the-wild training records).
PROTOCOL_SOURCES = {
    "synthetic": ("synthetic:train", "studio:train", "synthetic", 2000),  # studio: the Human3.6M stand-in
    "up3d": ("up3d:trainval", "h36m:train", "up3d", 7126),
}


def _check_supervision(supervision: str) -> tuple[float, bool, bool]:
    if supervision not in SUPERVISIONS:
        raise ValueError(f"unknown supervision {supervision!r}; expected one of {sorted(SUPERVISIONS)}")
    return SUPERVISIONS[supervision]


def apply_protocol(config: ml_collections.ConfigDict, supervision: str, data: str = "synthetic",
                   wild_2d: str = "2d") -> None:
    """The paper's training protocol for a Table 3 supervision setting (the official code's).

    Two sources, drawn 1:1 (``config.train_mixture``): the in-the-wild one
    (synthetic or UP-3D) with 2D keypoints, dense keypoints if the setting has
    them, and its 3D labels on all, a fixed 20% (by record id) or none of its
    records; and the 3D source (studio or Human3.6M) with its SMPL and 2D
    labels in every setting. Loss weights as ``train_up3d_img_dp.sh`` and
    ``train_up3d_img_3d_dp.sh``: SMPL 10 and keypoints 10 always, dense 1 with
    in-the-wild 3D and 10 without; no 3D-joint loss (the official code has none).
    Steps: 20 epochs of both sources at ``config.batch_size``. ``wild_2d`` is the
    in-the-wild source's 2D label (e.g. ``"2d=lsp14,2d_noise=1"``: LSP's 14 joints
    with annotator-like noise, as UP-3D's; see ``pipeline.MixtureSource``).
    """
    fraction, use_3d, use_dense = _check_supervision(supervision)
    if data not in PROTOCOL_SOURCES:
        raise ValueError(f"unknown protocol data {data!r}; expected one of {sorted(PROTOCOL_SOURCES)}")
    wild, lab, eval_dataset, wild_records = PROTOCOL_SOURCES[data]
    if wild_2d.split("=")[0] != "2d":
        raise ValueError(f"wild_2d must be the 2d label with its options (e.g. 2d=lsp14,2d_noise=1), got {wild_2d!r}")
    labels = [wild_2d] + (["dense"] if use_dense else [])
    if use_3d:
        labels.append("3d" if fraction >= 1 else f"3d={fraction:g}")
    config.supervision = supervision
    config.dataset = eval_dataset
    config.train_mixture = f"{wild}=1[{','.join(labels)}],{lab}=1[2d,3d]"
    config.data.smpl_fraction = 1.0  # the per-source labels decide
    config.loss.keypoint = 10.0
    config.loss.smpl = 10.0
    config.loss.joints3d = 0.0
    config.loss.keypoints3d = 0.0
    config.loss.dense = (1.0 if use_3d else 10.0) if use_dense else 0.0
    config.num_train_steps = 20 * 2 * wild_records // config.batch_size


def apply_supervision(config: ml_collections.ConfigDict, supervision: str) -> None:
    """A Table 3 supervision setting on ``config.dataset`` alone (no 3D source; the quickstart's).

    Without 3D the SMPL and 3D-joint losses are off; see :func:`apply_protocol`
    for the paper's protocol.
    """
    fraction, use_3d, use_dense = _check_supervision(supervision)
    config.supervision = supervision
    config.data.smpl_fraction = fraction
    config.loss.keypoint = 10.0
    config.loss.smpl = 10.0 if use_3d else 0.0
    config.loss.joints3d = 10.0 if use_3d else 0.0
    config.loss.keypoints3d = 10.0 if use_3d else 0.0
    config.loss.dense = (1.0 if use_3d else 10.0) if use_dense else 0.0


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # A builder name of datasets/ (python -m datasets list) or a built directory D/NAME/VERSION.
    config.dataset = "synthetic"
    config.data_dir = "~/tensorflow_datasets"
    config.train_split = "train"
    # Train on several datasets at once: "NAME[:SPLIT][=WEIGHT][[LABEL,...]],..." (e.g. configs/mixed.py);
    # LABELS (2d, dense, 3d or 3d=FRACTION) say what a source's records supervise, all they have
    # without brackets (apply_protocol). "" trains on config.dataset's train_split.
    # Evaluation always uses config.dataset.
    config.train_mixture = ""
    config.eval_split = "test"
    # Build the generated datasets the config reads (synthetic, studio) into data_dir when missing.
    config.build_dataset_if_missing = False
    config.build_split_sizes = ml_collections.ConfigDict({"train": 2000, "test": 200})
    # The body model of the dataset's records: None = the free default body;
    # a path = an SMPL .pkl/.npz (real datasets are annotated on SMPL).
    config.smpl_path = ml_collections.FieldReference(None, field_type=str)

    config.batch_size = 128  # global, over all devices and hosts
    # Shard parameters and optimizer state over the devices (FSDP) instead of replicating them.
    config.fsdp = False
    config.eval_batch_size = 64
    config.num_train_steps = 20 * 2000 // 128  # paper: 20 epochs (of the dataset in use)
    # Start from another run's network (e.g. pretraining): its workdir, checkpoints/ or one step;
    # the optimizer starts afresh. Used only when the workdir has no checkpoint yet.
    config.init_from = ml_collections.FieldReference(None, field_type=str)
    config.optimizer = "adam"  # the paper's; or "sgd" (with config.sgd_momentum)
    config.sgd_momentum = 0.9
    config.learning_rate = 1e-4
    config.end_learning_rate = 0.0  # cosine decay to this
    config.warmup_steps = 0
    config.grad_clip_norm = 0.0  # 0 = no clipping (as the official code)

    config.log_every_steps = 50
    config.image_summary_every_steps = 500  # 0 = never
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 500
    config.max_checkpoints_to_keep = 3
    # A non-finite loss or gradient skips the update; this many in a row stop the run.
    config.max_consecutive_nonfinite = 20
    # Stop when more than this fraction of the records read so far are unusable.
    config.max_skipped_fraction = 0.5

    config.data = ml_collections.ConfigDict()
    config.data.image_size = 224
    config.data.num_dense = 400  # official dp_num_max
    config.data.dense_source = "auto"  # annotation | iuv | auto | none
    config.data.refine_iuv = True
    # Training only: keep this fraction of each record's dense keypoints (a fixed subset; paper Fig. 6),
    # and add Gaussian noise of this std (0-255 scale) to the U, V they come from (fixed per record; Fig. 5).
    config.data.dense_keep = 1.0
    config.data.dense_uv_noise = 0.0
    # Turn every record's IUV map into a DensePose-like prediction (dct_jax/iuv_errors.py; all 0: the map
    # as stored), in training and evaluation; docs/iuv_errors.md gives DensePose-like levels.
    config.data.iuv_errors = ml_collections.ConfigDict(
        {"part_swap": 0.0, "boundary_shift": 0.0, "blobs": 0.0, "blob_size": 0.0, "uv_noise": 0.0})
    config.data.smpl_fraction = 1.0
    # Each example's keypoint and dense weights x (slots / points it has), as the official loader.
    config.data.normalize_point_weights = True
    config.data.scale_jitter = 0.2
    config.data.translate_jitter = 0.1
    config.data.flip_prob = 0.5
    config.data.workers = 0  # grain worker processes (0: in the training process)
    config.data.threads = 4  # grain read/prefetch threads per process
    # Training records kept read, checked and decoded in memory, per source and process (each worker its own):
    # the work is then done once per record, not once per epoch. Same examples; 0 turns it off.
    config.data.cache_mb = 1024

    config.model = ml_collections.ConfigDict()
    config.model.inputs = "image_iuv"  # image | iuv | seg | image_iuv | image_seg
    config.model.depth = ml_collections.FieldReference(None, field_type=int)  # None: 101 single, 50 two-branch
    config.model.aux_depth = 18
    config.model.width = 64
    config.model.feature_dim = 1024
    config.model.hidden_dim = 1024
    config.model.dtype = "float32"  # or bfloat16 (parameters stay float32)
    # torchvision-format ImageNet weights (.safetensors or .pth) for the encoders; nothing is downloaded.
    config.model.init_image_from = ml_collections.FieldReference(None, field_type=str)
    config.model.init_aux_from = ml_collections.FieldReference(None, field_type=str)
    # HMR's neutral_smpl_mean_params.h5 (or .npz); None: zero pose and betas.
    config.model.mean_params_path = ml_collections.FieldReference(None, field_type=str)

    # Evaluation protocol (dct_jax/protocols.py, docs/evaluation.md): "auto" picks the
    # dataset's (official for UP-3D/synthetic, pw3d, h36m, dense for COCO-DensePose).
    config.eval = ml_collections.ConfigDict()
    config.eval.protocol = "auto"
    # SPIN's J_regressor_h36m.npy (17, 6890): 3DPW / Human3.6M joints as SPIN; None: SMPL's
    # 24 joints (3DPW) or the body's cocoplus19 keypoints (Human3.6M).
    config.eval.j_regressor_h36m_path = ml_collections.FieldReference(None, field_type=str)
    # SMPL male and female models: 3DPW's ground truth through the actor's gendered
    # model (SPIN's convention); None: through the run's neutral model (VIBE's).
    config.eval.smpl_male_path = ml_collections.FieldReference(None, field_type=str)
    config.eval.smpl_female_path = ml_collections.FieldReference(None, field_type=str)

    config.loss = ml_collections.ConfigDict()
    config.loss.keypoint = 10.0
    config.loss.smpl = 10.0
    config.loss.joints3d = 10.0
    # cocoplus19 3D keypoints of records that have them (Human3.6M motion capture), pelvis-aligned.
    config.loss.keypoints3d = 10.0
    config.loss.dense = 1.0
    # Also supervise 3D joints with the joints of records' ground-truth SMPL
    # parameters (the official code uses joints only where a dataset has them).
    config.loss.joints3d_from_smpl = False
    config.supervision = "3d_dense"
    apply_supervision(config, "3d_dense")
    return config
