"""Helpers the dataset builders share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class Sized:
    """An iterable with a length, so that TFDS's progress bar shows a total."""

    def __init__(self, iterable: Iterable[Any], length: int):
        self._iterable, self._length = iterable, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)
