"""Tests for the dataset CLI, ``python -m datasets`` (datasets/__main__.py).

Builds a tiny synthetic split in-process, reads it back the two documented ways
(by name and with ``tfds.builder_from_directory``), and checks reuse, size
mismatch and overwrite, and the errors a user can hit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

import datasets
from datasets import __main__ as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_split_sizes_parse():
    assert cli.parse_split_sizes("train=8, test_2=1") == {"train": 8, "test_2": 1}
    for bad in ("train", "=3", "", "train=1,"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected name=count items like train=2000,test=200"):
            cli.parse_split_sizes(bad)
    for bad in ("TRAIN set=1", "Train=1", "2nd=1", "val-1=1", "all=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not one TFDS can read back"):
            cli.parse_split_sizes(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="split 'train' is given twice"):
        cli.parse_split_sizes("train=1,train=2")
    for bad in ("train=0", "train=-1", "train=x", "train=1.5", "train==1"):
        with pytest.raises(argparse.ArgumentTypeError, match="the count of split 'train' must be an integer >= 1"):
            cli.parse_split_sizes(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="TFDS cannot write an empty split; leave the split out"):
        cli.parse_split_sizes("train=10,test=0")


def test_splits_parse():
    assert cli.parse_splits("test") == ("test",)
    assert cli.parse_splits("train, valid_protocol2") == ("train", "valid_protocol2")
    for bad in ("", "train,", "Test", "all"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not one TFDS can read back"):
            cli.parse_splits(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="split 'test' is given twice"):
        cli.parse_splits("test,test")


def _one_line_usage_error(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    assert expected in lines[0], lines[0]


def test_bad_split_sizes_stop_before_anything_is_created(tmp_path, capsys):  # issue case 7
    data_dir = tmp_path / "tfds"
    for sizes, expected in (("TRAIN set=1", "split name 'TRAIN set' is not one TFDS can read back"),
                            ("train=1,train=2", "split 'train' is given twice"),
                            ("train=0", "the count of split 'train' must be an integer >= 1, got 0")):
        _one_line_usage_error(capsys, ["build", "synthetic", f"--data_dir={data_dir}", f"--split_sizes={sizes}"],
                              f"python -m datasets build: error: argument --split_sizes: {expected}")
    # The Python API applies the same rules.
    for sizes in ({"train": 0}, {"TRAIN set": 1}, {"train": 1.0}, {}):
        with pytest.raises(cli.UsageError, match="split_sizes"):
            cli.build("synthetic", data_dir=str(data_dir), split_sizes=sizes)
    assert not data_dir.exists()


def test_data_dir_must_be_a_writable_directory(tmp_path, capsys, monkeypatch):  # issue case 14
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    for data_dir, expected in ((a_file, f"--data_dir {a_file} is a file, not a directory"),
                               (a_file / "sub", f"--data_dir {a_file / 'sub'} cannot be created: {a_file} is a file")):
        assert cli.main(["build", "synthetic", f"--data_dir={data_dir}", "--split_sizes=train=1"]) == 2
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [f"python -m datasets: error: {expected}"]
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # (root may write anywhere, so the permission check is faked)
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    for data_dir, expected in ((locked, f"--data_dir {locked} is not writable"),
                               (locked / "new", f"--data_dir {locked / 'new'} cannot be created: {locked} is not writable")):
        assert cli.main(["build", "synthetic", f"--data_dir={data_dir}", "--split_sizes=train=1"]) == 2
        assert capsys.readouterr().err.splitlines() == [f"python -m datasets: error: {expected}"]
    assert os.listdir(locked) == [] and a_file.read_text() == "not a directory"


def test_list_names_the_builders(capsys):
    assert "synthetic" in datasets.builder_names()
    assert cli.main(["list"]) == 0
    assert "synthetic" in capsys.readouterr().out.split()


def test_unknown_dataset_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "datasets", "build", "nope", f"--data_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "unknown dataset 'nope'; known datasets: " in result.stderr and "synthetic" in result.stderr
    assert not os.listdir(tmp_path)


def test_split_sizes_need_a_builder_that_takes_them(monkeypatch, capsys, tmp_path):
    class Fixed:  # stands in for a real-dataset builder
        def __init__(self, *, file_format=None, data_dir=None):
            pass

    monkeypatch.setattr(datasets, "builder_class", lambda name: Fixed)
    assert cli.main(["build", "fixed", f"--data_dir={tmp_path}", "--split_sizes=train=1"]) == 2
    assert "does not take --split_sizes" in capsys.readouterr().err


def test_smpl_path_is_checked_and_passed(monkeypatch, capsys, tmp_path):
    seen = {}

    class Fixed:  # stands in for a real-dataset builder without SMPL-dependent fields
        def __init__(self, *, file_format=None, data_dir=None):
            pass

    class WithBody:
        def __init__(self, *, file_format=None, data_dir=None, smpl_path=None):
            seen["smpl_path"] = smpl_path
            raise RuntimeError("stop here")

    body = tmp_path / "SMPL.pkl"
    body.write_bytes(b"x")
    monkeypatch.setattr(datasets, "builder_class", lambda name: Fixed)
    assert cli.main(["build", "fixed", f"--data_dir={tmp_path}", f"--smpl_path={body}"]) == 2
    assert "does not take --smpl_path" in capsys.readouterr().err
    monkeypatch.setattr(datasets, "builder_class", lambda name: WithBody)
    assert cli.main(["build", "body", f"--data_dir={tmp_path}", f"--smpl_path={tmp_path}/none.pkl"]) == 2
    assert "is not a file" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["build", "body", f"--data_dir={tmp_path}", f"--smpl_path={body}"])
    assert seen["smpl_path"] == str(body)


def test_iuv_dir_is_checked_and_passed(monkeypatch, capsys, tmp_path):
    # A real builder: a folder that does not exist is one line and exit code 2, before anything is made.
    missing, data_dir = tmp_path / "no_iuv", tmp_path / "tfds"
    for name in ("up3d", "coco_densepose", "pw3d", "h36m"):
        assert cli.main(["build", name, f"--data_dir={data_dir}", f"--manual_dir={tmp_path}",
                         f"--iuv_dir={missing}"]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"python -m datasets: error: --iuv_dir {missing} is not a directory (the folder of DensePose's "
            "<image name>_IUV.png files)"]
    assert not data_dir.exists()
    a_file = tmp_path / "a_IUV.png"
    a_file.write_bytes(b"x")
    assert cli.main(["build", "up3d", f"--data_dir={data_dir}", f"--iuv_dir={a_file}"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli.main(["build", "synthetic", f"--data_dir={data_dir}", f"--iuv_dir={tmp_path}"]) == 2
    assert "dataset 'synthetic' does not take --iuv_dir" in capsys.readouterr().err
    assert cli.main(["build", "synthetic", f"--data_dir={data_dir}", "--splits=test"]) == 2
    assert "dataset 'synthetic' does not take --splits (its splits are --split_sizes)" in capsys.readouterr().err
    assert cli.main(["build", "coco_densepose", f"--data_dir={data_dir}", f"--smpl_path={__file__}"]) == 2
    assert "dataset 'coco_densepose' does not take --smpl_path" in capsys.readouterr().err
    seen = {}

    class WithIuv:  # stands in for a real-dataset builder
        def __init__(self, *, file_format=None, data_dir=None, iuv_dir=None):
            seen["iuv_dir"] = iuv_dir
            raise RuntimeError("stop here")

    monkeypatch.setattr(datasets, "builder_class", lambda name: WithIuv)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iuv").mkdir()
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["build", "real", f"--data_dir={data_dir}", "--iuv_dir=iuv"])
    assert seen["iuv_dir"] == str(tmp_path / "iuv")  # made absolute


def test_build_reuse_mismatch_and_overwrite(tmp_path, capsys):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    args = ["build", "synthetic", f"--data_dir={tmp_path}", "--manual_dir=/nonexistent"]
    assert cli.main(args + ["--split_sizes=train=3,test=1"]) == 0
    out = capsys.readouterr().out
    assert "synthetic 1.0.0: test 1, train 3 examples" in out
    assert "Generating dataset synthetic here (nothing is downloaded): 3 train + 1 test records" in out
    assert "Downloading" not in out and "Unknown size" not in out
    version_dir = tmp_path / "synthetic" / "1.0.0"
    assert len(tfds.builder_from_directory(str(version_dir)).as_data_source(split="train")) == 3
    assert len(tfds.data_source("synthetic", data_dir=str(tmp_path), split="test")) == 1
    assert any(name.endswith("-of-00001") and "array_record" in name for name in os.listdir(version_dir))

    stamp = os.path.getmtime(version_dir / "dataset_info.json")
    assert cli.main(args + ["--split_sizes=train=3,test=1"]) == 0  # reused, not rebuilt
    assert os.path.getmtime(version_dir / "dataset_info.json") == stamp

    assert cli.main(args + ["--split_sizes=train=2"]) == 2
    assert "pass --overwrite or another --data_dir" in capsys.readouterr().err
    assert cli.main(args) == 2  # the default sizes differ from this build's too
    assert "{'train': 2000, 'test': 200}" in capsys.readouterr().err
    assert cli.main(args + ["--split_sizes=train=2", "--overwrite"]) == 0
    assert "synthetic 1.0.0: train 2 examples" in capsys.readouterr().out
    assert len(tfds.data_source("synthetic", data_dir=str(tmp_path), split="train")) == 2
    assert "tensorflow" not in sys.modules
