"""``viewer.html``: the demo's meshes over the photo in one self-contained, turnable web page.

    html = viewer.viewer_html(result)         # result: demo.DemoResult
    viewer.write_viewer(result, "demo_out/viewer.html")

The page needs no network and no other file: the photo is a data URL and the
meshes are little-endian float32 / uint32 arrays in base64, inside a JSON block
the page's script reads. It draws with the plain Canvas 2D API (no WebGL, no
library): the faces sorted back to front once per frame (a counting sort on
their depth; on a closed mesh the faces turned away are left out), one Lambert
shade per face from the mean of its corners' smooth normals (the overlay's
light and ambient), the mesh at the overlay's opacity over the photo.

The first view is the camera's: the photo at :func:`dct_jax.demo.picture_scale`
(the size of ``overlay.png``'s panels, embedded at that size) and every vertex
at ``demo.project_to_photo(vertices, camera, crop_box) * scale``, the same
weak-perspective formula, so the mesh covers the pixels ``overlay.png``'s first
panel covers. Dragging turns the mesh about the centre of its bounding box
(the pivot of ``demo.side_vertices``: "Side view" is ``overlay.png``'s second
panel); the wheel zooms photo and mesh together; shift- or right-drag moves
them; a double-click or "Camera view" goes back. With a ground truth
(synthetic-example mode) a second panel shows it beside the prediction; the two
turn together unless "turn together" is unticked.

The page also reads options after ``#`` in its address, e.g.
``viewer.html#view=side&photo=0``: ``view`` (``camera`` or ``side``), ``yaw``
and ``pitch`` (degrees), ``zoom`` and ``photo`` (0 hides the photo).
"""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Any

import cv2
import numpy as np

from dct_jax import demo, render

# A PNG larger than this (bytes) is embedded as a JPEG of this quality instead.
_MAX_PNG_BYTES = 1 << 21
_JPEG_QUALITY = 92
_ROTATED_PHOTO_ALPHA = 0.3  # the photo's opacity behind a turned mesh (it no longer matches)


def encode_array(array: np.ndarray, dtype: str) -> str:
    """Any array -> base64 of its values as little-endian ``dtype`` (``"<f4"``, ``"<u4"``), C order."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def decode_array(text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`encode_array`: base64 -> array of ``shape``."""
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype)).reshape(shape)


def picture(inputs: demo.DemoInputs) -> tuple[np.ndarray, float]:
    """The photo as the overlay's panels show it: ``((h, w, 3) uint8 RGB, scale)``, ``scale`` from
    :func:`demo.picture_scale` and ``(h, w) = round((H, W) * scale)`` (resized exactly as
    :func:`demo.panels` resizes it)."""
    height, width = inputs.image.shape[:2]
    scale = demo.picture_scale(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    image = cv2.resize(inputs.image, (size[1], size[0]),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return image, scale


def photo_data_url(image: np.ndarray, image_format: str = "auto") -> str:
    """``(H, W, 3)`` uint8 RGB -> a ``data:image/png`` (or ``image/jpeg``) base64 URL.

    ``image_format``: ``"png"`` (lossless), ``"jpeg"``, or ``"auto"``: PNG unless it
    exceeds 2 MiB (a large photo), then JPEG.
    """
    if image_format not in ("auto", "png", "jpeg"):
        raise ValueError(f"image_format must be 'auto', 'png' or 'jpeg', got {image_format!r}")
    bgr = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    encoded, mime = None, "image/png"
    if image_format in ("auto", "png"):
        ok, encoded = cv2.imencode(".png", bgr)
        if not ok:
            raise ValueError(f"could not encode a {image.shape} image as PNG")
    if image_format == "jpeg" or (image_format == "auto" and encoded.nbytes > _MAX_PNG_BYTES):
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise ValueError(f"could not encode a {image.shape} image as JPEG")
        mime = "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def is_closed(faces: np.ndarray) -> bool:
    """Whether ``faces (F, 3)`` is a closed, consistently oriented surface: every directed edge
    ``(a, b)`` occurs once and so does ``(b, a)`` (SMPL and the default body are)."""
    faces = np.asarray(faces, np.int64)
    if faces.size == 0:
        return False
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = int(faces.max()) + 1
    forward, backward = edges[:, 0] * n + edges[:, 1], edges[:, 1] * n + edges[:, 0]
    forward.sort()
    backward.sort()
    return bool(np.all(np.diff(forward) > 0) and np.array_equal(forward, backward))


def orientation(vertices: np.ndarray, faces: np.ndarray) -> int:
    """``+1`` when the faces of a closed mesh point outwards (``(v1 - v0) x (v2 - v0)``: positive
    enclosed volume), ``-1`` inwards, ``0`` when the mesh is not closed (no back faces culled)."""
    if not is_closed(faces):
        return 0
    v = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    v0, v1, v2 = (v[faces[:, k]] for k in range(3))
    volume = float(np.einsum("ij,ij->", v0, np.cross(v1, v2))) / 6.0
    return 1 if volume > 0 else -1 if volume < 0 else 0


def _body_data(body: demo.Body, name: str, color, faces: np.ndarray, closed: bool) -> dict[str, Any]:
    vertices = np.asarray(body.vertices, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
        raise ValueError(f"{name}: vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    if faces.size and faces.max() >= vertices.shape[0]:
        raise ValueError(f"faces index vertices 0..{faces.max()}, but {name} has {vertices.shape[0]}")
    return {"name": name, "color": [float(c) for c in color],
            "camera": [float(v) for v in np.asarray(body.camera, np.float64).reshape(3)],
            "num_vertices": int(vertices.shape[0]), "vertices": encode_array(vertices, "<f4"),
            # Back faces (normal z * orientation > 0) are hidden on a closed mesh: not drawn.
            "orientation": orientation(vertices, faces) if closed else 0}


def viewer_data(result: demo.DemoResult, *, image_format: str = "auto") -> dict[str, Any]:
    """What the page draws, as JSON-ready values.

    Keys: ``image`` (``src`` data URL, ``width``/``height`` of the embedded picture, i.e. the photo
    at ``scale``), ``photo_size`` ``[H, W]``, ``scale``, ``crop_box`` ``[x0, y0, side]``,
    ``faces`` (``(F, 3)`` ``<u4`` base64) and ``num_faces``, ``bodies`` (prediction, then ground truth:
    ``name``, ``color``, ``camera`` ``[s, tx, ty]``, ``vertices`` ``(V, 3)`` ``<f4`` base64 and
    ``orientation``, see :func:`orientation`),
    ``style`` (the overlay's opacity, light, ambient and side-panel grey), ``metrics``, ``info``.
    """
    inputs = result.inputs
    image, scale = picture(inputs)
    faces = np.asarray(result.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer) or (
            faces.size and faces.min() < 0):
        raise ValueError(f"faces must be (F, 3) non-negative integers, got {faces.dtype} {faces.shape}")
    closed = is_closed(faces)
    bodies = [_body_data(result.prediction, "prediction", demo._PRED_COLOR, faces, closed)]
    if result.ground_truth is not None:
        bodies.append(_body_data(result.ground_truth, "ground truth", demo._GT_COLOR, faces, closed))
    info = {key: result.info.get(key) for key in ("image", "checkpoint", "step", "model_inputs")
            if result.info.get(key) not in (None, "")}
    return {
        "image": {"src": photo_data_url(image, image_format), "width": int(image.shape[1]),
                  "height": int(image.shape[0])},
        "photo_size": [int(v) for v in inputs.image.shape[:2]],
        "scale": float(scale),
        "crop_box": [float(v) for v in inputs.crop_box],
        "num_faces": int(faces.shape[0]),
        "faces": encode_array(faces, "<u4"),
        "bodies": bodies,
        "style": {"alpha": demo._OVERLAY_ALPHA, "rotated_photo_alpha": _ROTATED_PHOTO_ALPHA,
                  "light": [float(v) for v in render.DEFAULT_LIGHT_DIRECTION], "ambient": 0.4,
                  "background": demo._SIDE_BACKGROUND},
        "metrics": None if result.metrics is None else {k: float(v) for k, v in result.metrics.items()},
        "info": info,
    }


def _script_json(payload: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as ``\\u`` escapes (no ``</script>``)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(result: demo.DemoResult, *, image_format: str = "auto") -> str:
    """The self-contained page (a ``str`` of HTML) showing ``result``'s meshes over its photo."""
    data = viewer_data(result, image_format=image_format)
    name = str(result.info.get("image") or "")
    title = "dct_jax demo" + (f": {os.path.basename(name) or name}" if name else "")
    return (_TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__DATA__", _script_json(data)))


def write_viewer(result: demo.DemoResult, path: str, *, image_format: str = "auto") -> str:
    """Writes :func:`viewer_html` to ``path`` (UTF-8); returns ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(viewer_html(result, image_format=image_format))
    return path


# The page. Placeholders: __TITLE__ (escaped text) and __DATA__ (escaped JSON). No network address
# may appear here: the page must work offline (tests/test_viewer.py checks).
_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { margin: 0; background: #1d1f22; color: #e6e6e6; font: 14px/1.4 system-ui, sans-serif; }
  header { padding: 8px 12px; display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; }
  h1 { font-size: 15px; margin: 0; font-weight: 600; }
  button { font: inherit; padding: 2px 10px; border-radius: 4px; border: 1px solid #666; background: #2d3035;
           color: inherit; cursor: pointer; }
  button:hover { background: #3a3e44; }
  label { user-select: none; }
  #panels { display: flex; flex-wrap: wrap; gap: 16px; padding: 0 12px 8px; align-items: flex-start; }
  figure { margin: 0; }
  figcaption { padding: 0 0 4px; }
  .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
  canvas { display: block; touch-action: none; cursor: grab; max-width: calc(100vw - 24px); height: auto; }
  canvas.dragging { cursor: grabbing; }
  .note { color: #a8a8a8; font-size: 12px; }
  #status { padding: 0 12px 12px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <button id="reset" type="button"
          title="The camera's view over the photo (or double-click a picture)">Camera view</button>
  <button id="side" type="button"
          title="Turned 90 degrees about the vertical axis (overlay.png's side view)">Side view</button>
  <label><input type="checkbox" id="photo" checked> photo</label>
  <label id="link-label" hidden><input type="checkbox" id="link" checked> turn together</label>
  <span class="note">drag: turn &middot; shift- or right-drag: move &middot; wheel: zoom &middot; arrows: turn
    &middot; double-click: camera view</span>
</header>
<div id="info" class="note" style="padding: 0 12px 8px"></div>
<div id="panels"></div>
<div id="status" class="note"></div>
<script type="application/json" id="viewer-data">__DATA__</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const W = data.image.width, H = data.image.height, SCALE = data.scale;
  const X0 = data.crop_box[0], Y0 = data.crop_box[1], SIDE = data.crop_box[2];
  const STYLE = data.style;
  const LIGHT = normalized(STYLE.light);
  const BACKGROUND = "rgb(" + [STYLE.background, STYLE.background, STYLE.background].join(",") + ")";
  const faces = decode(data.faces, Uint32Array);
  const NF = data.num_faces;
  const NBINS = 65536;
  const counts = new Uint32Array(NBINS + 1);
  const options = new URLSearchParams(location.hash.slice(1));
  let showPhoto = options.get("photo") !== "0";
  let photoReady = false;
  const photo = new Image();
  let linked = true;
  let pending = false;

  function decode(text, Type) {
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function normalized(v) {
    const n = Math.hypot(v[0], v[1], v[2]);
    return [v[0] / n, v[1] / n, v[2] / n];
  }

  // ------------------------------------------------------------------ views: rotation about the
  // body's centre (row-major 3x3), then zoom and shift of the whole picture (photo pixels).
  function newView() { return { r: [1, 0, 0, 0, 1, 0, 0, 0, 1], zoom: 1, panX: 0, panY: 0 }; }

  function isCameraView(view) {
    const r = view.r, id = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    for (let i = 0; i < 9; i++) if (Math.abs(r[i] - id[i]) > 1e-9) return false;
    return true;
  }

  // Turns by yaw about the vertical (y) axis, then pitch about the horizontal (x) axis, both of the
  // screen: yaw > 0 moves the front of the body to the right (yaw = 90 degrees is demo.side_vertices:
  // x' = -z, z' = x), pitch > 0 moves it down.
  function turn(view, yaw, pitch) {
    const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
    const a = view.r, m = new Array(9);
    for (let j = 0; j < 3; j++) {
      const x = a[j], y = a[3 + j], z = a[6 + j];
      const x1 = cy * x - sy * z, z1 = sy * x + cy * z;
      m[j] = x1;
      m[3 + j] = cp * y - sp * z1;
      m[6 + j] = sp * y + cp * z1;
    }
    view.r = m;
  }

  function Panel(body) {
    this.body = body;
    this.camera = body.camera;
    this.view = newView();
    const v = this.v = decode(body.vertices, Float32Array);
    const nv = this.nv = body.num_vertices;
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < nv; i++) {
      for (let d = 0; d < 3; d++) {
        const x = v[3 * i + d];
        if (x < lo[d]) lo[d] = x;
        if (x > hi[d]) hi[d] = x;
      }
    }
    this.centre = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), 0.5 * (lo[2] + hi[2])];
    // Per face, the mean of its corners' smooth normals (area-weighted face normals, as the overlay's
    // renderer interpolates them): one shade per face, close to the overlay's smooth shading.
    const vn = new Float64Array(3 * nv), fn = this.normals = new Float32Array(3 * NF);
    for (let f = 0; f < NF; f++) {
      const a = 3 * faces[3 * f], b = 3 * faces[3 * f + 1], c = 3 * faces[3 * f + 2];
      const ux = v[b] - v[a], uy = v[b + 1] - v[a + 1], uz = v[b + 2] - v[a + 2];
      const wx = v[c] - v[a], wy = v[c + 1] - v[a + 1], wz = v[c + 2] - v[a + 2];
      const nx = uy * wz - uz * wy, ny = uz * wx - ux * wz, nz = ux * wy - uy * wx;
      for (const i of [a, b, c]) { vn[i] += nx; vn[i + 1] += ny; vn[i + 2] += nz; }
    }
    for (let i = 0; i < nv; i++) {
      const n = Math.hypot(vn[3 * i], vn[3 * i + 1], vn[3 * i + 2]) || 1;
      vn[3 * i] /= n; vn[3 * i + 1] /= n; vn[3 * i + 2] /= n;
    }
    for (let f = 0; f < NF; f++) {
      for (let d = 0; d < 3; d++) {
        fn[3 * f + d] = vn[3 * faces[3 * f] + d] + vn[3 * faces[3 * f + 1] + d] + vn[3 * faces[3 * f + 2] + d];
      }
      const n = Math.hypot(fn[3 * f], fn[3 * f + 1], fn[3 * f + 2]) || 1;
      fn[3 * f] /= n; fn[3 * f + 1] /= n; fn[3 * f + 2] /= n;
    }
    this.px = new Float64Array(nv);
    this.py = new Float64Array(nv);
    this.X = new Float64Array(nv);
    this.Y = new Float64Array(nv);
    this.Z = new Float64Array(nv);
    this.depth = new Float64Array(NF);
    this.shade = new Uint8Array(NF);
    this.order = new Uint32Array(NF);
    this.keys = new Uint32Array(NF);
    const c = body.color;
    this.palette = [];
    for (let level = 0; level < 256; level++) {
      const f = level / 255;
      this.palette.push("rgb(" + Math.round(255 * c[0] * f) + "," + Math.round(255 * c[1] * f) + ","
                        + Math.round(255 * c[2] * f) + ")");
    }

    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = this.palette[255];
    caption.appendChild(swatch);
    caption.appendChild(document.createTextNode(body.name));
    const canvas = this.canvas = document.createElement("canvas");
    canvas.setAttribute("aria-label", body.name + " mesh");
    this.dpr = Math.max(1, window.devicePixelRatio || 1);
    canvas.width = Math.round(W * this.dpr);
    canvas.height = Math.round(H * this.dpr);
    canvas.style.width = W + "px";
    figure.appendChild(caption);
    figure.appendChild(canvas);
    document.getElementById("panels").appendChild(figure);
    this.layer = document.createElement("canvas");
    this.layer.width = canvas.width;
    this.layer.height = canvas.height;
    this.ctx = canvas.getContext("2d");
    this.layerCtx = this.layer.getContext("2d");
    this.listen();
  }

  // Photo pixels of the vertices seen through this.view: the camera's weak perspective as
  // demo.project_to_photo, ((s (x + tx) + 1) side / 2 + x0) * scale, of the turned vertices.
  Panel.prototype.project = function () {
    const v = this.v, r = this.view.r, c = this.centre;
    const s = this.camera[0], tx = this.camera[1], ty = this.camera[2];
    const X = this.X, Y = this.Y, Z = this.Z, px = this.px, py = this.py;
    const half = 0.5 * SIDE;
    for (let i = 0; i < this.nv; i++) {
      const x = v[3 * i] - c[0], y = v[3 * i + 1] - c[1], z = v[3 * i + 2] - c[2];
      const xr = r[0] * x + r[1] * y + r[2] * z + c[0];
      const yr = r[3] * x + r[4] * y + r[5] * z + c[1];
      X[i] = xr;
      Y[i] = yr;
      Z[i] = r[6] * x + r[7] * y + r[8] * z + c[2];
      px[i] = ((s * (xr + tx) + 1) * half + X0) * SCALE;
      py[i] = ((s * (yr + ty) + 1) * half + Y0) * SCALE;
    }
  };

  // A Lambert shade per face (two-sided: normals turned towards the camera, -z) and the faces in
  // back-to-front order (a counting sort of their mean depth). On a closed mesh the faces turned away
  // from the camera (geometric normal) are hidden: left out.
  Panel.prototype.shadeAndSort = function () {
    const X = this.X, Y = this.Y, Z = this.Z, depth = this.depth, shade = this.shade, fn = this.normals;
    const r = this.view.r, ambient = STYLE.ambient, cull = this.body.orientation;
    // The light in the mesh's own frame (the transpose of the view's rotation: the normals stay put).
    const lx = r[0] * LIGHT[0] + r[3] * LIGHT[1] + r[6] * LIGHT[2];
    const ly = r[1] * LIGHT[0] + r[4] * LIGHT[1] + r[7] * LIGHT[2];
    const lz = r[2] * LIGHT[0] + r[5] * LIGHT[1] + r[8] * LIGHT[2];
    const keys = this.keys, order = this.order;
    let lo = Infinity, hi = -Infinity;
    for (let f = 0; f < NF; f++) {
      const a = faces[3 * f], b = faces[3 * f + 1], c = faces[3 * f + 2];
      // z of the turned face's normal (b - a) x (c - a): its facing.
      const nz = (X[b] - X[a]) * (Y[c] - Y[a]) - (Y[b] - Y[a]) * (X[c] - X[a]);
      if (nz * cull > 0) {  // a back face of a closed mesh: hidden
        keys[f] = NBINS;
        continue;
      }
      const sx = fn[3 * f], sy = fn[3 * f + 1], sz = fn[3 * f + 2];
      let diffuse = sx * lx + sy * ly + sz * lz;
      if (r[6] * sx + r[7] * sy + r[8] * sz > 0) diffuse = -diffuse;
      shade[f] = Math.round(255 * (ambient + (1 - ambient) * Math.max(diffuse, 0)));
      const d = Z[a] + Z[b] + Z[c];
      depth[f] = d;
      keys[f] = 0;
      if (d < lo) lo = d;
      if (d > hi) hi = d;
    }
    // Far (large z) first; culled faces (key NBINS) are left out.
    const k = hi > lo ? (NBINS - 1) / (hi - lo) : 0;
    counts.fill(0);
    let drawn = 0;
    for (let f = 0; f < NF; f++) {
      if (keys[f] === NBINS) continue;
      const key = Math.floor((hi - depth[f]) * k);
      keys[f] = key;
      counts[key + 1]++;
      drawn++;
    }
    for (let i = 1; i < NBINS; i++) counts[i] += counts[i - 1];
    for (let f = 0; f < NF; f++) if (keys[f] !== NBINS) order[counts[keys[f]]++] = f;
    this.drawn = drawn;
  };

  Panel.prototype.draw = function () {
    const start = performance.now();
    const view = this.view, dpr = this.dpr, z = view.zoom;
    this.project();
    this.shadeAndSort();
    // The mesh, opaque, on its own layer: composited once at the overlay's opacity.
    const g = this.layerCtx, px = this.px, py = this.py, order = this.order, shade = this.shade;
    const palette = this.palette;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, this.layer.width, this.layer.height);
    g.setTransform(dpr * z, 0, 0, dpr * z, dpr * view.panX, dpr * view.panY);
    for (let i = 0; i < this.drawn; i++) {
      const f = order[i];
      const a = faces[3 * f], b = faces[3 * f + 1], c = faces[3 * f + 2];
      g.fillStyle = palette[shade[f]];
      g.beginPath();
      g.moveTo(px[a], py[a]);
      g.lineTo(px[b], py[b]);
      g.lineTo(px[c], py[c]);
      g.closePath();
      g.fill();
    }
    // Antialiasing leaves the seams between faces partly transparent: the layer drawn twice over
    // itself makes them opaque (half the cost of stroking every face).
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.drawImage(this.layer, 0, 0);
    g.drawImage(this.layer, 0, 0);
    const camera = isCameraView(view), ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 1;
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (showPhoto && photoReady) {
      ctx.setTransform(dpr * z, 0, 0, dpr * z, dpr * view.panX, dpr * view.panY);
      ctx.globalAlpha = camera ? 1 : STYLE.rotated_photo_alpha;
      ctx.drawImage(photo, 0, 0, W, H);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
    }
    ctx.globalAlpha = camera ? STYLE.alpha : 1;
    ctx.drawImage(this.layer, 0, 0);
    ctx.globalAlpha = 1;
    this.milliseconds = performance.now() - start;
  };

  // Canvas pixel (photo pixels at zoom 1) under a mouse event.
  Panel.prototype.at = function (event) {
    const rect = this.canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * W / rect.width, (event.clientY - rect.top) * H / rect.height];
  };

  Panel.prototype.listen = function () {
    const canvas = this.canvas, self = this;
    let drag = null;
    canvas.addEventListener("pointerdown", function (event) {
      canvas.setPointerCapture(event.pointerId);
      drag = { at: self.at(event), move: event.shiftKey || event.button === 1 || event.button === 2 };
      canvas.classList.add("dragging");
      event.preventDefault();
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drag) return;
      const at = self.at(event), dx = at[0] - drag.at[0], dy = at[1] - drag.at[1];
      drag.at = at;
      if (drag.move) {
        self.view.panX += dx;
        self.view.panY += dy;
      } else {
        const speed = 3 / Math.max(W, H);  // radians per pixel: half a turn across the picture
        turn(self.view, dx * speed, dy * speed);
      }
      changed();
    });
    const stop = function () { drag = null; canvas.classList.remove("dragging"); };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    canvas.addEventListener("dblclick", function () { reset(self.view); changed(); });
    canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      const view = self.view, at = self.at(event);
      const zoom = Math.min(20, Math.max(0.2, view.zoom * Math.exp(-0.0015 * event.deltaY)));
      // The point under the mouse stays put.
      view.panX = at[0] - zoom * (at[0] - view.panX) / view.zoom;
      view.panY = at[1] - zoom * (at[1] - view.panY) / view.zoom;
      view.zoom = zoom;
      changed();
    }, { passive: false });
  };

  function reset(view) {
    view.r = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    view.zoom = 1;
    view.panX = view.panY = 0;
  }

  const panels = data.bodies.map(function (body) { return new Panel(body); });

  function shareViews() {
    if (linked) {
      for (let i = 1; i < panels.length; i++) panels[i].view = panels[0].view;
    } else {
      for (let i = 1; i < panels.length; i++) panels[i].view = JSON.parse(JSON.stringify(panels[0].view));
    }
  }

  function changed() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      drawAll();
    });
  }

  function drawAll() {
    for (const panel of panels) panel.draw();
    const ms = panels.map(function (p) { return p.milliseconds.toFixed(0); }).join(" + ");
    document.getElementById("status").textContent = panels[0].nv + " vertices, " + NF + " faces ("
      + panels.map(function (p) { return p.drawn; }).join(" + ") + " facing the camera); " + ms + " ms per frame";
  }

  function everyView(fn) {
    const seen = new Set();
    for (const panel of panels) {
      if (!seen.has(panel.view)) { seen.add(panel.view); fn(panel.view); }
    }
  }

  // Page text (textContent: nothing from the data is parsed as HTML).
  document.getElementById("title").textContent = document.title;
  const facts = [];
  if (data.info.image) facts.push("image: " + data.info.image);
  if (data.info.checkpoint) facts.push("checkpoint: " + data.info.checkpoint
                                       + (data.info.step !== undefined ? " step " + data.info.step : ""));
  if (data.info.model_inputs) facts.push("inputs: " + data.info.model_inputs);
  if (data.metrics) {
    for (const key of Object.keys(data.metrics)) facts.push(key + " " + data.metrics[key].toFixed(1));
  }
  document.getElementById("info").textContent = facts.join(" \u00b7 ");
  if (panels.length > 1) document.getElementById("link-label").hidden = false;

  document.getElementById("reset").addEventListener("click", function () { everyView(reset); changed(); });
  document.getElementById("side").addEventListener("click", function () {
    everyView(function (view) { view.r = [1, 0, 0, 0, 1, 0, 0, 0, 1]; turn(view, Math.PI / 2, 0); });
    changed();
  });
  const photoBox = document.getElementById("photo");
  photoBox.checked = showPhoto;
  photoBox.addEventListener("change", function () { showPhoto = photoBox.checked; changed(); });
  document.getElementById("link").addEventListener("change", function (event) {
    linked = event.target.checked;
    shareViews();
    changed();
  });
  document.addEventListener("keydown", function (event) {
    const step = Math.PI / 18, turns = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step],
                                         ArrowDown: [0, step] }[event.key];
    if (!turns || event.target.tagName === "INPUT") return;
    everyView(function (view) { turn(view, turns[0], turns[1]); });
    changed();
    event.preventDefault();
  });

  // The first view, from the address's #options.
  shareViews();
  const yaw = (options.get("view") === "side" ? 90 : 0) + Number(options.get("yaw") || 0);
  const pitch = Number(options.get("pitch") || 0);
  const zoom = Number(options.get("zoom") || 1);
  everyView(function (view) {
    if (yaw || pitch) turn(view, yaw * Math.PI / 180, pitch * Math.PI / 180);
    if (zoom > 0 && zoom !== 1) {
      view.zoom = zoom;
      view.panX = 0.5 * W * (1 - zoom);
      view.panY = 0.5 * H * (1 - zoom);
    }
  });
  drawAll();
  photo.onload = function () { photoReady = true; drawAll(); };
  photo.src = data.image.src;
})();
</script>
</body>
</html>
"""
