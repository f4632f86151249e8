"""Reading numeric arrays from a user's ``.npz`` file with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np


def read_arrays(path: str | os.PathLike, keys: Iterable[str], *, where: str) -> dict[str, np.ndarray]:
    """The arrays of ``keys`` present in the ``.npz`` at ``path``.

    Pickled data is never read. Errors: ValueError starting with ``where`` (e.g.
    ``"chart file PATH"``) for a file that is not a readable archive, a single
    ``.npy`` array, or an object (pickled) array under one of ``keys``; numpy's
    advice to set ``allow_pickle`` is never passed on.
    """
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - BadZipFile, pickled data, ...
        first = str(err).splitlines()[0][:200] if str(err) else ""
        why = f"{type(err).__name__}: {first}"
        if "pickle" in first:  # numpy's advice (allow_pickle) is never right here
            why = "not a zip archive; pickled data is never read"
        raise ValueError(f"{where}: not a readable .npz file ({why})") from None
    if not hasattr(npz, "files"):  # np.load gave a single .npy array
        raise ValueError(f"{where}: not an .npz archive (a single .npy array?)")
    with npz:
        data = {}
        for key in (k for k in keys if k in npz.files):
            try:
                data[key] = np.asarray(npz[key])
            except ValueError:
                raise ValueError(f"{where}: field {key!r} is an object (pickled) array; it must hold numbers") from None
        return data
