"""Tests for ``dct_jax.densepose_io``: detectron2 DensePose dumps -> Detectron's ``_IUV.png``.

Dumps are written with torch (a test-only dependency, imported inside the tests) in the three
layouts ``apply_net.py dump`` produced, with stand-in DensePose classes registered under
detectron2's real module paths so that the pickles name exactly what a real dump names.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile
from typing import Any

import cv2
import numpy as np
import pytest

from dct_jax import densepose_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = "python -m dct_jax.densepose_io"
H, W = 40, 60  # the test image


# Stand-ins for detectron2's classes, pickled under their real names.
@dataclasses.dataclass
class DensePoseChartResult:
    labels: Any
    uv: Any


@dataclasses.dataclass
class DensePoseChartResultWithConfidences:
    labels: Any
    uv: Any
    sigma_1: Any = None
    sigma_2: Any = None
    kappa_u: Any = None
    kappa_v: Any = None
    fine_segm_confidence: Any = None
    coarse_segm_confidence: Any = None


class DensePoseResult2019:
    """``densepose.structures.DensePoseResult`` (2019-10 to 2020-04): results [(shape, base64 PNG)]."""

    __module__ = "densepose.structures"
    __qualname__ = "DensePoseResult"

    def __init__(self, results, boxes_xywh):
        self.results = results
        self.boxes_xywh = boxes_xywh


class DensePoseResult2020(DensePoseResult2019):
    """The same class after its move to ``densepose.data.structures`` (2020-04 to 2020-10)."""

    __module__ = "densepose.data.structures"
    __qualname__ = "DensePoseResult"


@dataclasses.dataclass
class DensePoseEmbeddingPredictorOutput:
    embedding: Any
    coarse_segm: Any


# Set after the dataclass decorator ran (it resolves the annotations in the class's module).
DensePoseChartResult.__module__ = "densepose.structures.chart_result"
DensePoseChartResultWithConfidences.__module__ = "densepose.structures.chart_result"
DensePoseEmbeddingPredictorOutput.__module__ = "densepose.structures.cse"


@pytest.fixture
def densepose_modules(monkeypatch):
    """``densepose.*`` modules in ``sys.modules`` holding the stand-ins (pickle looks them up there)."""
    contents = {
        "densepose": {},
        "densepose.structures": {"DensePoseResult": DensePoseResult2019},
        "densepose.structures.chart_result": {"DensePoseChartResult": DensePoseChartResult,
                                              "DensePoseChartResultWithConfidences":
                                                  DensePoseChartResultWithConfidences},
        "densepose.structures.cse": {"DensePoseEmbeddingPredictorOutput": DensePoseEmbeddingPredictorOutput},
        "densepose.data": {},
        "densepose.data.structures": {"DensePoseResult": DensePoseResult2020},
    }
    for name, attributes in contents.items():
        module = types.ModuleType(name)
        for key, value in attributes.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)


@dataclasses.dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    labels: np.ndarray  # (h, w) int64, h, w = make_int_box's size
    uv: np.ndarray  # (2, h, w) float32


def _detection(box, score, h, w, part, u, v, background_rows=0) -> Detection:
    labels = np.full((h, w), part, np.int64)
    labels[:background_rows] = 0
    uv = np.stack([np.full((h, w), u, np.float32), np.full((h, w), v, np.float32)])
    uv[:, labels == 0] = 0
    return Detection(box, np.float32(score), labels, uv)


def scene(zero_width: bool = True) -> list[Detection]:
    """Five detections of an H x W image, not in score order.

    A (0.9) at x=int(10.7)=10, y=int(5.2)=5, 19 x 20 (w = int(19.3), h = int(20.7)), its first row
    background; B (0.8) overlapping it, with V exactly 0; C covers the image at float32(0.65),
    which is not > 0.65; D (0.7) is 0.4 px wide (detectron2 gives it a 1-px map) with U, V
    outside [0, 1]; E (0.95) has a 0-px-wide map.
    """
    dets = [
        _detection((20.0, 15.0, 45.5, 35.0), 0.8, 20, 25, 7, 0.3, 0.0),  # B
        _detection((10.7, 5.2, 30.0, 25.9), 0.9, 20, 19, 3, 0.5, 0.999, background_rows=1),  # A
        _detection((0.0, 0.0, 60.0, 40.0), 0.65, 40, 60, 24, 0.1, 0.1),  # C
        _detection((50.2, 2.0, 50.6, 12.0), 0.7, 10, 1, 5, 1.02, -0.01),  # D
    ]
    if zero_width:
        dets.append(_detection((55.0, 30.0, 55.5, 35.0), 0.95, 5, 0, 9, 0.5, 0.5))  # E
    return dets


def expected_iuv(*, highest_score_wins: bool = False, quantized: bool = False) -> np.ndarray:
    """The scene's IUV map, by hand: I, trunc(255 U), trunc(255 V).

    255 * 0.5 = 127.5 -> 127, 255 * 0.999 = 254.7 -> 254, 255 * float32(0.3) = 76.5 -> 76
    (rounding would give 128, 255, 77); U = 1.02 -> 255, V = -0.01 -> 0; C is not pasted.
    """
    iuv = np.zeros((H, W, 3), np.uint8)
    iuv[2:12, 50] = (5, 255, 0)  # D
    if highest_score_wins:
        iuv[15:35, 20:45] = (7, 76, 0)  # B
        iuv[6:25, 10:29] = (3, 127, 254)  # A (rows 6-24; its first row is background)
    else:
        iuv[6:25, 10:29] = (3, 127, 254)  # A
        iuv[15:35, 20:45] = (7, 76, 0)  # B, pasted first, keeps its I and U where they overlap ...
        # ... but its V is exactly 0 there, so A's V fills it (vis.py's per-element paste). In the
        # 2019-2020 layout V is quantized: q = 0 could have been any V < 1/255, read as 0.5/255.
        iuv[15:25, 20:29, 2] = 0 if quantized else 254
    return iuv


def image_result(dets: list[Detection], file_name: str = "a.jpg") -> densepose_io.ImageResult:
    return densepose_io.ImageResult(
        file_name=file_name, scores=np.array([d.score for d in dets], np.float32).reshape(-1),
        boxes_xyxy=np.array([d.box for d in dets], np.float32).reshape(-1, 4),
        labels=tuple(d.labels.astype(np.uint8) for d in dets), uv=tuple(d.uv for d in dets))


# --------------------------------------------------------------------------------------------
# Writing dumps with torch.

def _torch():
    return pytest.importorskip("torch")


def chart_entry(file_name: str, dets: list[Detection]) -> dict:
    """One image as ``apply_net.py dump`` records it since 2020-10 (tensors with odd strides)."""
    torch = _torch()
    results = []
    for k, d in enumerate(dets):
        labels = torch.from_numpy(np.ascontiguousarray(d.labels.T)).T  # stride (1, h)
        big = torch.zeros((3, *d.labels.shape), dtype=torch.float32)
        big[1:] = torch.from_numpy(d.uv)
        uv = big[1:]  # storage offset h * w
        if k == 0:
            results.append(DensePoseChartResultWithConfidences(
                labels=labels, uv=uv, sigma_2=torch.ones(d.labels.shape), fine_segm_confidence=torch.ones(1)))
        elif k == 1:
            results.append(DensePoseChartResult(labels=labels, uv=uv))
        else:
            results.append(DensePoseChartResultWithConfidences(labels=labels, uv=uv))
    return {"file_name": file_name,
            "scores": torch.tensor([d.score for d in dets], dtype=torch.float32),
            "pred_boxes_XYXY": torch.tensor([d.box for d in dets], dtype=torch.float32).reshape(-1, 4),
            "pred_densepose": results}


def legacy_entry(file_name: str, dets: list[Detection], cls: type) -> dict:
    """One image as ``apply_net.py dump`` recorded it in 2019-2020 (DensePoseResult, PNG strings)."""
    torch = _torch()
    from PIL import Image

    results = []
    for d in dets:
        labels, u, v = torch.from_numpy(d.labels), torch.from_numpy(d.uv[0]), torch.from_numpy(d.uv[1])
        result = torch.zeros((3, *d.labels.shape), dtype=torch.uint8)  # DensePoseResult._output_to_result
        result[0] = labels
        result[1][labels > 0] = (u[labels > 0] * 255).clamp(0, 255).to(torch.uint8)
        result[2][labels > 0] = (v[labels > 0] * 255).clamp(0, 255).to(torch.uint8)
        stream = io.BytesIO()  # DensePoseResult.encode_png_data
        Image.fromarray(np.moveaxis(result.numpy(), 0, -1)).save(stream, format="png", optimize=True)
        results.append((tuple(result.shape), base64.encodebytes(stream.getvalue()).decode()))
    boxes = torch.tensor([d.box for d in dets], dtype=torch.float32)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    return {"file_name": file_name, "scores": torch.tensor([d.score for d in dets], dtype=torch.float32),
            "pred_boxes_XYXY": boxes, "pred_densepose": cls(results, xywh.tolist())}


LAYOUTS = ("torch.save", "pickle", "DensePoseResult2019", "DensePoseResult2020")


def write_dump(path, entries: list[dict], layout: str, location: str = "cpu", monkeypatch=None) -> str:
    """``entries`` saved as apply_net did; ``location`` tags every storage (e.g. ``cuda:0``)."""
    torch = _torch()
    patch = pytest.MonkeyPatch()
    if location != "cpu":  # torch.save asks location_tag() for each storage's device string
        patch.setattr(torch.serialization, "location_tag", lambda storage: location)
    try:
        with open(path, "wb") as stream:
            if layout == "torch.save":
                torch.save(entries, stream)
            else:
                pickle.dump(entries, stream)
    finally:
        patch.undo()
    with open(path, "rb") as stream:
        data = stream.read()
    if layout == "torch.save":
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert location.encode() in data
    return str(path)


def scene_dump(tmp_path, layout: str, location: str = "cpu", name: str = "results.pkl") -> str:
    legacy = layout.startswith("DensePoseResult")
    dets = scene(zero_width=not legacy)  # DensePoseResult maps are at least 1 px wide
    empty = {"file_name": "images/empty.jpg", "scores": _torch().zeros(0),
             "pred_boxes_XYXY": _torch().zeros((0, 4))}
    if legacy:
        cls = DensePoseResult2019 if layout == "DensePoseResult2019" else DensePoseResult2020
        entries = [legacy_entry("images/a.jpg", dets, cls), empty]
    else:
        entries = [chart_entry("images/a.jpg", dets), empty]
    return write_dump(tmp_path / name, entries, layout, location)


# --------------------------------------------------------------------------------------------
# The IUV map from arrays.

def test_iuv_image_matches_the_hand_computed_map():
    iuv = densepose_io.iuv_image(image_result(scene()), H, W)
    assert iuv.dtype == np.uint8 and iuv.shape == (H, W, 3)
    np.testing.assert_array_equal(iuv, expected_iuv())


def test_highest_score_wins_keeps_the_higher_score_where_people_overlap():
    iuv = densepose_io.iuv_image(image_result(scene()), H, W, highest_score_wins=True)
    np.testing.assert_array_equal(iuv, expected_iuv(highest_score_wins=True))


def test_truncation_not_rounding():
    dets = [_detection((0.0, 0.0, 4.0, 1.0), 0.9, 1, 4, 1, 0.0, 0.0)]
    dets[0].uv[0] = [0.999, 0.5, 1.0, 1.5]
    dets[0].uv[1] = [1 / 255, 254.5 / 255, 0.002, 0.0]
    iuv = densepose_io.iuv_image(image_result(dets), 1, 4)
    # In float64, as vis.py: 255 * float32(0.999) = 254.745 -> 254; 255 * float32(1/255) = 1.00000006 -> 1;
    # 255 * float32(254.5/255) = 254.49999 -> 254; 0.51 -> 0; 382.5 -> 255.
    np.testing.assert_array_equal(iuv[0], [[1, 254, 1], [1, 127, 254], [1, 255, 0], [1, 255, 0]])


def test_threshold_is_strict():
    def pasted(score, **kwargs):
        dets = [_detection((0.0, 0.0, 1.0, 1.0), score, 1, 1, 4, 0.5, 0.5)]
        return int(densepose_io.iuv_image(image_result(dets), 1, 1, **kwargs)[0, 0, 0])

    assert pasted(0.5, score_threshold=0.5) == 0
    assert pasted(0.5000001, score_threshold=0.5) == 4
    assert pasted(0.65) == 0  # float32(0.65) = 0.64999998
    assert pasted(0.6500001) == 4


def test_box_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match=r"a\.jpg: detection 0 .* lies outside the 20x60"):
        densepose_io.iuv_image(image_result(scene()), 20, W)


# --------------------------------------------------------------------------------------------
# Reading dumps.

@pytest.mark.parametrize("location", ["cpu", "cuda:0"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_dump_in_every_layout(tmp_path, densepose_modules, layout, location):
    path = scene_dump(tmp_path, layout, location)
    results = densepose_io.load_dump(path)
    assert [r.file_name for r in results] == ["images/a.jpg", "images/empty.jpg"]
    a, empty = results
    legacy = layout.startswith("DensePoseResult")
    dets = scene(zero_width=not legacy)
    assert a.layout == ("DensePoseResult" if legacy else layout)
    np.testing.assert_array_equal(a.scores, [d.score for d in dets])
    np.testing.assert_array_equal(a.boxes_xyxy, np.array([d.box for d in dets], np.float32))
    for got_labels, got_uv, d in zip(a.labels, a.uv, dets, strict=True):
        assert got_labels.dtype == np.uint8 and got_uv.dtype == np.float32
        np.testing.assert_array_equal(got_labels, d.labels)
        if legacy:  # quantized: the middle of the 1/255 step, exactly what truncation gives back
            q = np.clip(np.trunc(d.uv * np.float32(255)), 0, 255)
            np.testing.assert_array_equal(np.trunc(got_uv.astype(np.float64) * 255).clip(0, 255), q)
        else:
            np.testing.assert_array_equal(got_uv, d.uv)
    np.testing.assert_array_equal(densepose_io.iuv_image(a, H, W), expected_iuv(quantized=legacy))
    assert len(empty) == 0 and empty.labels == () and empty.boxes_xyxy.shape == (0, 4)


def test_legacy_torch_save_stream_and_protocol_2_pickle(tmp_path, densepose_modules):
    torch = _torch()
    path = tmp_path / "old.pt"
    torch.save([chart_entry("a.jpg", scene())], path, _use_new_zipfile_serialization=False)
    (result,) = densepose_io.load_dump(path)
    assert result.layout == "torch.save (legacy)"
    np.testing.assert_array_equal(densepose_io.iuv_image(result, H, W), expected_iuv())
    # Protocol 2 pickles bytes as _codecs.encode(text, "latin1").
    path.write_bytes(pickle.dumps([chart_entry("a.jpg", scene())], protocol=2))
    (result,) = densepose_io.load_dump(path)
    np.testing.assert_array_equal(densepose_io.iuv_image(result, H, W), expected_iuv())


def test_loads_without_torch_or_detectron2(tmp_path, densepose_modules):
    paths = {layout: scene_dump(tmp_path, layout, "cuda:0", name=f"{layout}.pkl") for layout in LAYOUTS}
    code = (
        "import json, sys\n"
        "for name in ('torch', 'detectron2', 'densepose'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from dct_jax import densepose_io\n"
        "out = {}\n"
        "for layout, path in json.loads(sys.argv[1]).items():\n"
        "    a = densepose_io.load_dump(path)[0]\n"
        "    out[layout] = densepose_io.iuv_image(a, 40, 60).tolist()\n"
        "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    maps = json.loads(done.stdout)
    for layout in LAYOUTS:
        expected = expected_iuv(quantized=layout.startswith("DensePoseResult"))
        np.testing.assert_array_equal(np.array(maps[layout], np.uint8), expected, err_msg=layout)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_classes_a_dump_never_holds(tmp_path, densepose_modules):
    marker = tmp_path / "pwned"
    cases = {
        f"{os.system.__module__}.system": [{"file_name": "a.jpg", "pred_densepose": [_Exploit(marker)]}],
        "collections.Counter": [{"file_name": "a.jpg", "extra": __import__("collections").Counter("ab")}],
        "test_densepose_io.Detection": [{"file_name": "a.jpg", "extra": scene()[0]}],
    }
    for name, data in cases.items():
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(data))
        with pytest.raises(densepose_io.DumpError) as error:
            densepose_io.load_dump(path)
        message = str(error.value)
        assert message.startswith(f"{path}: the pickle references {name}, ") and "refusing" in message, message
        assert "\n" not in message
    assert not marker.exists()

    torch = _torch()
    cse = tmp_path / "cse.pkl"
    torch.save([{"file_name": "a.jpg", "scores": torch.ones(1), "pred_boxes_XYXY": torch.ones(1, 4),
                 "pred_densepose": DensePoseEmbeddingPredictorOutput(torch.ones(1, 2), torch.ones(1, 2))}], cse)
    with pytest.raises(densepose_io.DumpError, match="CSE .* which have no I/U/V"):
        densepose_io.load_dump(cse)


def test_a_file_that_is_not_a_dump_is_one_clear_line(tmp_path, densepose_modules):
    torch = _torch()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), np.zeros((4, 4, 3), np.uint8))
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hi")
    a_dict = tmp_path / "dict.pkl"
    a_dict.write_bytes(pickle.dumps({"file_name": "a.jpg"}))
    model = tmp_path / "model.pth"
    torch.save({"weight": torch.ones(2)}, model)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps([chart_entry("a.jpg", scene())])[:-50])
    no_boxes = tmp_path / "no_boxes.pkl"
    torch.save([{"file_name": "a.jpg", "scores": torch.ones(1)}], no_boxes)
    bad_labels = tmp_path / "bad_labels.pkl"
    entry = chart_entry("a.jpg", scene()[:1])
    entry["pred_densepose"][0].labels = entry["pred_densepose"][0].labels + 30
    torch.save([entry], bad_labels)
    cases = {
        text: "not a detectron2 DensePose dump", png: "not a detectron2 DensePose dump",
        empty: "not a detectron2 DensePose dump", other_zip: "without a torch 'data.pkl' record",
        a_dict: "it holds a dict, expected the list of per-image dicts",
        model: "it holds a dict", truncated: "not a detectron2 DensePose dump",
        no_boxes: "image 0 (a.jpg): no 'pred_boxes_XYXY'", bad_labels: "labels must be 0-24, got 37-37",
    }
    for path, expected in cases.items():
        with pytest.raises(densepose_io.DumpError) as error:
            densepose_io.load_dump(path)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and expected in message and "\n" not in message, message
    with pytest.raises(FileNotFoundError, match="no dump file at"):
        densepose_io.load_dump(tmp_path / "nowhere.pkl")


# --------------------------------------------------------------------------------------------
# Files and the command line.

def _images(folder, size=(H, W)):
    os.makedirs(folder / "images", exist_ok=True)
    for name in ("a.jpg", "empty.jpg"):
        cv2.imwrite(str(folder / "images" / name), np.full((*size, 3), 128, np.uint8))


def test_write_iuv_pngs(tmp_path, densepose_modules):
    dump = scene_dump(tmp_path, "torch.save")
    _images(tmp_path)  # file_name "images/a.jpg" is relative: found beside the dump
    lines = []
    done = densepose_io.write_iuv_pngs(dump, tmp_path / "out", log=lines.append)
    a_png = str(tmp_path / "out" / "a_IUV.png")
    assert [(d.file_name, d.path, d.people) for d in done] == [("images/a.jpg", a_png, 4),
                                                              ("images/empty.jpg", None, 0)]
    assert sorted(os.listdir(tmp_path / "out")) == ["a_IUV.png"]
    assert lines == [
        f"wrote {a_png}: 4 people pasted",
        "images/empty.jpg: no person with score > 0.65; no _IUV.png written (--write_empty writes one)",
        f"2 image(s) in {dump}: wrote 1 _IUV.png file(s) to {tmp_path / 'out'} (4 people); 1 image(s) without a file",
    ]
    iuv = cv2.imread(a_png, cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(iuv, expected_iuv())
    from PIL import Image

    rgb = np.asarray(Image.open(a_png).convert("RGB"))
    np.testing.assert_array_equal(rgb[..., 2], expected_iuv()[..., 0])  # the PNG's blue channel holds I

    done = densepose_io.write_iuv_pngs(dump, tmp_path / "out2", write_empty=True, image_shape=(H, W), log=None)
    assert [d.people for d in done] == [4, 0]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out2" / "empty_IUV.png"), cv2.IMREAD_UNCHANGED),
                                  np.zeros((H, W, 3), np.uint8))

    os.rename(tmp_path / "images", tmp_path / "elsewhere")  # --image_dir: looked up by file name
    done = densepose_io.write_iuv_pngs(dump, tmp_path / "out3", image_dir=tmp_path / "elsewhere", log=None)
    np.testing.assert_array_equal(cv2.imread(done[0].path, cv2.IMREAD_UNCHANGED), expected_iuv())


def test_min_top_score_follows_infer_simple(tmp_path, densepose_modules):
    """Detectron writes nothing unless some score is >= 0.7, then pastes the scores > 0.65."""
    dets = [_detection((0.0, 0.0, 2.0, 2.0), 0.68, 2, 2, 4, 0.5, 0.5)]
    dump = write_dump(tmp_path / "r.pkl", [chart_entry("a.jpg", dets)], "torch.save")
    lines = []
    (done,) = densepose_io.write_iuv_pngs(dump, tmp_path / "out", image_shape=(4, 4), log=lines.append)
    assert done.path is None and "best score 0.680 is below --min_top_score=0.7" in lines[0]
    (done,) = densepose_io.write_iuv_pngs(dump, tmp_path / "out", image_shape=(4, 4), min_top_score=0.65, log=None)
    assert done.people == 1 and cv2.imread(done.path, cv2.IMREAD_UNCHANGED)[0, 0, 0] == 4


def test_write_errors_name_the_file(tmp_path, densepose_modules):
    dump = scene_dump(tmp_path, "torch.save")
    with pytest.raises(FileNotFoundError, match=r"image 'images/a.jpg' not found \(looked at images/a.jpg, "):
        densepose_io.write_iuv_pngs(dump, tmp_path / "out", log=None)
    _images(tmp_path, size=(30, W))
    with pytest.raises(ValueError, match=r"results.pkl: images/a.jpg: detection 0 .* outside the 30x60"):
        densepose_io.write_iuv_pngs(dump, tmp_path / "out", log=None)
    twins = write_dump(tmp_path / "twins.pkl", [chart_entry("x/a.jpg", []), chart_entry("y/a.png", [])], "pickle")
    with pytest.raises(ValueError, match="would both write a_IUV.png"):
        densepose_io.write_iuv_pngs(twins, tmp_path / "out", image_shape=(4, 4), log=None)
    assert not os.path.exists(tmp_path / "out")


def _run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "dct_jax.densepose_io", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_command_line(tmp_path, densepose_modules):
    dump = scene_dump(tmp_path, "pickle", "cuda:0")
    _images(tmp_path)
    out = tmp_path / "iuv"
    ok = _run("from-detectron2", dump, f"--output_dir={out}")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        f"wrote {out / 'a_IUV.png'}: 4 people pasted",
        "images/empty.jpg: no person with score > 0.65; no _IUV.png written (--write_empty writes one)",
        f"2 image(s) in {dump}: wrote 1 _IUV.png file(s) to {out} (4 people); 1 image(s) without a file",
    ]
    np.testing.assert_array_equal(cv2.imread(str(out / "a_IUV.png"), cv2.IMREAD_UNCHANGED), expected_iuv())

    bad = tmp_path / "bad.pkl"
    bad.write_text("not a dump")
    failed = _run("from-detectron2", bad, f"--output_dir={out}")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.splitlines() == [
        (f"{PROGRAM}: error: {bad}: not a detectron2 DensePose dump (the file `apply_net.py dump` writes): "
         "neither a torch.save zip archive nor a pickle")]


def test_command_line_user_errors_are_one_line(tmp_path, capsys, densepose_modules):
    dump = scene_dump(tmp_path, "torch.save")
    cases = [
        (["from-detectron2", str(dump)], "the following arguments are required: --output_dir"),
        (["from-detectron2", str(dump), "--output_dir=o", "--image_height=4"], "give --image_height and"),
        (["from-detectron2", str(dump), "--output_dir=o", f"--image_dir={tmp_path}", "--image_height=4",
          "--image_width=4"], "not both"),
        (["from-detectron2", str(dump), f"--output_dir={tmp_path / 'o'}"], "image 'images/a.jpg' not found"),
        (["from-detectron2", str(tmp_path / "none.pkl"), "--output_dir=o"], "no dump file at"),
        (["convert"], "invalid choice: 'convert'"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            densepose_io.main(argv)
        assert exit_info.value.code == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert captured.out == "" and len(lines) == 1, captured.err
        assert lines[0].startswith(f"{PROGRAM}: error: ") and expected in lines[0], (expected, lines[0])
