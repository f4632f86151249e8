"""Builds dct_jax datasets without TensorFlow (``tfds build`` imports it; this does not).

Usage (from the repository root)::

    python -m datasets list
    python -m datasets build NAME --data_dir=D [--manual_dir=M] [--split_sizes=train=8,test=4] [--overwrite]

``build`` calls the builder's ``download_and_prepare`` (``array_record`` files,
TFDS's progress bars) and prints where the data went, per-split counts, size
and time. The result reads back with ``tfds.data_source(NAME, data_dir=D,
split=...)`` or ``tfds.builder_from_directory(D/NAME/VERSION)``. An existing
build is reused unless ``--overwrite``; asking for other split sizes than an
existing build has is an error.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from typing import Sequence

import datasets


class UsageError(ValueError):
    """A request that cannot be built as asked (reported without a traceback)."""


def parse_split_sizes(text: str) -> dict[str, int]:
    """``"train=2000,test=200"`` -> ``{"train": 2000, "test": 200}``."""
    sizes = {}
    for item in text.split(","):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"--split_sizes must look like train=2000,test=200; got {text!r}")
        sizes[name.strip()] = int(count)
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datasets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the dataset names")
    build = commands.add_parser("build", help="build (download_and_prepare) a dataset")
    build.add_argument("name", help="dataset name (see `list`)")
    build.add_argument("--data_dir", default=None,
                       help="where to write NAME/VERSION/ (default: TFDS's, ~/tensorflow_datasets)")
    build.add_argument("--manual_dir", default=None,
                       help="the extracted archives of a dataset that must be downloaded by hand")
    build.add_argument("--split_sizes", type=parse_split_sizes, default=None,
                       help="examples per split, e.g. train=2000,test=200 (generated datasets only)")
    build.add_argument("--overwrite", action="store_true", help="rebuild an existing build")
    return parser


def build(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
          split_sizes: dict[str, int] | None = None, overwrite: bool = False):
    """Builds dataset ``name``; returns the prepared builder.

    Raises:
      UsageError: unknown name, a builder that takes no ``split_sizes``, or an
        existing build with other split sizes than asked for (without
        ``overwrite``; a builder's ``split_sizes`` attribute says what it makes).
    """
    try:
        builder_cls = datasets.builder_class(name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    import tensorflow_datasets as tfds  # noqa: PLC0415  (keeps `list` and errors fast)

    kwargs = {}
    if split_sizes is not None:
        if "split_sizes" not in inspect.signature(builder_cls.__init__).parameters:
            raise UsageError(f"dataset {name!r} does not take --split_sizes")
        kwargs["split_sizes"] = split_sizes
    if data_dir is not None:
        kwargs["data_dir"] = os.path.abspath(os.path.expanduser(data_dir))
    builder = builder_cls(file_format="array_record", **kwargs)
    requested = getattr(builder, "split_sizes", None)
    if builder.is_prepared() and not overwrite and requested is not None:
        built = {split: info.num_examples for split, info in builder.info.splits.items()}
        if built != requested:
            raise UsageError(
                f"{builder.data_dir} already holds {name} with splits {built}, not "
                f"{requested}; pass --overwrite or another --data_dir")
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.path.abspath(os.path.expanduser(manual_dir)),
        download_mode=mode)
    builder.download_and_prepare(download_config=config)
    return builder


def _describe(builder, seconds: float) -> str:
    splits = ", ".join(f"{split} {info.num_examples}" for split, info in sorted(builder.info.splits.items()))
    size = sum(os.path.getsize(os.path.join(builder.data_dir, f)) for f in os.listdir(builder.data_dir))
    return (f"{builder.name} {builder.version}: {splits} examples, {size / 2**20:.1f} MiB "
            f"in {builder.data_dir} ({seconds:.1f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        print("\n".join(datasets.builder_names()))
        return 0
    start = time.perf_counter()
    try:
        builder = build(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                        split_sizes=args.split_sizes, overwrite=args.overwrite)
    except (UsageError, FileNotFoundError) as err:
        print(f"python -m datasets: error: {err}", file=sys.stderr)
        return 2
    print(_describe(builder, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
