"""dct_jax's TFDS dataset builders, one folder each, and their CLI.

Each dataset ``NAME`` is a folder-style TFDS builder,
``datasets/NAME/NAME_dataset_builder.py`` with ``class Builder``, writing the
record schema of ``dct_jax.data.schema`` as ``array_record`` files (readable
with ``tfds.data_source`` / ``builder.as_data_source()`` and no TensorFlow).

The real datasets' builders share ``datasets/_real.py`` (arguments, messages,
metadata, skips, partial downloads, empty splits); README.md says how to write one
and lists the record schema.

Build one with ``python -m datasets build NAME --data_dir=D [--manual_dir=M]``
(see ``datasets/__main__.py``); read it back with
``tfds.data_source(NAME, data_dir=D, split=...)`` or
``tfds.builder_from_directory(D/NAME/VERSION)``.

TFDS notes, measured with tensorflow-datasets 4.9.10 and no TensorFlow:
  * TFDS's default file format is ``tfrecord``, whose writer needs TensorFlow;
    builders here default to ``file_format="array_record"`` and the CLI passes it.
  * Folder-style builders need the ``importlib_resources`` package, which TFDS
    uses but does not declare (it is in requirements.txt).
  * ``tfds.list_builders()`` and the ``tfds build`` CLI import TensorFlow (the
    community-dataset index), so neither is used here.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from typing import Any

_ROOT = os.path.dirname(os.path.abspath(__file__))
# Split names as TFDS reads them back (``split="train"``, ``"train[:10%]"``): lowercase
# identifiers; "all" is TFDS's name for every split together.
SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED_SPLITS = ("all",)


class EmptySplitsError(RuntimeError):
    """Every split of a build would be empty (every record skipped): nothing was written."""


def is_split_name(name: object) -> bool:
    """Whether ``name`` is a split name TFDS can read back (see :data:`SPLIT_NAME`)."""
    return isinstance(name, str) and bool(SPLIT_NAME.fullmatch(name)) and name not in RESERVED_SPLITS


def empty_split_message(dataset: str, split: str, report: Mapping[str, Any]) -> str:
    """One line saying why split ``split`` was not written (``report``: ``metadata["empty_splits"][split]``)."""
    reasons = "; ".join(f'{r["count"]} like "{r["reason"]}"' for r in report["reasons"])
    others = report["skipped"] - sum(r["count"] for r in report["reasons"])
    reasons += f"; {others} for other reasons" if others > 0 else ""
    if report["read"]:
        what = f"all {report['read']} {report['unit']} read were skipped ({reasons})"
    elif report["listed"]:  # e.g. 3DPW's frames the dataset itself marks invalid: not examples
        what = f"none of the {report['listed']} {report['unit']} it lists is an example (see the log)"
    else:
        what = f"it lists no {report['unit']}"
    return f"{dataset}: split {split} is empty and was not written: {what}"


def builder_names() -> list[str]:
    """Names of the datasets that have a builder folder here, sorted."""
    return sorted(
        name for name in os.listdir(_ROOT)
        if os.path.isfile(os.path.join(_ROOT, name, f"{name}_dataset_builder.py")))


def builder_class(name: str) -> type:
    """The ``Builder`` class of dataset ``name`` (importing it registers it with TFDS).

    Raises:
      ValueError: no builder of that name (the message lists the known ones).
    """
    names = builder_names()
    if name not in names:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(names) or 'none'}")
    module = importlib.import_module(f"{__name__}.{name}.{name}_dataset_builder")
    return module.Builder
