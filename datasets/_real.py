"""The base of the real-dataset builders (up3d, coco_densepose, pw3d, h36m, and yours).

A builder keeps only its format: which files each split reads (:meth:`RealBuilder._find_splits`)
and how one example becomes a record (:meth:`RealBuilder._examples`). :class:`RealBuilder` owns
what they all share:

  * the constructor arguments and their checks: ``manual_dir``, ``splits``, ``iuv_dir`` and the
    body-model files of ``BODY_MODELS`` (``smpl_path``; 3DPW's gendered ``smpl_male_path``,
    ``smpl_female_path``); ``inspect.signature(Builder)`` shows just the ones a builder takes,
    which is how ``python -m datasets build`` knows which flags it accepts;
  * the manual directory and the "what to download, where it goes" message;
  * partial downloads: a build makes every split whose files are there and says in one line
    (absl WARNING, and ``metadata["missing_splits"]``) which splits it leaves out and what each
    lacks; ``splits=(...)`` builds only those and requires them;
  * ``DatasetInfo`` and the metadata of sources and skips (``source``, the model paths,
    ``iuv_dir``, per split ``listed``, ``num_skipped``, ``skipped``, ``with_iuv``, ``no_iuv`` and
    the median/max of the builder's ``MEASURES``);
  * skips: each one logged with its reason and listed; a per-split summary;
  * empty splits: a split whose every record is skipped is not written (TFDS cannot write an empty
    split); it is reported with the number read and the top skip reasons
    (``metadata["empty_splits"]``, absl ERROR), the other splits are written; if every split is
    empty, :class:`datasets.EmptySplitsError` and nothing is written;
  * the progress bar (TFDS's, with the split's listed count as total) and the body models.

datasets/README.md ("Writing a builder") walks through a new one.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from datasets import EmptySplitsError, empty_split_message, is_split_name
from datasets._common import NAMED, PosedBody, check_iuv_body, iuv_directory, model_file, some
from dct_jax.data import schema

BODY_MODEL_ARGS = ("smpl_path", "smpl_male_path", "smpl_female_path")
TOP_REASONS = 3  # skip reasons an empty split's report names


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """One split's files, as :meth:`RealBuilder._find_splits` found them.

    Attributes:
      source: what :meth:`RealBuilder._examples` reads; ``len(source)`` is the number of examples
        the split lists (the progress bar's total).
      load: instead of ``source``, a function that reads it (called when the split is written and
        freed after, e.g. a large annotation file).
      missing: what the split lacks, one problem each (a file or folder, and where it comes from);
        a split with any is not built.
    """

    source: Any = None
    load: Callable[[], Any] | None = None
    missing: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Example:
    """A converted example: its TFDS key, its record, and ``notes`` holding the builder's ``MEASURES``."""

    key: str | int
    record: dict[str, Any]
    notes: Any = None


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An example that is not written: ``label`` names it in the log, ``entry`` in ``metadata["skipped"]``."""

    label: str
    reason: str
    entry: Mapping[str, Any]


class _EmptySplit(Exception):  # noqa: N818  (a signal between the split's generator and the build loop)
    def __init__(self, report: dict[str, Any]):
        super().__init__(report)
        self.report = report


class _LazySplit:
    """A split's examples with a length; the split's files are read on first use and freed after."""

    def __init__(self, files: SplitFiles, generate: Callable[[Any], Iterator[tuple[Any, dict[str, Any]]]]):
        self._files, self._generate = files, generate
        self._source: Any = None
        self._length: int | None = None

    def _get(self) -> Any:
        if self._source is None:
            self._source = self._files.load() if self._files.load else self._files.source
            self._length = len(self._source)
        return self._source

    def __len__(self) -> int:
        return len(self._get()) if self._length is None else self._length

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        # A generator, so nothing is read until the first example is asked for (tqdm.asyncio
        # calls iter() once more than it iterates).
        try:
            yield from self._generate(self._get())
        finally:
            self._source = None


def reason_group(reason: str) -> str:
    """``reason`` with the words that name one file or number (any with a digit or ``/``) as ``#``."""
    return re.sub(r"\S*[\d/]\S*", "#", reason)


@dataclasses.dataclass
class _Tally:
    """What one split's generation counted."""

    records: int = 0
    num_skipped: int = 0
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    named: list[str] = dataclasses.field(default_factory=list)  # "label (reason)" of each skip, for the log
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_reason: dict[str, str] = dataclasses.field(default_factory=dict)
    iuv: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    measures: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))

    def skip(self, item: Skipped, limit: int | None) -> None:
        self.num_skipped += 1
        if limit is None or len(self.skipped) < limit:
            self.skipped.append({**item.entry, "reason": item.reason})
        if len(self.named) < NAMED:
            self.named.append(f"{item.label} ({item.reason})")
        group = reason_group(item.reason)
        self.reasons[group] += 1
        self.first_reason.setdefault(group, item.reason)

    def keep(self, item: Example, measures: Sequence[str]) -> None:
        self.records += 1
        self.iuv["with_iuv" if item.record["has_iuv"] else "no_iuv"] += 1
        for key in measures:
            value = getattr(item.notes, key, None)
            if value is not None:
                self.measures[key].append(value)


class RealBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder of a dataset downloaded by hand into ``manual_dir``.

    A subclass (``class Builder`` in ``datasets/NAME/NAME_dataset_builder.py``) sets ``VERSION``,
    ``RELEASE_NOTES``, ``MANUAL_DOWNLOAD_INSTRUCTIONS`` and the class attributes below, and
    implements :meth:`_find_splits` and :meth:`_examples`; it may add metadata
    (:meth:`_metadata`, :meth:`record_split`).
    """

    DATASET: ClassVar[str]  # the dataset's name in messages, e.g. "UP-3D"
    HOMEPAGE: ClassVar[str]
    SOURCE: ClassVar[str | None] = None  # metadata["source"]; default HOMEPAGE
    SPLITS: ClassVar[tuple[str, ...]] = ()  # the dataset's splits in build order; () when its files name them
    BODY_MODELS: ClassVar[tuple[str, ...]] = ("smpl_path",)  # which of BODY_MODEL_ARGS it takes
    MEASURES: ClassVar[tuple[str, ...]] = ()  # float attributes of Example.notes: median and max per split
    UNIT: ClassVar[str] = "records"  # what the dataset lists, in the log ("images", "rows")
    MAX_LISTED_SKIPS: ClassVar[int | None] = None  # cap on metadata["skipped"][split] (+ "skipped_not_listed")

    def __init_subclass__(cls, **kwargs: Any):
        """Gives the subclass the signature of the arguments it takes (its ``BODY_MODELS`` only)."""
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.BODY_MODELS) - set(BODY_MODEL_ARGS))
        if unknown:
            raise TypeError(f"{cls.__qualname__}.BODY_MODELS: {unknown} are not among {BODY_MODEL_ARGS}")
        signature = inspect.signature(RealBuilder.__init__)
        cls.__signature__ = signature.replace(parameters=[
            p for name, p in signature.parameters.items()
            if name != "self" and (name not in BODY_MODEL_ARGS or name in cls.BODY_MODELS)])

    def __init__(self, *, manual_dir: str | os.PathLike | None = None, splits: Sequence[str] | None = None,
                 iuv_dir: str | os.PathLike | None = None, smpl_path: str | os.PathLike | None = None,
                 smpl_male_path: str | os.PathLike | None = None,
                 smpl_female_path: str | os.PathLike | None = None, file_format: str | None = None,
                 **kwargs: Any):
        """Args as ``tfds.core.GeneratorBasedBuilder``, plus:

        Args:
          manual_dir: the extracted archives (see ``MANUAL_DOWNLOAD_INSTRUCTIONS``); overrides the
            download config's ``manual_dir`` (``python -m datasets build NAME --manual_dir=M``).
          splits: the splits to build, which must then all be there; default: every split whose
            files are there (one line of log names the others and what they lack).
          iuv_dir: a folder of DensePose IUV maps, ``<image name>_IUV.png`` (Detectron's naming);
            records of images with a map hold it (``has_iuv``), the others are counted in
            ``metadata["no_iuv"]`` (where the builder looks: its README).
          smpl_path, smpl_male_path, smpl_female_path: body-model files (SMPL ``.pkl``/``.npz``),
            those of ``BODY_MODELS`` only: records then also hold the posed mesh.
          file_format: default ``"array_record"`` (tfrecord needs TensorFlow).
          **kwargs: e.g. ``data_dir``.

        Raises:
          TypeError: a body-model file for a builder that takes none of that kind.
          FileNotFoundError: a body-model path that is not a file.
          NotADirectoryError: ``iuv_dir`` is not a directory.
          ValueError: ``splits`` empty, repeated, or not split names of the dataset.
        """
        given = {"smpl_path": smpl_path, "smpl_male_path": smpl_male_path, "smpl_female_path": smpl_female_path}
        extra = [name for name, path in given.items() if path is not None and name not in self.BODY_MODELS]
        if extra:
            raise TypeError(f"{self.name} takes no {extra[0]} (its body-model arguments: "
                            f"{', '.join(self.BODY_MODELS) or 'none'})")
        self.model_paths = {name: model_file(given[name], name) for name in self.BODY_MODELS}
        self.iuv_dir = iuv_directory(iuv_dir)
        self.requested_splits = self._check_splits(splits)
        self._manual_dir_arg = self.manual_dir = None if manual_dir is None else os.fspath(manual_dir)
        self._bodies: dict[str, PosedBody] = {}
        self._generating: tuple[str, SplitFiles] | None = None
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _check_splits(self, splits: Sequence[str] | None) -> tuple[str, ...] | None:
        if splits is None:
            return None
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        known = self.SPLITS or "TFDS split names (lowercase letters, digits and _)"
        wrong = [s for s in splits if (s not in self.SPLITS if self.SPLITS else not is_split_name(s))]
        if not splits or wrong or len(set(splits)) != len(splits):
            raise ValueError(f"splits must be distinct names among {known}, got {splits}")
        return splits

    # ------------------------------------------------------------------------- what a builder implements

    @abc.abstractmethod
    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        """Each split's files in ``manual_dir`` (an existing directory), or what it lacks.

        Args:
          manual_dir: the manual directory.
          splits: the splits asked for (None: all the dataset has); the result has these.

        Raises:
          ValueError: a file that is there but malformed beyond skipping single examples.
        """

    @abc.abstractmethod
    def _examples(self, split: str, source: Any) -> Iterator[Example | Skipped]:
        """The examples of ``split`` (``SplitFiles.source``), converted or skipped, in a stable order."""

    def _metadata(self, splits: Mapping[str, SplitFiles]) -> dict[str, Any]:
        """The builder's own metadata at the start of a build of ``splits`` (keys filled per split: ``{}``)."""
        del splits
        return {}

    # ------------------------------------------------------------------------- helpers for builders

    def posed_body(self, path: str | None) -> PosedBody | None:
        """The loaded body model of a ``model_paths`` value (None for None)."""
        return self._bodies[path] if path else None

    def record_split(self, split: str, **values: Any) -> None:
        """Sets ``metadata[key][split] = value`` for each of ``values``."""
        for key, value in values.items():
            self.info.metadata.setdefault(key, {})[split] = value

    def missing_message(self, problems: Sequence[str]) -> str:
        """What is missing from the manual directory, and what to download, from where, and where it goes."""
        where = "(not given)" if self.manual_dir is None else self.manual_dir
        return (f"{self.DATASET} is not complete in --manual_dir {where}: " + "; ".join(problems) + ".\n"
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    @property
    def empty_splits(self) -> dict[str, dict[str, Any]]:
        """``{split: report}`` of the splits not written because every record was skipped."""
        return dict(self.info.metadata.get("empty_splits") or {})

    # ------------------------------------------------------------------------- TFDS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=schema.features(), supervised_keys=None,
                                              homepage=self.HOMEPAGE, metadata=tfds.core.MetadataDict())

    def _generate_splits(self, dl_manager: tfds.download.DownloadManager,
                         download_config: tfds.download.DownloadConfig) -> list[tfds.core.SplitInfo]:
        """Finds the files, then runs TFDS's split generation once per split.

        TFDS (4.9) writes the splits ``_split_generators`` returns one after another and fails
        the whole build on a split without examples; one split per call lets an empty split
        (:class:`_EmptySplit`, raised by its generator before TFDS finalizes it) be left out
        while the others are written. The returned infos become ``info.splits``.
        """
        manual_dir = self._manual_dir_arg or getattr(dl_manager, "_manual_dir", None)
        self.manual_dir = None if manual_dir is None else os.fspath(manual_dir)
        splits, missing = self._plan()
        self._load_bodies()
        self._start_metadata(splits, missing)
        infos = []
        for split, files in splits.items():
            self._generating = (split, files)
            try:
                infos += super()._generate_splits(dl_manager, download_config)
            except _EmptySplit as empty:
                self.info.metadata["empty_splits"][split] = empty.report
                logging.error("%s", empty_split_message(self.name, split, empty.report))
            finally:
                self._generating = None
        if not infos:
            raise EmptySplitsError("; ".join(empty_split_message(self.name, split, report)
                                             for split, report in self.empty_splits.items())
                                   + "; nothing was written")
        return infos

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, _LazySplit]:
        del dl_manager  # the files were found by _generate_splits
        split, files = self._generating
        return {split: _LazySplit(files, functools.partial(self._generate_examples, split))}

    def _generate_examples(self, split: str, source: Any) -> Iterator[tuple[str | int, dict[str, Any]]]:
        tally = _Tally()
        for item in self._examples(split, source):
            if isinstance(item, Skipped):
                logging.warning("%s %s: skipped %s: %s", self.name, split, item.label, item.reason)
                tally.skip(item, self.MAX_LISTED_SKIPS)
                continue
            tally.keep(item, self.MEASURES)
            yield item.key, item.record
        self._finish_split(split, tally, len(source))
        if not tally.records:
            raise _EmptySplit({
                "listed": len(source), "read": tally.records + tally.num_skipped, "skipped": tally.num_skipped,
                "unit": self.UNIT,
                "reasons": [{"reason": tally.first_reason[group], "count": count}
                            for group, count in tally.reasons.most_common(TOP_REASONS)]})

    # ------------------------------------------------------------------------- the shared steps

    def _plan(self) -> tuple[dict[str, SplitFiles], dict[str, list[str]]]:
        """The splits to build and ``{split: what it lacks}`` of those left out.

        Raises:
          FileNotFoundError: no manual directory, a split asked for that lacks files, or no split
            with all its files (the message: what to download, from where, where it goes).
        """
        if self.manual_dir is None or not os.path.isdir(self.manual_dir):
            where = "no --manual_dir was given" if self.manual_dir is None else f"there is no folder {self.manual_dir}"
            raise FileNotFoundError(self.missing_message([where]))
        found = self._find_splits(self.manual_dir, self.requested_splits)
        wanted = self.requested_splits or tuple(found)
        missing = {split: list(found[split].missing) if split in found else [f"no files of split {split}"]
                   for split in wanted if split not in found or found[split].missing}
        ready = {split: found[split] for split in wanted if split not in missing}
        if missing and (self.requested_splits or not ready):
            problems = list(dict.fromkeys(p for ps in missing.values() for p in ps))
            raise FileNotFoundError(self.missing_message(problems))
        if missing:
            logging.warning("%s: building %s; not building %s (pass splits= / --splits= to require a split)",
                            self.name, ", ".join(ready),
                            "; ".join(f"{split}, which lacks: {'; '.join(p)}" for split, p in missing.items()))
        return ready, missing

    def _load_bodies(self) -> None:
        self._bodies = {}
        for name, path in self.model_paths.items():
            if path is not None and path not in self._bodies:
                self._bodies[path] = PosedBody(path)
                check_iuv_body(self.iuv_dir, self._bodies[path].body_model, f"{name} {path}")

    def _start_metadata(self, splits: Mapping[str, SplitFiles], missing: Mapping[str, list[str]]) -> None:
        metadata = self.info.metadata
        metadata.clear()
        metadata.update({"source": self.SOURCE or self.HOMEPAGE, **self.model_paths, "iuv_dir": self.iuv_dir,
                         **self._metadata(splits), "listed": {}, "num_skipped": {}, "skipped": {},
                         **({"skipped_not_listed": {}} if self.MAX_LISTED_SKIPS is not None else {}),
                         **{key: {} for key in self.MEASURES}, "with_iuv": {}, "no_iuv": {},
                         "missing_splits": dict(missing), "empty_splits": {}})

    def _finish_split(self, split: str, tally: _Tally, listed: int) -> None:
        """Writes the split's counts into the metadata and logs its summary."""
        self.record_split(split, listed=listed, num_skipped=tally.num_skipped, skipped=tally.skipped,
                          with_iuv=tally.iuv["with_iuv"], no_iuv=tally.iuv["no_iuv"])
        if self.MAX_LISTED_SKIPS is not None:
            self.record_split(split, skipped_not_listed=tally.num_skipped - len(tally.skipped))
        for key, values in tally.measures.items():
            self.record_split(split, **{key: {"median": float(np.median(values)), "max": float(np.max(values))}})
        if tally.num_skipped:
            named = some(tally.named, sep="; ", total=tally.num_skipped)
            logging.warning("%s %s: skipped %d of %d %s: %s", self.name, split, tally.num_skipped,
                            tally.records + tally.num_skipped, self.UNIT, named)
        if self.iuv_dir:
            logging.info("%s %s: %d record(s) with an IUV map from %s, %d without", self.name, split,
                         tally.iuv["with_iuv"], self.iuv_dir, tally.iuv["no_iuv"])
