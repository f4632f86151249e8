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
    assert cli.parse_split_sizes("train=8, test=0") == {"train": 8, "test": 0}
    for bad in ("train", "train=x", "=3", "train=-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="train=2000,test=200"):
            cli.parse_split_sizes(bad)


def test_list_names_the_builders(capsys):
    assert "synthetic" in datasets.builder_names()
    assert cli.main(["list"]) == 0
    assert "synthetic" in capsys.readouterr().out.split()


def test_unknown_dataset_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "datasets", "build", "nope", f"--data_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown dataset 'nope'; known datasets: synthetic" in result.stderr
    assert not os.listdir(tmp_path)


def test_split_sizes_need_a_builder_that_takes_them(monkeypatch, capsys, tmp_path):
    class Fixed:  # stands in for a real-dataset builder
        def __init__(self, *, file_format=None, data_dir=None):
            pass

    monkeypatch.setattr(datasets, "builder_class", lambda name: Fixed)
    assert cli.main(["build", "fixed", f"--data_dir={tmp_path}", "--split_sizes=train=1"]) == 2
    assert "does not take --split_sizes" in capsys.readouterr().err


def test_build_reuse_mismatch_and_overwrite(tmp_path, capsys):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    args = ["build", "synthetic", f"--data_dir={tmp_path}", "--manual_dir=/nonexistent"]
    assert cli.main(args + ["--split_sizes=train=3,test=1"]) == 0
    out = capsys.readouterr().out
    assert "synthetic 1.0.0: test 1, train 3 examples" in out
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
