"""Builds dct_jax datasets without TensorFlow (``tfds build`` imports it; this does not).

Usage (from the repository root)::

    python -m datasets list
    python -m datasets build NAME --data_dir=D [--manual_dir=M] [--smpl_path=SMPL.pkl] [--split_sizes=train=8,test=4] [--overwrite]
    python -m datasets build pw3d --data_dir=D --manual_dir=M [--smpl_male_path=M.pkl --smpl_female_path=F.pkl]
    python -m datasets build coco_densepose --data_dir=D --manual_dir=M [--iuv_dir=IUV] [--splits=minival]

``build`` calls the builder's ``download_and_prepare`` (``array_record`` files,
TFDS's progress bars) and prints where the data went, per-split counts, size
and time. The result reads back with ``tfds.data_source(NAME, data_dir=D,
split=...)`` or ``tfds.builder_from_directory(D/NAME/VERSION)``. An existing
build is reused unless ``--overwrite``; asking for other split sizes, or for a
split an existing build lacks, is an error.

A real dataset builds every split whose files are in ``--manual_dir`` (a line
names the others and what they lack); ``--splits=a,b`` builds only those and
requires their files. A split whose every record is skipped is not written: it
is reported (records read, top skip reasons), the other splits are written, and
the exit status is 1.

Exit status: 0 built; 1 a split was empty (or every split: nothing written); 2 a
usage error or missing files (one line, no traceback).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections.abc import Sequence

import datasets


class UsageError(ValueError):
    """A request that cannot be built as asked (reported without a traceback)."""



def parse_split_sizes(text: str) -> dict[str, int]:
    """``"train=2000,test=200"`` -> ``{"train": 2000, "test": 200}``.

    Errors:
      argparse.ArgumentTypeError: not ``name=count`` items; a name TFDS cannot
        read back (lowercase letters, digits and ``_``, starting with a
        letter; not ``all``); a name given twice; a count that is not an
        integer >= 1 (TFDS cannot write an empty split: leave it out).
    """
    sizes: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = (part.strip() for part in item.partition("="))
        if not sep or not name or not count:
            raise argparse.ArgumentTypeError(f"expected name=count items like train=2000,test=200; got {text!r}")
        if name in sizes:
            raise argparse.ArgumentTypeError(f"split {name!r} is given twice in {text!r}")
        problem = _split_size_problem(name, int(count) if count.isdigit() else count)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        sizes[name] = int(count)
    return sizes


def _split_size_problem(name: object, count: object) -> str | None:
    """What is wrong with one ``split_sizes`` entry, or None."""
    if not datasets.is_split_name(name):
        return _split_name_problem(name) + ", e.g. train=2000,test=200"
    if type(count) is not int or count < 1:
        return (f"the count of split {name!r} must be an integer >= 1, got {count!r} (TFDS cannot write an "
                "empty split; leave the split out)")
    return None


def _split_name_problem(name: object) -> str:
    return (f"split name {name!r} is not one TFDS can read back; use lowercase letters, digits "
            "and _, starting with a letter (and not 'all')")


def parse_splits(text: str) -> tuple[str, ...]:
    """``"test"`` or ``"train,test"`` -> ``("train", "test")``.

    Errors:
      argparse.ArgumentTypeError: an empty name, a name TFDS cannot read back, or a name given twice.
    """
    names = tuple(name.strip() for name in text.split(","))
    for k, name in enumerate(names):
        if not datasets.is_split_name(name):
            raise argparse.ArgumentTypeError(_split_name_problem(name) + ", e.g. --splits=train,test")
        if name in names[:k]:
            raise argparse.ArgumentTypeError(f"split {name!r} is given twice in {text!r}")
    return names


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (and exit code 2), pointing to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m datasets", description=__doc__.split("\n")[0])
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
    build.add_argument("--splits", type=parse_splits, default=None,
                       help="the splits to build, e.g. test or train,test, which must then all be in --manual_dir "
                            "(real datasets; default: every split whose files are there)")
    build.add_argument("--smpl_path", default=None,
                       help="an SMPL .pkl/.npz: also store the ground-truth vertices and joints "
                            "(real datasets; without it records keep the SMPL parameters)")
    build.add_argument("--smpl_male_path", default=None,
                       help="the male SMPL .pkl/.npz, for datasets with gendered ground truth (pw3d)")
    build.add_argument("--smpl_female_path", default=None,
                       help="the female SMPL .pkl/.npz, for datasets with gendered ground truth (pw3d)")
    build.add_argument("--iuv_dir", default=None,
                       help="a folder of DensePose IUV maps, <image name>_IUV.png as Detectron's DensePose writes "
                            "them: records of images with one also hold it (real datasets; see their README)")
    build.add_argument("--overwrite", action="store_true", help="rebuild an existing build")
    return parser


def _writable_dir(path: str, flag: str) -> str:
    """``path`` made absolute, if it is a writable directory or can be made one."""
    if not path.strip():
        raise UsageError(f"{flag} is empty; pass a directory")
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file, not a directory")
    existing = path
    while not os.path.exists(existing):  # the nearest ancestor that exists must be writable
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {path} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise UsageError(f"{flag} {path} {what}")
    return path


def build(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
          split_sizes: dict[str, int] | None = None, splits: Sequence[str] | None = None,
          smpl_path: str | None = None, smpl_male_path: str | None = None, smpl_female_path: str | None = None,
          iuv_dir: str | None = None, overwrite: bool = False):
    """Builds dataset ``name``; returns the prepared builder.

    Every argument is checked before anything is created. Which arguments a builder
    takes is its signature's (``inspect.signature(Builder)``).

    Errors:
      UsageError: unknown name; ``data_dir`` a file, empty or not writable
        (nor creatable); ``manual_dir`` not a directory for a dataset that
        needs one; a builder that takes no ``split_sizes``; split sizes that
        are not ``{lowercase_name: int >= 1}``; an existing build with other
        split sizes than asked for (without ``overwrite``; a builder's
        ``split_sizes`` attribute says what it makes); ``splits`` for a builder
        that takes none, not among its splits, or not all in an existing build
        (without ``overwrite``); ``smpl_path``, ``smpl_male_path`` or
        ``smpl_female_path`` for a builder that takes none, or not a file;
        ``iuv_dir`` for a builder that takes none, or not a directory.
      FileNotFoundError: the files of a split asked for, or of every split, are
        not in ``manual_dir`` (the message says what to download, where to).
      datasets.EmptySplitsError: every split's records were skipped; nothing written.
    """
    try:
        builder_cls = datasets.builder_class(name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    takes = inspect.signature(builder_cls).parameters
    kwargs = {}
    if split_sizes is not None:
        if "split_sizes" not in takes:
            raise UsageError(f"dataset {name!r} does not take --split_sizes")
        problems = [_split_size_problem(k, v) for k, v in split_sizes.items()] or ["it is empty"]
        if any(problems):  # the command line's rules
            raise UsageError(f"split_sizes {split_sizes}: {next(p for p in problems if p)}")
        kwargs["split_sizes"] = dict(split_sizes)
    if splits is not None:
        if "splits" not in takes:
            sizes = " (its splits are --split_sizes)" if "split_sizes" in takes else ""
            raise UsageError(f"dataset {name!r} does not take --splits{sizes}")
        kwargs["splits"] = tuple(splits)
    for flag, path in (("smpl_path", smpl_path), ("smpl_male_path", smpl_male_path),
                       ("smpl_female_path", smpl_female_path)):
        if path is None:
            continue
        if flag not in takes:
            raise UsageError(f"dataset {name!r} does not take --{flag}")
        if not os.path.isfile(os.path.expanduser(path)):
            raise UsageError(f"--{flag} {path} is not a file (an SMPL .pkl or .npz)")
        kwargs[flag] = os.path.abspath(os.path.expanduser(path))
    if iuv_dir is not None:
        if "iuv_dir" not in takes:
            raise UsageError(f"dataset {name!r} does not take --iuv_dir")
        if not os.path.isdir(os.path.expanduser(iuv_dir)):
            raise UsageError(f"--iuv_dir {iuv_dir} is not a directory (the folder of DensePose's "
                             "<image name>_IUV.png files)")
        kwargs["iuv_dir"] = os.path.abspath(os.path.expanduser(iuv_dir))
    if data_dir is not None:
        kwargs["data_dir"] = _writable_dir(data_dir, "--data_dir")
    if manual_dir is not None:
        manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        if getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) and not os.path.isdir(manual_dir):
            raise UsageError(f"--manual_dir {manual_dir} is not a directory")
    import tensorflow_datasets as tfds  # noqa: PLC0415  (keeps `list` and errors fast)

    try:
        builder = builder_cls(file_format="array_record", **kwargs)
    except ValueError as err:  # e.g. a split the dataset does not have
        raise UsageError(f"{name}: {err}") from None
    requested = getattr(builder, "split_sizes", None)
    built = {split: info.num_examples for split, info in builder.info.splits.items()}
    if builder.is_prepared() and not overwrite and requested is not None and built != requested:
        raise UsageError(f"{builder.data_dir} already holds {name} with splits {built}, not "
                         f"{requested}; pass --overwrite or another --data_dir")
    if builder.is_prepared() and not overwrite and splits is not None and not set(splits) <= set(built):
        raise UsageError(f"{builder.data_dir} already holds {name} with splits {sorted(built)}, not "
                         f"{sorted(set(splits) - set(built))}; pass --overwrite or another --data_dir")
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode)
    builder.download_and_prepare(download_config=config)
    return builder


def _not_built(builder, splits: Sequence[str] | None) -> tuple[list[str], dict[str, dict]]:
    """The splits (of ``splits``, or all) left out for missing files, and the empty ones with their reports."""
    metadata = builder.info.metadata or {}  # (generated datasets have none)
    missing, empty = metadata.get("missing_splits") or {}, metadata.get("empty_splits") or {}
    return ([s for s in sorted(missing) if splits is None or s in splits],
            {s: r for s, r in sorted(empty.items()) if splits is None or s in splits})


def _describe(builder, seconds: float, splits: Sequence[str] | None = None) -> str:
    built = ", ".join(f"{split} {info.num_examples}" for split, info in sorted(builder.info.splits.items()))
    size = sum(os.path.getsize(os.path.join(builder.data_dir, f)) for f in os.listdir(builder.data_dir))
    missing, empty = _not_built(builder, splits)
    not_built = "; ".join(f"{', '.join(names)} ({why})" for names, why in (
        (missing, "files missing from the manual directory; --overwrite rebuilds once they are there"),
        (list(empty), "every record skipped")) if names)
    return (f"{builder.name} {builder.version}: {built} examples, {size / 2**20:.1f} MiB "
            f"in {builder.data_dir} ({seconds:.1f} s)" + (f"; not built: {not_built}" if not_built else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (1: a split not written, its records all skipped;
    2: a user error or missing files, reported as one line)."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        print("\n".join(datasets.builder_names()))
        return 0
    start = time.perf_counter()
    try:
        builder = build(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                        split_sizes=args.split_sizes, splits=args.splits, smpl_path=args.smpl_path,
                        smpl_male_path=args.smpl_male_path, smpl_female_path=args.smpl_female_path,
                        iuv_dir=args.iuv_dir, overwrite=args.overwrite)
    except (UsageError, FileNotFoundError, NotADirectoryError) as err:
        print(f"python -m datasets: error: {err}", file=sys.stderr)
        return 2
    except datasets.EmptySplitsError as err:
        print(f"python -m datasets: error: {err}", file=sys.stderr)
        return 1
    print(_describe(builder, time.perf_counter() - start, args.splits))
    _, empty = _not_built(builder, args.splits)
    for split, report in empty.items():
        print(f"python -m datasets: error: {datasets.empty_split_message(builder.name, split, report)}; "
              "the other splits were written", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
