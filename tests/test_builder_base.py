"""Tests for datasets/_real.py, the base of the real-dataset builders, with a toy builder.

The toy dataset is a folder of split lists ``<split>.txt``, one example a line: ``ok``
(a record), ``ok <number>`` (a record with that measurement), ``bad <reason>`` (skipped
with that reason) or ``invalid`` (not an example, as 3DPW's invalid frames). What the real builders do with the base (their formats, their fixtures)
is tested in test_up3d.py, test_pw3d.py, test_coco_densepose.py and test_h36m.py.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

import datasets
from datasets import __main__ as cli
from datasets._real import Example, RealBuilder, Skipped, SplitFiles, reason_group
from dct_jax.data import schema

IMAGE = cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))[1].tobytes()


class Toy(RealBuilder, skip_registration=True):
    """A dataset of split lists: ``ok [number]`` is a record, ``bad <reason>`` a skip."""

    VERSION = tfds.core.Version("1.0.0")
    pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))  # (TFDS reads a builder's README there)
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Write M/a.txt, M/b.txt, M/c.txt by hand."
    DATASET, HOMEPAGE, SPLITS = "Toy", "https://example.org/toy", ("a", "b", "c")
    BODY_MODELS = ()
    MEASURES = ("number",)
    UNIT = "lines"

    def _find_splits(self, manual_dir: str, splits: tuple[str, ...] | None) -> dict[str, SplitFiles]:
        found = {}
        for split in splits or self.SPLITS:
            path = os.path.join(manual_dir, f"{split}.txt")
            if not os.path.isfile(path):
                found[split] = SplitFiles(missing=(f"no {path}: write it",))
                continue
            with open(path) as stream:
                found[split] = SplitFiles(source=stream.read().splitlines())
        return found

    def _examples(self, split: str, source: list[str]) -> Iterator[Example | Skipped]:
        for index, line in enumerate(source):
            kind, _, rest = line.partition(" ")
            if kind == "invalid":
                continue
            if kind == "bad":
                yield Skipped(f"line {index + 1}", rest, {"line": index + 1})
                continue
            notes = type("Notes", (), {"number": float(rest) if rest else None})()
            yield Example(index, schema.make_record(record_id=f"toy/{split}/{index}", image=IMAGE), notes)

    def _metadata(self, splits) -> dict[str, Any]:
        return {"lines": {split: len(files.source) for split, files in splits.items()}}


class Capped(Toy, skip_registration=True):
    MAX_LISTED_SKIPS = 2


def _write(manual_dir, **splits: list[str]) -> str:
    os.makedirs(manual_dir, exist_ok=True)
    for split, lines in splits.items():
        with open(os.path.join(manual_dir, f"{split}.txt"), "w") as stream:
            stream.write("".join(f"{line}\n" for line in lines))
    return str(manual_dir)


def _build(builder_cls, tmp_path, manual_dir, **kwargs):
    builder = builder_cls(data_dir=str(tmp_path / "tfds"), manual_dir=manual_dir, **kwargs)
    builder.download_and_prepare()
    return tfds.builder_from_directory(os.path.join(tmp_path, "tfds", builder.name, "1.0.0"))


# ----------------------------------------------------------------------------- arguments


def test_each_builder_shows_the_arguments_it_takes():
    params = {name: set(inspect.signature(datasets.builder_class(name)).parameters) for name in datasets.builder_names()}
    shared = {"manual_dir", "splits", "iuv_dir", "file_format", "kwargs"}
    assert params["up3d"] == params["h36m"] == shared | {"smpl_path"}
    assert params["pw3d"] == shared | {"smpl_path", "smpl_male_path", "smpl_female_path"}
    assert params["coco_densepose"] == shared
    assert "splits" not in params["synthetic"] and "split_sizes" in params["synthetic"]
    with pytest.raises(TypeError, match="toy takes no smpl_path"):
        Toy(smpl_path=__file__)
    with pytest.raises(TypeError, match=r"BODY_MODELS: \['smpl_kid_path'\] are not among"):
        type("Kid", (Toy,), {"BODY_MODELS": ("smpl_kid_path",)}, skip_registration=True)


def test_splits_are_checked_when_the_builder_is_made(tmp_path):
    for splits in ((), ("a", "a"), ("d",), ("A",)):
        with pytest.raises(ValueError, match=r"splits must be distinct names among \('a', 'b', 'c'\)"):
            Toy(data_dir=str(tmp_path), splits=splits)
    assert Toy(data_dir=str(tmp_path), splits="b").requested_splits == ("b",)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- partial downloads


def test_a_partial_download_builds_what_is_there_and_says_what_is_not(tmp_path, caplog):
    manual = _write(tmp_path / "m", a=["ok 1", "ok 3", "bad unreadable"], c=["ok"])
    with caplog.at_level("WARNING"):
        built = _build(Toy, tmp_path, manual)
    assert {s: i.num_examples for s, i in built.info.splits.items()} == {"a": 2, "c": 1}
    lack = f"no {os.path.join(manual, 'b.txt')}: write it"
    assert caplog.messages.count(f"toy: building a, c; not building b, which lacks: {lack} "
                                 "(pass splits= / --splits= to require a split)") == 1
    metadata = built.info.metadata
    assert metadata["source"] == "https://example.org/toy" and metadata["iuv_dir"] is None
    assert metadata["lines"] == {"a": 3, "c": 1}  # the builder's own
    assert metadata["missing_splits"] == {"b": [lack]} and metadata["empty_splits"] == {}
    assert metadata["listed"] == {"a": 3, "c": 1} and metadata["num_skipped"] == {"a": 1, "c": 0}
    assert metadata["skipped"] == {"a": [{"line": 3, "reason": "unreadable"}], "c": []}
    assert metadata["number"] == {"a": {"median": 2.0, "max": 3.0}}  # (c has no measurement)
    assert metadata["with_iuv"] == {"a": 0, "c": 0} and metadata["no_iuv"] == {"a": 2, "c": 1}
    assert "toy a: skipped line 3: unreadable" in caplog.messages
    assert "toy a: skipped 1 of 3 lines: line 3 (unreadable)" in caplog.messages


def test_a_split_asked_for_must_be_there(tmp_path):
    manual = _write(tmp_path / "m", a=["ok"])
    with pytest.raises(FileNotFoundError) as info:
        _build(Toy, tmp_path, manual, splits=("a", "b", "c"))
    assert str(info.value) == (f"Toy is not complete in --manual_dir {manual}: no {manual}/b.txt: write it; "
                               f"no {manual}/c.txt: write it.\nWrite M/a.txt, M/b.txt, M/c.txt by hand.")
    for empty_manual, problem in ((tmp_path / "nothing", f"there is no folder {tmp_path / 'nothing'}"),
                                  (_write(tmp_path / "none"), f"no {tmp_path / 'none' / 'a.txt'}: write it")):
        with pytest.raises(FileNotFoundError, match=problem):
            _build(Toy, tmp_path, str(empty_manual))
    assert not os.path.exists(tmp_path / "tfds" / "toy" / "1.0.0")


# ----------------------------------------------------------------------------- empty splits


def test_an_empty_split_is_reported_and_the_others_are_written(tmp_path, caplog):
    manual = _write(tmp_path / "m", a=["ok"], b=["bad file 1 is not an image", "bad file 2 is not an image",
                                               "bad no pose", "bad no pose", "bad no pose", "bad NaN", "bad odd"],
                    c=["invalid", "invalid"])
    with caplog.at_level("WARNING"):
        built = _build(Toy, tmp_path, manual)
    assert {s: i.num_examples for s, i in built.info.splits.items()} == {"a": 1}
    assert len(built.as_data_source(split="a")) == 1
    metadata = built.info.metadata
    assert metadata["empty_splits"] == {
        "b": {"listed": 7, "read": 7, "skipped": 7, "unit": "lines", "reasons": [
            {"reason": "no pose", "count": 3}, {"reason": "file 1 is not an image", "count": 2},
            {"reason": "NaN", "count": 1}]},
        "c": {"listed": 2, "read": 0, "skipped": 0, "unit": "lines", "reasons": []}}
    assert metadata["num_skipped"]["b"] == 7 and len(metadata["skipped"]["b"]) == 7  # the skips are kept
    assert ('toy: split b is empty and was not written: all 7 lines read were skipped (3 like "no pose"; '
            '2 like "file 1 is not an image"; 1 like "NaN"; 1 for other reasons)') in caplog.messages
    assert "toy: split c is empty and was not written: none of the 2 lines it lists is an example (see the log)" \
        in caplog.messages
    assert datasets.empty_split_message("toy", "d", {"listed": 0, "read": 0, "skipped": 0, "unit": "lines",
                                                     "reasons": []}) == \
        "toy: split d is empty and was not written: it lists no lines"


def test_only_empty_splits_write_nothing(tmp_path):
    manual = _write(tmp_path / "m", a=["ok"], b=["bad no pose"])
    builder = Toy(data_dir=str(tmp_path / "tfds"), manual_dir=manual, splits=("b",))
    with pytest.raises(datasets.EmptySplitsError) as info:
        builder.download_and_prepare()
    assert str(info.value) == ('toy: split b is empty and was not written: all 1 lines read were skipped '
                               '(1 like "no pose"); nothing was written')
    assert not builder.is_prepared() and not os.path.exists(tmp_path / "tfds" / "toy" / "1.0.0")


def test_the_cli_exits_with_status_1_for_an_empty_split(tmp_path, monkeypatch, capsys):
    manual = _write(tmp_path / "m", a=["ok"], b=["bad no pose"])
    monkeypatch.setattr(datasets, "builder_class", lambda name: Toy)
    args = ["build", "toy", f"--manual_dir={manual}", f"--data_dir={tmp_path / 'tfds'}"]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert "toy 1.0.0: a 1 examples" in captured.out and "not built: c (files missing" in captured.out
    assert "b (every record skipped)" in captured.out
    assert ('python -m datasets: error: toy: split b is empty and was not written: all 1 lines read were skipped '
            '(1 like "no pose"); the other splits were written') in captured.err.splitlines()
    assert cli.main(args) == 1  # reused, and still said
    assert cli.main([*args[:-1], f"--data_dir={tmp_path / 'b'}", "--splits=b"]) == 1
    assert "nothing was written" in capsys.readouterr().err
    assert cli.main([*args, "--splits=a"]) == 0
    assert "tensorflow" not in sys.modules


def test_skips_listed_in_the_metadata_can_be_capped(tmp_path):
    manual = _write(tmp_path / "m", a=["ok", "bad x", "bad y", "bad z"])
    metadata = _build(Capped, tmp_path, manual).info.metadata
    assert [s["reason"] for s in metadata["skipped"]["a"]] == ["x", "y"]
    assert metadata["num_skipped"] == {"a": 3} and metadata["skipped_not_listed"] == {"a": 1}


def test_reasons_are_grouped_by_their_words():
    assert reason_group("00001_image.png is not a readable image (OpenCV cannot decode its 12 bytes)") == \
        reason_group("00005_image.png is not a readable image (OpenCV cannot decode its 29 bytes)")
    assert reason_group("'betas' has 5 values") != reason_group("'pose' has 5 values")


def test_generated_datasets_refuse_a_split_of_0_examples(tmp_path):
    with pytest.raises(ValueError, match="counts >= 1, got {'train': 2, 'test': 0} .*cannot write an empty split"):
        datasets.builder_class("studio")(data_dir=str(tmp_path), split_sizes={"train": 2, "test": 0})
    assert cli.main(["build", "synthetic", f"--data_dir={tmp_path}", "--splits=train"]) == 2
    assert not os.listdir(tmp_path)
