"""TFDS builder of the studio dataset: a motion-capture studio of generated people (a Human3.6M stand-in).

Build (about as long as the synthetic dataset for the default 2,000 + 200 examples)::

    python -m datasets build studio --data_dir=D [--split_sizes=train=2000,test=200]

Read::

    import tensorflow_datasets as tfds
    source = tfds.data_source("studio", data_dir=D, split="train")  # no TensorFlow
    record = source[0]   # dict of numpy arrays / bytes, see dct_jax.data.schema

Examples come from ``dct_jax.studio.generate`` (subjects, cameras, actions and
every distribution are documented there): split ``train`` holds subjects S1-S5,
any other split the held-out S6 and S7. Nothing is downloaded and ``manual_dir``
is not used.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from datasets.synthetic import synthetic_dataset_builder
from dct_jax import studio

# As large as the synthetic (in-the-wild) dataset by default: the official code adds
# Human3.6M sized to the total of the other training sets (DESIGN.md, "Human3.6M in every run").
DEFAULT_SPLIT_SIZES = dict(synthetic_dataset_builder.DEFAULT_SPLIT_SIZES)


class Builder(synthetic_dataset_builder.GeneratedBuilder):
    """People of seven fixed subjects seen by four fixed studio cameras (dct_jax.studio)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: default body, subjects S1-S5 (train) and S6-S7 (other splits), "
                 "four cameras, nine actions; cocoplus19 2D and 3D keypoints, IUV and part maps, "
                 "pose/shape/camera, mesh in non-train splits; no dense keypoints.",
    }
    DEFAULT_SPLIT_SIZES = DEFAULT_SPLIT_SIZES

    def _generate(self, split, num_examples, **kwargs):
        return studio.generate(split, num_examples, **kwargs)
