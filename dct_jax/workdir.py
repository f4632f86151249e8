"""A run's workdir owns its config: validated before anything is written, compared on every rerun.

``WORKDIR/config.json`` records how the checkpoints beside it were trained.
Training (:func:`claim`) validates the whole config first (unknown fields,
types, ranges, paths), then, if the workdir already holds checkpoints, compares
the given config with the recorded one: a change to anything the checkpoints
depend on (the model, its inputs, image size, batch size, optimizer, loss
weights, data sources, seed, ...) is refused with the differing fields listed;
a safe change (:data:`SAFE_FIELDS`: more steps, intervals, workers, evaluation
settings) is logged and appended to ``WORKDIR/config_history.jsonl``. The file
is written atomically, so a failed start never leaves a truncated config.

Evaluation, the demo, the export and the Table 3 runner read the workdir's
config (:func:`load_config`); evaluation accepts overrides of
:data:`EVAL_FIELDS` only (:func:`apply_overrides`).
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# Settings a rerun may change without invalidating the checkpoints (prefixes of dotted field names).
SAFE_FIELDS = (
    "num_train_steps", "log_every_steps", "image_summary_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "max_checkpoints_to_keep", "max_consecutive_nonfinite", "max_skipped_fraction",
    "eval_split", "eval_batch_size", "eval", "data_dir", "build_dataset_if_missing", "build_split_sizes",
    "data.workers", "data.threads", "data.cache_mb", "init_from", "model.init_image_from", "model.init_aux_from")

# Settings an evaluation of a trained run may override (the rest is the run's).
EVAL_FIELDS = ("dataset", "eval_split", "eval_batch_size", "eval", "data_dir", "data.threads", "smpl_path",
               "build_dataset_if_missing", "data.iuv_errors")

# Settings added after runs were recorded: a config.json without one was trained with this value.
ADDED_FIELDS = {"data.dense_keep": 1.0, "data.dense_uv_noise": 0.0, "data.cache_mb": 0, **{
    f"data.iuv_errors.{name}": 0.0 for name in ("part_swap", "boundary_shift", "blobs", "blob_size", "uv_noise")}}


class ConfigError(ValueError):
    """A config a run cannot use; the message names the field and what is wrong (one line)."""


class WorkdirError(ValueError):
    """A workdir that cannot take this run (a file, another run's checkpoints, an unreadable config.json)."""


# ----------------------------------------------------------------------------- fields


def flatten(config: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"depth": 10}} -> {"model.depth": 10}`` (JSON values)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json_best_effort())
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_eval_field(name: str) -> bool:
    """Whether a dotted field is an evaluation setting (:data:`EVAL_FIELDS`)."""
    return _matches(name, EVAL_FIELDS)


def parse_overrides(items: Sequence[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``["model.depth=18", "eval_split=test"]`` -> ``{"model.depth": 18, "eval_split": "test"}``.

    Values are Python or JSON literals (``18``, ``1e-3``, ``True``, ``None``,
    ``"x"``); anything else is taken as a string.
    """
    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes FIELD=VALUE (a config field), got {item!r}")
        text = text.strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            lowered = text.lower()
            value = {"true": True, "false": False, "null": None, "none": None}.get(lowered, text)
        overrides[key.strip()] = value
    return overrides


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *,
                    allowed: Sequence[str] | None = None, what: str = "config") -> dict[str, Any]:
    """Sets dotted fields of ``config`` in place; returns the fields that changed (``{name: value}``).

    Raises:
      ConfigError: an unknown field (with a "did you mean"), a value of the wrong
        type, or (with ``allowed``) a field outside those prefixes.
    """
    known = flatten(config)
    changed = {}
    for name, value in overrides.items():
        *path, field = name.split(".")
        node = config
        try:
            for part in path:
                node = node[part]
            if not isinstance(node, ml_collections.ConfigDict) or field not in node:
                raise KeyError(name)
        except (KeyError, TypeError):
            raise ConfigError(f"{what} has no field {name!r}{_suggest(name, known)}") from None
        if allowed is not None and not _matches(name, allowed):
            raise ConfigError(f"{name} is a training setting of this run, not an evaluation setting; "
                              f"only {', '.join(allowed)} can be overridden")
        try:
            node[field] = value
        except TypeError as error:
            raise ConfigError(f"{what} field {name}: {error}") from None
        if known.get(name) != value:
            changed[name] = value
    return changed


# ----------------------------------------------------------------------------- validation


def _number(config: ml_collections.ConfigDict, name: str, *, minimum: float | None = None,
            above: float | None = None, maximum: float | None = None, integer: bool = False,
            default: Any = None) -> None:
    node: Any = config
    for part in name.split("."):
        node = node.get(part, default) if isinstance(node, ml_collections.ConfigDict) else default
    value = node
    if value is None:
        return
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"config.{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"config.{name} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"config.{name} must be at least {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"config.{name} must be greater than {above:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"config.{name} must be at most {maximum:g}, got {value!r}")


def _choice(config: ml_collections.ConfigDict, name: str, choices: Iterable[Any]) -> None:
    node: Any = config
    for part in name.split("."):
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    choices = list(choices)
    if node not in choices:
        raise ConfigError(f"config.{name} must be one of {', '.join(map(repr, choices))}, got {node!r}")


def _existing_path(config: ml_collections.ConfigDict, name: str, what: str) -> None:
    node: Any = config
    for part in name.split("."):
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if node and not os.path.exists(os.path.expanduser(str(node))):
        raise ConfigError(f"config.{name}={node} does not exist ({what})")


def validate(config: ml_collections.ConfigDict, *, training: bool = True) -> None:
    """Checks every setting a run reads before anything is built, compiled or written.

    Raises:
      ConfigError: the first bad setting, named with what is wrong and what is expected.
    """
    from dct_jax import state as state_lib  # noqa: PLC0415
    from dct_jax.models import resnet  # noqa: PLC0415

    _number(config, "batch_size", above=0, integer=True)
    _number(config, "eval_batch_size", above=0, integer=True)
    _number(config, "seed", integer=True)
    if training:
        _number(config, "num_train_steps", minimum=0, integer=True)
        for name in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints_to_keep",
                     "max_consecutive_nonfinite"):
            _number(config, name, above=0, integer=True)
        for name in ("eval_every_steps", "image_summary_every_steps", "warmup_steps"):
            _number(config, name, minimum=0, integer=True)
        _number(config, "learning_rate", above=0)
        _number(config, "end_learning_rate", minimum=0)
        _number(config, "grad_clip_norm", minimum=0)
        _number(config, "max_skipped_fraction", minimum=0, maximum=1)
        _number(config, "data.cache_mb", minimum=0)
        _choice(config, "optimizer", ("adam", "sgd"))
        _number(config, "sgd_momentum", minimum=0, maximum=1)
        for name in ("keypoint", "smpl", "joints3d", "keypoints3d", "dense"):
            _number(config, f"loss.{name}", minimum=0)
    _number(config, "data.image_size", minimum=32, integer=True)
    _number(config, "data.num_dense", minimum=1, integer=True)
    _number(config, "data.smpl_fraction", minimum=0, maximum=1)
    _number(config, "data.scale_jitter", minimum=0)
    _number(config, "data.translate_jitter", minimum=0)
    _number(config, "data.flip_prob", minimum=0, maximum=1)
    _number(config, "data.workers", minimum=0, integer=True)
    _number(config, "data.threads", minimum=0, integer=True)
    _choice(config, "data.dense_source", ("annotation", "iuv", "auto", "none"))
    _number(config, "data.dense_keep", minimum=0, maximum=1)
    _number(config, "data.dense_uv_noise", minimum=0)
    if config.data.get("iuv_errors") is not None:
        try:
            state_lib.iuv_error_model(config)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config.data.iuv_errors: {error}") from None
    _choice(config, "model.inputs", sorted(state_lib.MODEL_INPUTS))
    _choice(config, "model.dtype", ("float32", "bfloat16"))
    depths = sorted(resnet.STAGES)
    if config.model.get("depth") is not None:
        _choice(config, "model.depth", depths)
    _choice(config, "model.aux_depth", depths)
    for name in ("width", "hidden_dim"):
        _number(config, f"model.{name}", above=0, integer=True)
    _number(config, "model.feature_dim", minimum=0, integer=True)
    data_dir = os.path.expanduser(str(config.get("data_dir") or ""))
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(f"config.data_dir={config.data_dir} is a file, not a directory")
    _existing_path(config, "smpl_path", "the SMPL model file; unset it for the default body")
    _existing_path(config, "model.mean_params_path", "the mean-parameter file")
    if training:
        _existing_path(config, "init_from", "a training run to start from")
        _existing_path(config, "model.init_image_from", "torchvision weights for the image encoder")
        _existing_path(config, "model.init_aux_from", "torchvision weights for the auxiliary encoder")
    if config.get("train_mixture"):
        from dct_jax.data import pipeline  # noqa: PLC0415

        try:
            pipeline.parse_sources(config.train_mixture, config.train_split)
        except ValueError as error:
            raise ConfigError(f"config.train_mixture: {error}") from None


# ----------------------------------------------------------------------------- the workdir's config


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def read_recorded(workdir: str) -> dict[str, Any] | None:
    """``WORKDIR/config.json`` as a dict; None when there is none.

    Raises:
      WorkdirError: the file is empty or not JSON (says so and where).
    """
    path = config_path(workdir)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise WorkdirError(f"{path} cannot be read ({error.strerror or error})") from None
    try:
        recorded = json.loads(text)
    except ValueError as error:
        what = "is empty" if not text.strip() else f"is not valid JSON ({error})"
        raise WorkdirError(f"{path} {what}: it should record how the run's checkpoints were trained") from None
    if not isinstance(recorded, dict):
        raise WorkdirError(f"{path} is not a config (a JSON object expected)")
    return recorded


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with (``WORKDIR/config.json``).

    Raises:
      WorkdirError: no config.json there, or an unreadable one.
    """
    train_first = f"train first with `python run_train.py --config=... --workdir={workdir}`"
    if not os.path.isdir(os.path.expanduser(workdir)):
        raise WorkdirError(f"{workdir} is not a training run's directory (it does not exist); {train_first}")
    recorded = read_recorded(os.path.expanduser(workdir))
    if recorded is None:
        raise WorkdirError(f"{workdir} has no {CONFIG_FILE} (run_train.py writes it beside checkpoints/), "
                           f"so how a run there was trained is unknown; {train_first}")
    return ml_collections.ConfigDict(with_added_fields(recorded))


def with_added_fields(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config (dict) with every :data:`ADDED_FIELDS` it lacks at its neutral value."""
    result = json.loads(json.dumps(recorded))
    for name, value in ADDED_FIELDS.items():
        *parents, leaf = name.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(leaf, value)
    return result


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``WORKDIR/config.json`` atomically (a temporary file renamed over it)."""
    path = config_path(workdir)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)
    return path


def differences(recorded: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded value, given value)}`` for every dotted field that differs."""
    old, new = flatten(recorded), flatten(config)
    old = {**{k: v for k, v in ADDED_FIELDS.items() if k in new}, **old}
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changes.items())


def check_workdir(workdir: str) -> str:
    """The absolute workdir; a WorkdirError when it is a file or cannot hold a run."""
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir={workdir} is a file, not a directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise WorkdirError(f"--workdir={workdir}: {parent} is a file, not a directory")
    return path


def claim(config: ml_collections.ConfigDict, workdir: str, *, write: bool = True) -> dict[str, tuple[Any, Any]]:
    """Validates ``config`` for training in ``workdir`` and records it there.

    A workdir with checkpoints keeps its config: a change outside
    :data:`SAFE_FIELDS` raises WorkdirError listing every such field, and nothing
    is written. Safe changes are logged, appended to ``config_history.jsonl``
    and written. Returns the changes (empty for a new run or an identical rerun).
    """
    from dct_jax import state as state_lib  # noqa: PLC0415

    validate(config)
    workdir = check_workdir(workdir)
    recorded = read_recorded(workdir) if os.path.isdir(workdir) else None
    changes = differences(recorded, config) if recorded is not None else {}
    if changes and state_lib.has_checkpoints(os.path.join(workdir, "checkpoints")):
        unsafe = {k: v for k, v in changes.items() if not _matches(k, SAFE_FIELDS)}
        if unsafe:
            raise WorkdirError(
                f"{workdir} holds checkpoints trained with other settings; the checkpoints depend on "
                f"{_describe(unsafe)}. Keep the run's values (see its {CONFIG_FILE}) or use a new --workdir")
    if changes:
        logging.warning("Settings changed since the run's last start (kept in %s): %s", HISTORY_FILE,
                        _describe(changes))
    if write:
        os.makedirs(workdir, exist_ok=True)
        if changes:
            with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
        write_config(config, workdir)
    return changes


def evaluation_config(workdir: str, given: ml_collections.ConfigDict | None = None,
                      overrides: Mapping[str, Any] | None = None) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """The config to evaluate a run with: the workdir's, with evaluation settings changed.

    ``given`` (a config file's, optional) may differ from the recorded config in
    :data:`EVAL_FIELDS` (taken) and :data:`SAFE_FIELDS` (ignored: the checkpoints
    do not depend on them); ``overrides`` (``--set``) may set :data:`EVAL_FIELDS`.

    Returns:
      (config, ``{field: value}`` of every evaluation setting that differs from the run's).

    Raises:
      WorkdirError: no readable config.json, or ``given`` differs in a training setting.
      ConfigError: an override of an unknown or a training field.
    """
    config = load_config(workdir)
    changes: dict[str, Any] = {}
    if given is not None:
        diffs = differences(config.to_dict(), given)
        training = {k: v for k, v in diffs.items() if not _matches(k, EVAL_FIELDS + SAFE_FIELDS)}
        if training:
            raise WorkdirError(
                f"--config differs from {config_path(workdir)} in training settings ({_describe(training)}); "
                "the checkpoints were trained with the recorded ones. Leave out --config (the run's is used) "
                f"or change only evaluation settings: {', '.join(EVAL_FIELDS)}")
        taken = {k: b for k, (_, b) in diffs.items() if _matches(k, EVAL_FIELDS)}
        changes.update(apply_overrides(config, taken, what="the run's config"))
    if overrides:
        changes.update(apply_overrides(config, overrides, allowed=EVAL_FIELDS, what="the run's config"))
    validate(config, training=False)
    return config, changes

