"""TFDS builder of the synthetic dataset: rendered bodies with every annotation.

Build (under a minute and a half on 2 CPU cores for the default 2,000 + 200 examples)::

    python -m datasets build synthetic --data_dir=D [--split_sizes=train=2000,test=200]

Read::

    import tensorflow_datasets as tfds
    source = tfds.data_source("synthetic", data_dir=D, split="train")  # no TensorFlow
    record = source[0]   # dict of numpy arrays / bytes, see dct_jax.data.schema

Examples come from ``dct_jax.synthetic.generate`` (the distributions are
documented there); nothing is downloaded and ``manual_dir`` is not used.
"""

from __future__ import annotations

import abc
import os
from typing import Any, ClassVar, Iterator, Mapping

import tensorflow_datasets as tfds

from datasets._common import Sized
from dct_jax import synthetic
from dct_jax.data import schema

DEFAULT_SPLIT_SIZES = {"train": 2000, "test": 200}
# Splits without vertices/joints (has_mesh False): training never needs them and
# they are 87 KB per record; pose and betas reproduce them exactly.
SPLITS_WITHOUT_MESH = ("train",)


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The part every builder of generated bodies shares (arguments, features, splits).

    A subclass sets ``VERSION``, ``RELEASE_NOTES`` and maybe
    :attr:`DEFAULT_SPLIT_SIZES`, and implements
    :meth:`_generate` with the contract of ``dct_jax.synthetic.generate``.
    """

    DEFAULT_SPLIT_SIZES: ClassVar[Mapping[str, int]] = DEFAULT_SPLIT_SIZES

    def __init__(self, *, split_sizes: Mapping[str, int] | None = None,
                 image_size: int = synthetic.DEFAULT_IMAGE_SIZE, seed: int = 0,
                 num_workers: int | None = None, file_format: str | None = None, **kwargs: Any):
        """Args as ``tfds.core.GeneratorBasedBuilder``, plus what to generate.

        Args:
          split_sizes: ``{split: number of examples}``, each at least 1 (TFDS
            cannot write an empty split: leave a split out instead); default
            :data:`DEFAULT_SPLIT_SIZES`.
          image_size: crop side in pixels.
          seed: dataset seed (example ``i`` of a split is a function of
            ``(seed, split, i)``).
          num_workers: rendering processes (default: the CPU count, at most
            8); the records do not depend on it.
          file_format: default ``"array_record"`` (TFDS's default, tfrecord,
            needs TensorFlow to write).
          **kwargs: e.g. ``data_dir``.

        Raises:
          ValueError: no split, a count below 1, or ``image_size`` below 16.
        """
        sizes = dict(self.DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
        bad = {k: v for k, v in sizes.items() if not (isinstance(v, int) and v >= 1)}
        if not sizes or bad:
            raise ValueError(f"split_sizes must map split names to counts >= 1, got {sizes} (TFDS cannot write "
                             "an empty split: leave the split out)")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self._split_sizes, self._image_size, self._seed = sizes, int(image_size), int(seed)
        self._num_workers = int(num_workers) if num_workers else min(os.cpu_count() or 1, 8)
        super().__init__(file_format=file_format or "array_record", **kwargs)

    @property
    def split_sizes(self) -> dict[str, int]:
        """``{split: number of examples}`` this builder generates."""
        return dict(self._split_sizes)

    def _log_download_bytes(self) -> None:
        """What is being built (TFDS would say "Downloading and preparing ... Unknown size": nothing is downloaded)."""
        sizes = " + ".join(f"{count} {split}" for split, count in self._split_sizes.items())
        print(f"Generating dataset {self.name} here (nothing is downloaded): {sizes} records of "
              f"{self._image_size}x{self._image_size} pixels into {self.data_dir}", flush=True)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=schema.features(),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        body = synthetic.load_body()
        return {split: Sized(self._generate_examples(split, n, body), n)
                for split, n in self._split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int, body: synthetic.Body):
        yield from self._generate(
            split, num_examples, seed=self._seed, size=self._image_size, body=body,
            with_mesh=split not in SPLITS_WITHOUT_MESH, workers=self._num_workers)

    @abc.abstractmethod
    def _generate(self, split: str, num_examples: int, *, seed: int, size: int,
                  body: synthetic.Body, with_mesh: bool,
                  workers: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(record_id, record)`` of examples ``0 .. num_examples - 1`` of ``split``."""


class Builder(GeneratedBuilder):
    """Synthetic people rendered from the free default body (dct_jax.synthetic)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: default body, cocoplus19 keypoints, COCO-DensePose dense "
                 "keypoints, IUV and part maps, pose/shape/camera, mesh in non-train splits.",
    }

    def _generate(self, split, num_examples, **kwargs):
        return synthetic.generate(split, num_examples, **kwargs)
