"""detectron2 DensePose dumps -> Detectron's ``<image>_IUV.png`` files, without torch or detectron2.

Command line::

    python -m dct_jax.densepose_io from-detectron2 results.pkl --output_dir=IUV \\
        [--score_threshold=0.65] [--min_top_score=0.7] [--highest_score_wins] [--write_empty] \\
        [--image_dir=DIR | --image_height=H --image_width=W]

reads the file that detectron2's ``python apply_net.py dump CONFIG MODEL INPUT --output
results.pkl`` writes and, per image in it, writes ``<stem>_IUV.png`` as the classic Detectron
DensePose ``tools/infer_simple.py`` did: the file ``run_demo.py --iuv`` and the dataset builders'
``--iuv_dir`` read. It prints one line per image and a summary; a user error is one line
``python -m dct_jax.densepose_io: error: ...`` on stderr and exit status 2.

The dump (detectron2 ``projects/DensePose``)
--------------------------------------------
``apply_net.py`` ``DumpAction.execute_on_outputs`` / ``postexecute`` (L161-193 at the
2023-2026 heads) saves a list with one dict per image: ``file_name`` (str, the path given to
apply_net), ``scores`` (N,) float32 tensor, ``pred_boxes_XYXY`` (N, 4) float32 tensor (absolute
pixels, clipped to the image) and, when the model has a DensePose head, ``pred_densepose``. Three
layouts exist, all read here:

1. since 2022-10-31 (commit c54429b6): ``torch.save`` (a zip: ``<prefix>/data.pkl`` pickle whose
   persistent ids ``('storage', torch.FloatStorage, key, location, numel)`` name raw
   little-endian storages ``<prefix>/data/<key>``); ``pred_densepose`` is a list of one
   ``densepose.structures.chart_result.DensePoseChartResultWithConfidences`` per box
   (``chart_result.py`` L36-55: ``labels`` (h, w) int64 in 0-24, ``uv`` (2, h, w) float32 and
   six confidence fields that may be None; ``DensePoseChartResult`` has ``labels`` and ``uv`` only).
2. 2020-10-20 (a2648075) to 2022-10-31: the same list written with ``pickle.dump``; a tensor is
   then ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
   backward_hooks[, metadata])`` with the storage as ``torch.storage._load_from_bytes(b)``, ``b``
   being the storage in torch's legacy (non-zip) ``torch.save`` stream (magic number, protocol
   1001, sys info, pickle, storage keys, then per key an int64 element count and the raw bytes).
   A stream in that legacy format is also accepted as the whole file.
3. 2019-10-23 (a0380ecd) to 2020-10-12 (e4ea054a): ``pickle.dump``; ``pred_densepose`` is one
   ``DensePoseResult`` per image (module ``densepose.structures``, from 2020-04-20
   ``densepose.data.structures``) whose ``results`` list holds, per box, ``(shape, png)``:
   ``shape = (3, h, w)`` and ``png`` = ``base64.encodebytes`` of a PIL-written RGB PNG of the
   (h, w, 3) uint8 array ``[I, clamp(255 U).to(uint8), clamp(255 V).to(uint8)]``
   (``DensePoseResult.__init__``, ``_output_to_result``, ``encode_png_data``). U, V are decoded
   to the middle of their 1/255 step, ``(q + 0.5) / 255`` (``1`` for ``q = 255``; 0 where I = 0),
   so that the truncation below gives back ``q``.

The box of a result is detectron2's ``make_int_box`` (``converters/base.py`` L92-95: XYWH,
``w = x1 - x0``, truncated with ``.long()``) and its arrays are ``(max(h, 1), max(w, 1))``
(``converters/chart_output_to_chart_result.py`` L39-40). A GPU run tags storages ``cuda:0``;
the location is ignored (arrays are built on the host). Only the classes above, the torch
rebuild functions, ``collections.OrderedDict`` and plain containers are resolved (into local
stand-ins); anything else in the pickle is refused, so a crafted file cannot run code. A
CSE (continuous surface embedding) dump has no I/U/V and is refused with that reason.

The ``_IUV.png`` (DensePose ``detectron/utils/vis.py`` ``vis_one_image``, L379-414)
-----------------------------------------------------------------------------------
An (H, W, 3) uint8 array of the image's size (``np.zeros(im.shape)`` of ``cv2.imread``, so
after EXIF orientation), channels I (part 1-24, 0 = background), ``trunc(255 U)``,
``trunc(255 V)`` (``astype(np.uint8)``: truncation; values above 255 become 255, L406),
written with ``cv2.imwrite`` so the PNG's *blue* channel holds I. Boxes with score
``> 0.65`` (strict, L391; the float32 scores are compared in float64, so a score of
float32(0.65) = 0.64999998 is not pasted) are pasted in ascending score order (L387
``np.argsort``; equal scores here keep the dump's order) at ``(int(x0), int(y0))`` with the
size of their arrays, each *element* (per channel) written only where the canvas is still
exactly 0 (L396-397): where people overlap, the lower score's values stay, and a channel that
is exactly 0 there (a U or V of 0) takes the next box's value. ``--highest_score_wins``
pastes from the highest score down instead. The paste is done in floating point as vis.py
does; U, V below 0 (the network's raw regression can leave [0, 1]) become 0 here (vis.py's
cast of a negative float to uint8 is undefined in C; on x86 -0.01 gives 254).
``vis_one_image`` returns before writing anything when the best score is ``< thresh``, and
``infer_simple.py`` passes ``thresh=0.7`` (vis.py L255, infer_simple.py L131): an image gets a
file only if some score is ``>= 0.7`` (``--min_top_score``), otherwise this tool prints why and
writes nothing (``--write_empty`` writes the map anyway, all zero if nobody is pasted).
Detectron names the file ``basename.split('.')[0] + '_IUV.png'``; this tool uses
``os.path.splitext`` (``a.b.jpg`` -> ``a.b_IUV.png``), the name the dataset builders and the
demo look for. The ``_INDS.png`` instance map Detectron also wrote is not produced.

Python: :func:`load_dump` -> one :class:`ImageResult` per image (``scores`` (N,), ``boxes_xyxy``
(N, 4), per box ``labels`` (h, w) uint8 and ``uv`` (2, h, w) float32, whatever the layout);
:func:`iuv_image` -> the (H, W, 3) uint8 map; :func:`write_iuv_pngs` does what the command does.

Image size: the dump has none. With ``--image_height/--image_width`` every image gets that
size and no image is read. With ``--image_dir`` the image is ``DIR/<file name of file_name>``.
Otherwise ``file_name`` is tried as written (absolute, or relative to the current directory),
then relative to the dump's folder, then as its bare file name in the dump's folder. The first
that exists is decoded with OpenCV (EXIF orientation applied, as apply_net's ``read_image`` and
infer_simple's ``cv2.imread`` do); none found is an error naming the places looked at.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import dataclasses
import io
import math
import operator
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn

import cv2
import numpy as np

from dct_jax import cli

__all__ = [
    "DEFAULT_MIN_TOP_SCORE", "DEFAULT_SCORE_THRESHOLD", "DumpError", "ImageResult", "WrittenImage",
    "image_size", "iuv_file_name", "iuv_image", "load_dump", "main", "write_iuv_pngs",
]

PROGRAM = "python -m dct_jax.densepose_io"
DEFAULT_SCORE_THRESHOLD = 0.65  # vis.py L391: entry[4] > 0.65
DEFAULT_MIN_TOP_SCORE = 0.7  # infer_simple.py L131 thresh=0.7; vis.py L255: max score < thresh -> no file
NUM_PARTS = 24
IUV_SUFFIX = "_IUV.png"
# Largest tensor built (elements) and storage read (bytes): far above any box-sized map.
MAX_TENSOR_ELEMENTS = 2**28
MAX_STORAGE_BYTES = 2**32
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
NOT_A_DUMP = "not a detectron2 DensePose dump (the file `apply_net.py dump` writes)"


class DumpError(ValueError):
    """A dump that cannot be read or used; the message names the file and the problem, on one line."""


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """The DensePose detections of one image, whatever the dump's layout.

    Attributes:
      file_name: the image path as apply_net recorded it.
      scores: ``(N,)`` float32 detection scores.
      boxes_xyxy: ``(N, 4)`` float32 boxes ``x0, y0, x1, y1`` in pixels.
      labels: N arrays ``(h, w)`` uint8, part index 0-24 over the box (``h, w`` its integer size).
      uv: N arrays ``(2, h, w)`` float32, U and V (nominally [0, 1]; 0 where the label is 0).
      layout: which dump layout it came from (``torch.save``, ``pickle`` or ``DensePoseResult``).
    """

    file_name: str
    scores: np.ndarray
    boxes_xyxy: np.ndarray
    labels: tuple[np.ndarray, ...]
    uv: tuple[np.ndarray, ...]
    layout: str = "torch.save"

    def __len__(self) -> int:
        return len(self.scores)


@dataclasses.dataclass(frozen=True)
class WrittenImage:
    """What :func:`write_iuv_pngs` did with one image: ``path`` None when no file was written."""

    file_name: str
    path: str | None
    people: int
    note: str = ""


# --------------------------------------------------------------------------------------------
# Restricted unpickling: torch tensors become lazy views of numpy storages.

class _Refused(pickle.UnpicklingError):
    """The pickle references something a DensePose dump never holds."""


class _Storage:
    """A torch storage: ``numel`` elements of ``dtype`` (byte order as saved), filled once read."""

    def __init__(self, dtype: np.dtype, numel: int, key: str, little: bool = True, root: _Storage | None = None,
                 offset: int = 0) -> None:
        self.dtype, self.numel, self.key, self.little = dtype, numel, key, little
        self.root, self.offset = root, offset
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes, what: str) -> None:
        need = self.numel * self.dtype.itemsize
        if len(raw) < need:
            raise _Refused(f"storage {what} holds {len(raw)} bytes, expected {need} "
                           f"({self.numel} x {self.dtype.name}); the file is truncated")
        self.data = np.frombuffer(raw, self.dtype, count=self.numel)

    def array(self) -> np.ndarray:
        """The storage as a 1-D array (dtype as saved)."""
        if self.root is not None:
            flat = self.root.array()
            if self.offset + self.numel > len(flat):
                raise _Refused(f"storage view {self.key} lies outside its storage")
            return flat[self.offset:self.offset + self.numel]
        if self.data is None:
            raise _Refused(f"storage {self.key} has no data in the file")
        return self.data


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: the element type."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, np.dtype(dtype)


class _TorchDtype:
    """What ``torch.float32`` & co. resolve to (``_rebuild_tensor_v3``'s dtype)."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, np.dtype(dtype)


class _Tensor:
    """A pickled torch tensor: ``size``/``stride`` (elements) into a storage from ``offset``."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None) -> None:
        if not isinstance(storage, _Storage):
            raise _Refused(f"a tensor's storage is a {type(storage).__name__}, not a torch storage")
        try:
            self.offset = operator.index(offset)
            self.size = tuple(operator.index(s) for s in size)
            self.stride = tuple(operator.index(s) for s in stride)
        except TypeError as err:
            raise _Refused(f"a tensor's offset, size or stride is not integers ({err})") from None
        if len(self.size) != len(self.stride):
            raise _Refused(f"a tensor has size {self.size} but stride {self.stride}")
        self.storage, self.dtype = storage, dtype

    def array(self) -> np.ndarray:
        """The tensor as a new C-contiguous numpy array in native byte order."""
        flat = self.storage.array()
        if self.dtype is not None:  # _rebuild_tensor_v3: an untyped (byte) storage read as dtype
            flat = flat.view(np.uint8)
            usable = len(flat) - len(flat) % self.dtype.itemsize
            flat = flat[:usable].view(self.dtype.newbyteorder("<" if self.storage.little else ">"))
        native = flat.dtype.newbyteorder("=")
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise _Refused(f"a tensor has a negative size, stride or offset ({self.size}, {self.stride}, "
                           f"{self.offset})")
        count = math.prod(self.size)
        if count > MAX_TENSOR_ELEMENTS:
            raise _Refused(f"a tensor of shape {self.size} is too large ({count} elements)")
        if count == 0:
            return np.zeros(self.size, native)
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if last >= len(flat):
            raise _Refused(f"a tensor of shape {self.size} (stride {self.stride}, offset {self.offset}) "
                           f"reaches past its storage of {len(flat)} elements")
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[st * item for st in self.stride], writeable=False)
        return np.ascontiguousarray(view, dtype=native)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _Tensor:
    """``torch._utils._rebuild_tensor_v2``: a lazy tensor (grad flags and metadata ignored)."""
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> _Tensor:
    """``torch._utils._rebuild_tensor_v3`` (an untyped storage plus the tensor's dtype)."""
    if not isinstance(dtype, _TorchDtype):
        raise _Refused(f"_rebuild_tensor_v3 got dtype {dtype!r}, not a torch dtype")
    return _Tensor(storage, storage_offset, size, stride, dtype.dtype)


class _Pickled:
    """A stand-in for a DensePose result class: keeps the pickled state (a dict)."""

    source_class = "?"
    state: Any = None  # the pickled dict (set by __setstate__; pickle does not call __init__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise _Refused(f"{self.source_class} built with arguments; expected pickled state")
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise _Refused(f"{self.source_class} has state of type {type(state).__name__}, expected a dict")
        self.state = state


class _ChartResult(_Pickled):
    """``DensePoseChartResult`` / ``DensePoseChartResultWithConfidences`` (labels, uv, confidences)."""


class _LegacyResult(_Pickled):
    """``DensePoseResult`` (2019-2020): ``results`` [(shape, base64 PNG)], ``boxes_xywh``."""


def _stand_in(base: type, module: str, name: str) -> type:
    return type(name, (base,), {"source_class": f"{module}.{name}", "__module__": __name__})


_CHART_CLASSES = ("DensePoseChartResult", "DensePoseChartResultWithConfidences")
_STAND_INS = {
    **{("densepose.structures.chart_result", n): _stand_in(_ChartResult, "densepose.structures.chart_result", n)
       for n in _CHART_CLASSES},
    **{(m, "DensePoseResult"): _stand_in(_LegacyResult, m, "DensePoseResult")
       for m in ("densepose.structures", "densepose.data.structures")},
}
_CSE_NAMES = ("DensePoseEmbeddingPredictorOutput", "DensePoseEmbeddingPredictorOutputWithConfidences")
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "LongStorage": "i8", "IntStorage": "i4",
    "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "UntypedStorage": "u1",
}
_TORCH_DTYPES = {
    "float64": "f8", "double": "f8", "float32": "f4", "float": "f4", "float16": "f2", "half": "f2",
    "int64": "i8", "long": "i8", "int32": "i4", "int": "i4", "int16": "i2", "short": "i2", "int8": "i1",
    "uint8": "u1", "bool": "?", "uint16": "u2", "uint32": "u4", "uint64": "u8",
}
_BUILTINS = {"list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset}


def _densepose_module(module: str) -> str | None:
    """``densepose.x.y`` for ``densepose.x.y`` or ``<package>.densepose.x.y``, else None."""
    parts = module.split(".")
    return ".".join(parts[parts.index("densepose"):]) if "densepose" in parts else None


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 only)."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise _Refused(f"refusing _codecs.encode(..., {encoding!r}) (only latin-1 text to bytes)")
    return text.encode("latin-1")


def _plain_bytes(*args: Any) -> bytes:
    """``bytes()`` from data only (``bytes(10**12)`` would allocate)."""
    if args and not isinstance(args[0], (bytes, bytearray, list, tuple)):
        raise _Refused(f"refusing bytes({type(args[0]).__name__})")
    return bytes(*args)


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1) restricted to the stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _Pickled)) or base is not object or state is not None:
        raise _Refused(f"refusing to reconstruct {cls!r}")
    return cls()


class _DumpUnpickler(pickle.Unpickler):
    """Resolves only what a DensePose dump holds; ``storages`` handles torch's persistent ids."""

    def __init__(self, stream: BinaryIO, storages: Callable[[Any], _Storage] | None,
                 nested_storages: bool) -> None:
        super().__init__(stream)
        self._storages = storages
        self._nested_storages = nested_storages

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise _Refused(f"unexpected persistent id {str(pid)[:80]!r} (not a torch storage record)")
        return self._storages(pid)

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _plain_bytes
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_tensor_v3
        if module == "torch" and name == "Size":
            return tuple
        if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name, _TORCH_DTYPES[name])
        if module == "torch.storage" and name == "_load_from_bytes" and self._nested_storages:
            return _storage_from_bytes
        densepose = _densepose_module(module)
        if densepose is not None and (densepose, name) in _STAND_INS:
            return _STAND_INS[(densepose, name)]
        if densepose is not None and name in _CSE_NAMES:
            raise _Refused(f"it holds CSE (continuous surface embedding) outputs ({module}.{name}), which have no "
                           "I/U/V; run `apply_net.py dump` with a DensePose chart (IUV) model, e.g. "
                           "densepose_rcnn_R_50_FPN_s1x")
        raise _Refused(f"the pickle references {module}.{name}, which is not part of a DensePose dump (only "
                       "lists, dicts, torch tensors and densepose chart results are); refusing to load it")


def _storage_record(pid: Any) -> tuple[_StorageType, str, int, Any]:
    """``(type, key, numel, view_metadata)`` of a ``('storage', type, key, location, numel[, view])`` id."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
        raise _Refused(f"unexpected persistent id {str(pid)[:80]!r} (not a torch storage record)")
    storage_type, key, _location, numel = pid[1:5]  # the location ('cpu', 'cuda:0', ...) is ignored
    if not isinstance(storage_type, _StorageType):
        raise _Refused(f"storage record with type {storage_type!r}")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise _Refused(f"malformed storage record {str(pid)[:80]!r}")
    if numel * storage_type.dtype.itemsize > MAX_STORAGE_BYTES:
        raise _Refused(f"storage {key} of {numel} elements is too large")
    return storage_type, key, numel, pid[5] if len(pid) == 6 else None


def _byte_dtype(dtype: np.dtype, little: bool) -> np.dtype:
    return dtype.newbyteorder("<" if little else ">")


def _load_zip(path: str) -> Any:
    """The object of a ``torch.save`` zip archive, tensors as :class:`_Tensor`."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise DumpError(f"{path}: {NOT_A_DUMP}: a zip archive without a torch 'data.pkl' record")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise DumpError(f"{path}: unknown byte order {byteorder!r} in its 'byteorder' record")
        storages: dict[str, _Storage] = {}

        def storage(pid: Any) -> _Storage:
            storage_type, key, numel, _ = _storage_record(pid)
            if key not in storages:
                record = f"{prefix}data/{key}"
                try:
                    info = archive.getinfo(record)
                except KeyError:
                    raise _Refused(f"its storage record {record!r} is missing") from None
                little = byteorder == "little"
                found = _Storage(_byte_dtype(storage_type.dtype, little), numel, key, little)
                if info.file_size < numel * found.dtype.itemsize:
                    raise _Refused(f"storage record {record!r} holds {info.file_size} bytes, expected "
                                   f"{numel * found.dtype.itemsize}")
                found.fill(archive.read(record)[: numel * found.dtype.itemsize], repr(record))
                storages[key] = found
            return storages[key]

        return _DumpUnpickler(io.BytesIO(archive.read(pickles[0])), storage, nested_storages=False).load()


def _load_legacy(stream: BinaryIO, nested_storages: bool) -> Any:
    """The rest of a legacy ``torch.save`` stream after its magic number."""
    plain = _DumpUnpickler(stream, None, nested_storages=False)
    if plain.load() != _LEGACY_PROTOCOL:
        raise _Refused("a torch legacy stream with an unknown protocol version")
    sys_info = _DumpUnpickler(stream, None, nested_storages=False).load()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    roots: dict[str, _Storage] = {}
    views: dict[str, _Storage] = {}

    def storage(pid: Any) -> _Storage:
        storage_type, key, numel, view = _storage_record(pid)
        if key not in roots:
            roots[key] = _Storage(_byte_dtype(storage_type.dtype, little), numel, key, little)
        if view is None:
            return roots[key]
        try:
            view_key, offset, view_size = view
        except (TypeError, ValueError):
            raise _Refused(f"malformed storage view {view!r}") from None
        if view_key not in views:
            views[view_key] = _Storage(roots[key].dtype, operator.index(view_size), str(view_key), little,
                                       roots[key], operator.index(offset))
        return views[view_key]

    result = _DumpUnpickler(stream, storage, nested_storages=nested_storages).load()
    keys = _DumpUnpickler(stream, None, nested_storages=False).load()
    if not isinstance(keys, list):
        raise _Refused("a torch legacy stream without its list of storage keys")
    for key in keys:
        if key not in roots:
            raise _Refused(f"storage key {key!r} listed but never used")
        header = stream.read(8)
        if len(header) != 8:
            raise _Refused("the file ends before its storages")
        (numel,) = struct.unpack("<q" if little else ">q", header)
        found = roots[key]
        if numel != found.numel:
            raise _Refused(f"storage {key} holds {numel} elements, its record says {found.numel}")
        found.fill(stream.read(numel * found.dtype.itemsize), repr(key))
    return result


def _storage_from_bytes(data: Any) -> _Storage:
    """``torch.storage._load_from_bytes``: a storage saved with ``torch.save`` into bytes."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(f"_load_from_bytes got a {type(data).__name__}, not bytes")
    stream = io.BytesIO(bytes(data))
    if data[:2] == b"PK":
        raise _Refused("a storage saved as a zip inside a pickle (not what torch writes)")
    if _DumpUnpickler(stream, None, nested_storages=False).load() != _LEGACY_MAGIC:
        raise _Refused("_load_from_bytes data is not a torch storage")
    found = _load_legacy(stream, nested_storages=False)
    if not isinstance(found, _Storage):
        raise _Refused(f"_load_from_bytes data holds a {type(found).__name__}, not a storage")
    return found


_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                zipfile.BadZipFile, struct.error, UnicodeDecodeError, OverflowError, RecursionError, MemoryError)


def _read_dump(path: str) -> tuple[Any, str]:
    """The unpickled dump (tensors as :class:`_Tensor`) and its layout name."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no dump file at {path!r}")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path), "torch.save"
        with open(path, "rb") as stream:
            head = stream.read(2)
            if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
                raise DumpError(f"{path}: {NOT_A_DUMP}: neither a torch.save zip archive nor a pickle")
            stream.seek(0)
            first = _DumpUnpickler(stream, None, nested_storages=True).load()
            if isinstance(first, int) and first == _LEGACY_MAGIC:
                return _load_legacy(stream, nested_storages=True), "torch.save (legacy)"
            return first, "pickle"
    except _Refused as err:
        raise DumpError(f"{path}: {_one_line(err)}") from None
    except DumpError:
        raise
    except _READ_ERRORS as err:
        raise DumpError(f"{path}: {NOT_A_DUMP}: {type(err).__name__}: {_one_line(err)}") from None


# --------------------------------------------------------------------------------------------
# From the unpickled objects to ImageResult.

def _array(value: Any, where: str, what: str) -> np.ndarray:
    if not isinstance(value, _Tensor):
        raise DumpError(f"{where}: {what} is a {type(value).__name__}, expected a torch tensor")
    try:
        return value.array()
    except _Refused as err:
        raise DumpError(f"{where}: {what}: {_one_line(err)}") from None


def _labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise DumpError(f"{where}: labels must be an (h, w) integer tensor, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > NUM_PARTS):
        raise DumpError(f"{where}: labels must be 0-{NUM_PARTS}, got {labels.min()}-{labels.max()}")
    return labels.astype(np.uint8)


def _chart_result(item: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (h, w) uint8, uv (2, h, w) float32)`` of a chart result."""
    if not isinstance(item, _ChartResult):
        raise DumpError(f"{where}: is a {getattr(item, 'source_class', type(item).__name__)}, expected "
                        "a densepose chart result (DensePoseChartResultWithConfidences)")
    state = item.state if isinstance(item.state, dict) else {}
    for field in ("labels", "uv"):
        if field not in state:
            raise DumpError(f"{where}: {item.source_class} without {field!r}")
    labels = _labels(_array(state["labels"], where, "labels"), where)
    uv = _array(state["uv"], where, "uv")
    if uv.ndim != 3 or uv.shape != (2, *labels.shape) or uv.dtype.kind != "f":
        raise DumpError(f"{where}: uv must be a (2, h, w) float tensor with labels' (h, w) = {labels.shape}, "
                        f"got {uv.dtype} {uv.shape}")
    if not np.isfinite(uv).all():
        raise DumpError(f"{where}: uv holds NaN or infinite values")
    return labels, uv.astype(np.float32)


def _decode_png_result(entry: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, uv)`` of a ``DensePoseResult.results`` entry ``(shape, base64 PNG)``."""
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
        raise DumpError(f"{where}: expected a (shape, base64 PNG) pair, got {type(entry).__name__}")
    shape, text = entry if isinstance(entry[1], (str, bytes)) else entry[::-1]
    if not isinstance(text, (str, bytes)):
        raise DumpError(f"{where}: expected a (shape, base64 PNG) pair without a string")
    try:
        shape = tuple(operator.index(s) for s in shape)
        png = base64.decodebytes(text.encode("ascii") if isinstance(text, str) else text)
    except (TypeError, ValueError, binascii.Error, UnicodeEncodeError) as err:
        raise DumpError(f"{where}: malformed (shape, base64 PNG) entry ({_one_line(err)})") from None
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED) if png else None
    if bgr is None or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise DumpError(f"{where}: its PNG is not a readable 3-channel 8-bit image")
    if shape != (3, *bgr.shape[:2]):
        raise DumpError(f"{where}: its PNG is {bgr.shape[0]}x{bgr.shape[1]}, its recorded shape {shape}")
    labels = _labels(bgr[..., 2], where)  # PIL wrote R = I, G = U, B = V; OpenCV decodes to BGR
    quantized = np.stack([bgr[..., 1], bgr[..., 0]]).astype(np.float32)
    uv = np.where(labels > 0, np.minimum((quantized + 0.5) / 255.0, 1.0), quantized / 255.0)
    return labels, uv.astype(np.float32)


def _image_result(entry: Any, index: int, path: str, layout: str) -> ImageResult:
    where = f"{path}: image {index}"
    if not isinstance(entry, dict):
        raise DumpError(f"{where} is a {type(entry).__name__}, expected a dict ({NOT_A_DUMP})")
    file_name = entry.get("file_name")
    if not isinstance(file_name, str):
        raise DumpError(f"{where} has no 'file_name' string ({NOT_A_DUMP})")
    where = f"{path}: image {index} ({file_name})"
    if "instances" in entry:
        raise DumpError(f"{where}: holds detectron2 Instances (the dump format before 2019-10-23), which "
                        "this tool does not read; dump again with a newer apply_net.py")
    for key in ("scores", "pred_boxes_XYXY"):
        if key not in entry:
            raise DumpError(f"{where}: no {key!r} ({NOT_A_DUMP})")
    scores = _array(entry["scores"], where, "scores")
    boxes = _array(entry["pred_boxes_XYXY"], where, "pred_boxes_XYXY")
    if scores.ndim != 1 or boxes.shape != (len(scores), 4):
        raise DumpError(f"{where}: scores {scores.shape} and pred_boxes_XYXY {boxes.shape} do not match "
                        "(expected (N,) and (N, 4))")
    if not (np.isfinite(scores).all() and np.isfinite(boxes).all()):
        raise DumpError(f"{where}: scores or boxes hold NaN or infinite values")
    pred = entry.get("pred_densepose")
    if pred is None:
        if len(scores):
            raise DumpError(f"{where}: {len(scores)} detections but no 'pred_densepose' (was the model a "
                            "DensePose model?)")
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
    elif isinstance(pred, _LegacyResult):
        layout = "DensePoseResult"
        results = pred.state.get("results") if isinstance(pred.state, dict) else None
        if not isinstance(results, list):
            raise DumpError(f"{where}: DensePoseResult without a 'results' list")
        pairs = [_decode_png_result(r, f"{where}: detection {k}") for k, r in enumerate(results)]
    elif isinstance(pred, (list, tuple)):
        pairs = [_chart_result(r, f"{where}: detection {k}") for k, r in enumerate(pred)]
    else:
        raise DumpError(f"{where}: pred_densepose is a {getattr(pred, 'source_class', type(pred).__name__)}, "
                        "expected a list of chart results")
    if len(pairs) != len(scores):
        raise DumpError(f"{where}: {len(pairs)} DensePose results for {len(scores)} detections")
    return ImageResult(file_name=file_name, scores=scores.astype(np.float32), boxes_xyxy=boxes.astype(np.float32),
                       labels=tuple(p[0] for p in pairs), uv=tuple(p[1] for p in pairs), layout=layout)


def load_dump(path: str | os.PathLike) -> list[ImageResult]:
    """Reads an ``apply_net.py dump`` file (any of the three layouts) without torch or detectron2.

    Returns:
      One :class:`ImageResult` per image, in the dump's order.

    Raises:
      FileNotFoundError: no file at ``path``.
      DumpError: not such a dump, or it references a class a dump never holds (refused
        unread), or its contents are malformed; the message is one line naming the file.
    """
    path = os.fspath(path)
    raw, layout = _read_dump(path)
    if not isinstance(raw, list):
        raise DumpError(f"{path}: {NOT_A_DUMP}: it holds a {type(raw).__name__}, expected the list of "
                        "per-image dicts")
    return [_image_result(entry, k, path, layout) for k, entry in enumerate(raw)]


# --------------------------------------------------------------------------------------------
# The IUV image.

def _paste_order(scores: np.ndarray, score_threshold: float, highest_score_wins: bool) -> np.ndarray:
    """Indices of the boxes with score > threshold, in paste order (ties: dump order)."""
    scores = np.asarray(scores, np.float64)
    keep = np.flatnonzero(scores > score_threshold)
    key = -scores[keep] if highest_score_wins else scores[keep]
    return keep[np.argsort(key, kind="stable")]


def _placements(result: ImageResult, height: int, width: int, score_threshold: float,
                highest_score_wins: bool) -> list[tuple[int, int, int]]:
    """``(detection, x0, y0)`` in paste order; raises ValueError for a map outside the image."""
    height, width = operator.index(height), operator.index(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not (len(result.labels) == len(result.uv) == len(result.scores) == len(result.boxes_xyxy)):
        raise ValueError(f"{result.file_name}: {len(result.scores)} scores, {len(result.boxes_xyxy)} boxes, "
                         f"{len(result.labels)} labels and {len(result.uv)} uv maps")
    placements = []
    for k in _paste_order(result.scores, score_threshold, highest_score_wins):
        h, w = result.labels[k].shape
        x0, y0 = int(float(result.boxes_xyxy[k, 0])), int(float(result.boxes_xyxy[k, 1]))  # truncation
        if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
            box = ", ".join(f"{v:g}" for v in result.boxes_xyxy[k])
            raise ValueError(f"{result.file_name}: detection {k} (box x0, y0, x1, y1 = {box}; its {h}x{w} map "
                             f"at x={x0}, y={y0}) lies outside the {height}x{width} (height x width) image")
        placements.append((int(k), x0, y0))
    return placements


def iuv_image(result: ImageResult, height: int, width: int, *, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
              highest_score_wins: bool = False) -> np.ndarray:
    """The ``(height, width, 3)`` uint8 IUV map Detectron's vis.py builds from these detections.

    Channels in array order I, ``trunc(255 U)``, ``trunc(255 V)`` (``cv2.imwrite`` it as is: I
    lands in the PNG's blue channel). Boxes with ``score > score_threshold`` are pasted from the
    lowest score up (``highest_score_wins``: from the highest down) at ``(int(x0), int(y0))``,
    every element of every channel only where the map is still 0.

    Raises:
      ValueError: a pasted box's map does not lie inside the image (the message names the box).
    """
    placements = _placements(result, height, width, score_threshold, highest_score_wins)
    canvas = np.zeros((height, width, 3), np.float32)  # float32 holds every pasted value exactly
    for k, x0, y0 in placements:
        labels, uv = result.labels[k], result.uv[k]
        h, w = labels.shape
        region = canvas[y0:y0 + h, x0:x0 + w]
        new = np.stack([labels.astype(np.float32), uv[0], uv[1]], axis=-1)
        free = region == 0
        region[free] = new[free]
    iuv = np.empty((height, width, 3), np.uint8)
    iuv[..., 0] = np.clip(canvas[..., 0], 0, 255)
    scaled = canvas[..., 1:].astype(np.float64) * 255.0
    np.clip(scaled, 0.0, 255.0, out=scaled)
    iuv[..., 1:] = scaled.astype(np.uint8)  # truncation, as vis.py's astype(np.uint8)
    return iuv


# --------------------------------------------------------------------------------------------
# Files.

def iuv_file_name(file_name: str) -> str:
    """``<stem>_IUV.png`` for an image path (``os.path.splitext`` of its file name)."""
    return os.path.splitext(os.path.basename(file_name))[0] + IUV_SUFFIX


def _image_candidates(file_name: str, dump_path: str, image_dir: str | None) -> list[str]:
    base = os.path.basename(file_name)
    if image_dir is not None:
        return [os.path.join(image_dir, base)]
    dump_dir = os.path.dirname(os.path.abspath(dump_path))
    candidates = [file_name]
    if not os.path.isabs(file_name):
        candidates.append(os.path.join(dump_dir, file_name))
    candidates.append(os.path.join(dump_dir, base))
    return list(dict.fromkeys(candidates))


def image_size(file_name: str, dump_path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None
               ) -> tuple[int, int]:
    """``(height, width)`` of a dump's image, read with OpenCV (EXIF orientation applied).

    Looks at ``image_dir/<file name>`` if ``image_dir`` is given, else at ``file_name`` as
    written, then relative to the dump's folder, then its bare file name in the dump's folder.

    Raises:
      FileNotFoundError: none of those exists. ValueError: the file is not a readable image.
    """
    dump_path = os.fspath(dump_path)
    candidates = _image_candidates(file_name, dump_path, None if image_dir is None else os.fspath(image_dir))
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                image = cv2.imdecode(np.fromfile(candidate, np.uint8), cv2.IMREAD_COLOR)
            except (OSError, cv2.error):
                image = None
            if image is None:
                raise ValueError(f"{dump_path}: image {file_name!r}: {candidate} is not an image OpenCV can read")
            return int(image.shape[0]), int(image.shape[1])
    raise FileNotFoundError(
        f"{dump_path}: image {file_name!r} not found (looked at {', '.join(candidates)}); its size is the "
        "_IUV.png's size: pass --image_dir=DIR holding the images (looked up by file name), or "
        "--image_height/--image_width when all images have one size")


def _check_threshold(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def write_iuv_pngs(
    dump_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    min_top_score: float = DEFAULT_MIN_TOP_SCORE,
    highest_score_wins: bool = False,
    write_empty: bool = False,
    image_dir: str | os.PathLike | None = None,
    image_shape: tuple[int, int] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[WrittenImage]:
    """Writes ``output_dir/<stem>_IUV.png`` for each image of a dump, as Detectron's infer_simple.py.

    An image gets a file when its best score is ``>= min_top_score`` (Detectron: 0.7) or
    ``write_empty``; the map pastes the boxes with ``score > score_threshold`` (:func:`iuv_image`).
    Every image's size (``image_shape`` ``(H, W)`` for all, else :func:`image_size`) and every
    output name is checked before anything is written.

    Returns:
      One :class:`WrittenImage` per image in the dump.

    Raises:
      FileNotFoundError, DumpError, ValueError, OSError: one-line messages naming the file.
    """
    dump_path = os.fspath(dump_path)
    output_dir = os.fspath(output_dir)
    score_threshold = _check_threshold(score_threshold, "score_threshold")
    min_top_score = _check_threshold(min_top_score, "min_top_score")
    if image_dir is not None and image_shape is not None:
        raise ValueError("give image_dir or an image size, not both")
    if image_dir is not None and not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image_dir {os.fspath(image_dir)!r} is not a directory")
    if image_shape is not None:
        image_shape = tuple(operator.index(v) for v in image_shape)
        if len(image_shape) != 2 or min(image_shape) <= 0:
            raise ValueError(f"image size must be two positive integers (height, width), got {image_shape}")
    say = log or (lambda _: None)
    results = load_dump(dump_path)
    names: dict[str, str] = {}
    for result in results:
        name = iuv_file_name(result.file_name)
        if name in names and names[name] != result.file_name:
            raise ValueError(f"{dump_path}: images {names[name]!r} and {result.file_name!r} would both write "
                             f"{name}; dump them separately")
        names[name] = result.file_name
    sizes = [image_shape or image_size(r.file_name, dump_path, image_dir=image_dir) for r in results]
    for result, (height, width) in zip(results, sizes):  # every box inside its image, before writing
        try:
            _placements(result, height, width, score_threshold, highest_score_wins)
        except ValueError as err:
            raise ValueError(f"{dump_path}: {_one_line(err)}") from None
    os.makedirs(output_dir, exist_ok=True)
    done: list[WrittenImage] = []
    for result, (height, width) in zip(results, sizes):
        people = int(np.count_nonzero(result.scores.astype(np.float64) > score_threshold))
        top = float(result.scores.max()) if len(result) else None
        nobody = f"no person with score > {score_threshold:g}" + ("" if top is None else f" (best {top:.3f})")
        if top is not None and top >= min_top_score:
            note, write = ("" if people else nobody), True  # Detectron writes the map, even all zero
        elif people:
            note, write = (f"best score {top:.3f} is below --min_top_score={min_top_score:g} (Detectron's "
                           "infer_simple.py writes no file then)"), write_empty
        else:
            note, write = nobody, write_empty
        if not write:
            say(f"{result.file_name}: {note}; no {IUV_SUFFIX} written (--write_empty writes one)")
            done.append(WrittenImage(result.file_name, None, 0, note))
            continue
        iuv = iuv_image(result, height, width, score_threshold=score_threshold,
                        highest_score_wins=highest_score_wins)
        path = os.path.join(output_dir, iuv_file_name(result.file_name))
        if not cv2.imwrite(path, iuv):
            raise OSError(f"OpenCV could not write {path}")
        say(f"wrote {path}: {people} {'person' if people == 1 else 'people'} pasted"
            + (f" ({note})" if note else ""))
        done.append(WrittenImage(result.file_name, path, people, note))
    written = [d for d in done if d.path is not None]
    say(f"{len(results)} image(s) in {dump_path}: wrote {len(written)} {IUV_SUFFIX} file(s) to {output_dir} "
        f"({sum(d.people for d in written)} people); {len(results) - len(written)} image(s) without a file")
    return done


# --------------------------------------------------------------------------------------------
# Command line.

def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as the one-line ``PROGRAM: error: ...`` and status 2."""

    def error(self, message: str) -> NoReturn:
        cli.fail(PROGRAM, _one_line(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROGRAM, description="DensePose result files for dct_jax.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub = commands.add_parser(
        "from-detectron2", help="detectron2 `apply_net.py dump` file -> Detectron's <image>_IUV.png files",
        description=("Write <stem>_IUV.png per image of a detectron2 DensePose dump (apply_net.py dump ... "
                     "--output results.pkl), as Detectron's tools/infer_simple.py wrote them."))
    sub.add_argument("dump", help="the dump file (results.pkl)")
    sub.add_argument("--output_dir", required=True, help="folder for the _IUV.png files (created if missing)")
    sub.add_argument("--score_threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                     help="paste detections with score > this (default %(default)s, Detectron's vis.py)")
    sub.add_argument("--min_top_score", type=float, default=DEFAULT_MIN_TOP_SCORE,
                     help=("write an image's file only if its best score is >= this (default %(default)s, "
                           "infer_simple.py's thresh)"))
    sub.add_argument("--highest_score_wins", action="store_true",
                     help="where people overlap keep the higher score's values (Detectron keeps the lower's)")
    sub.add_argument("--write_empty", action="store_true",
                     help="also write (all-zero) maps for images without a person above the thresholds")
    sub.add_argument("--image_dir", help="folder holding the images (looked up by file name), for their sizes")
    sub.add_argument("--image_height", type=int, help="size of every image (with --image_width); no image is read")
    sub.add_argument("--image_width", type=int, help="see --image_height")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dct_jax.densepose_io from-detectron2 ...``; a user error exits with status 2."""
    args = _parser().parse_args(argv)
    if (args.image_height is None) != (args.image_width is None):
        cli.fail(PROGRAM, "give --image_height and --image_width together")
    shape = None if args.image_height is None else (args.image_height, args.image_width)
    if shape is not None and args.image_dir is not None:
        cli.fail(PROGRAM, "give --image_dir or --image_height/--image_width, not both")
    try:
        write_iuv_pngs(args.dump, args.output_dir, score_threshold=args.score_threshold,
                       min_top_score=args.min_top_score, highest_score_wins=args.highest_score_wins,
                       write_empty=args.write_empty, image_dir=args.image_dir, image_shape=shape)
    except (OSError, ValueError) as err:  # DumpError is a ValueError
        cli.fail(PROGRAM, _one_line(err))
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module (one DumpError class).
    from dct_jax.densepose_io import main as _main

    sys.exit(_main())
