r"""What every experiment runner shares: a cell's config, training it (resuming) or reading it back.

An experiment is a list of :class:`Cell` s trained in ``OUTPUT/cells/NAME`` after
one pretraining per input type in ``OUTPUT/pretrain/INPUT`` (``--pretrain_steps``);
cells of equal names are one run whichever experiment asks for them, so experiments
run into one output folder share their common cells (e.g. Figure 4's 100% cell is
Table 3's Image only, 3D & 2D) and their pretraining.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from dct_jax.experiments import variants

@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of an experiment: a Table 3 cell (input, supervision) and how it differs from it
    (``variant``, see :mod:`dct_jax.experiments.variants`; "" for the Table 3 cell itself)."""

    inputs: str
    supervision: str
    variant: str = ""

    @property
    def name(self) -> str:
        """The cell's folder name under ``OUTPUT/cells``: cells of equal names are one run, whichever experiment asks."""
        base = f"{self.inputs}-{self.supervision}"
        return f"{base}-{self.variant}" if self.variant else base



DEFAULT_IMAGE_SIZE = 112
DEFAULT_DATA = "synthetic"  # configs/default.py:PROTOCOL_SOURCES names the others (up3d)


def _base_config(inputs: str, *, steps: int, image_size: int, data: str) -> ml_collections.ConfigDict:
    """The quickstart's network for ``inputs`` (two-branch: ResNet-10 each) at ``image_size``, reading ``data``."""
    from configs import quickstart  # noqa: PLC0415  (the repository's configs/)

    config = quickstart.get_config()
    if data != DEFAULT_DATA:  # real data: nothing to build, and its IUV maps are DensePose's, refined (Sec. 3.2)
        config.build_dataset_if_missing = False
        config.data.refine_iuv = True
    config.model.inputs = inputs
    config.model.aux_depth = config.model.depth
    config.data.image_size = image_size
    config.num_train_steps = steps
    config.checkpoint_every_steps = max(1, min(config.checkpoint_every_steps, steps // 2))
    config.image_summary_every_steps = 0
    config.eval_every_steps = 0
    return config


def _apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | None) -> None:
    """``--set`` values on a cell's config; an unknown field is a ``workdir.ConfigError`` (with a suggestion)."""
    from dct_jax import workdir  # noqa: PLC0415

    workdir.apply_overrides(config, overrides or {})


def cell_config(cell: Cell, *, steps: int, image_size: int = DEFAULT_IMAGE_SIZE,
                overrides: Mapping[str, Any] | None = None, init_from: str | None = None,
                wild_2d: str = "2d", data: str = DEFAULT_DATA) -> ml_collections.ConfigDict:
    """A cell's run: the quickstart network, the cell's input, the official protocol for its supervision
    on ``data`` (``synthetic`` with studio, or ``up3d`` with Human3.6M; ``wild_2d``: the in-the-wild
    2D label, e.g. ``2d=lsp14,2d_noise=1``)."""
    from configs import default  # noqa: PLC0415

    config = _base_config(cell.inputs, steps=steps, image_size=image_size, data=data)
    default.apply_protocol(config, cell.supervision, data, wild_2d=wild_2d)
    variants.apply_variant(config, cell.variant)
    config.num_train_steps = steps
    config.init_from = init_from
    _apply_overrides(config, overrides)
    return config


def pretrain_config(inputs: str, *, steps: int, image_size: int = DEFAULT_IMAGE_SIZE,
                    overrides: Mapping[str, Any] | None = None, data: str = DEFAULT_DATA) -> ml_collections.ConfigDict:
    """Pretraining of ``inputs``' network on ``data``'s 3D source alone (studio or Human3.6M; SMPL and 2D
    labels), evaluated on the in-the-wild test split."""
    from configs import default  # noqa: PLC0415

    config = _base_config(inputs, steps=steps, image_size=image_size, data=data)
    default.apply_protocol(config, "2d", data)
    config.supervision = "pretrain"
    from dct_jax.data import pipeline  # noqa: PLC0415

    sources = pipeline.parse_sources(config.train_mixture, config.train_split)
    config.train_mixture = str(sources[1])  # the 3D source alone (apply_protocol puts it second)
    config.num_train_steps = steps
    _apply_overrides(config, overrides)
    return config


def finished_config(cell: Cell, output: str, *, steps: int, pretrain_steps: int = 0,
                    image_size: int = DEFAULT_IMAGE_SIZE, overrides: Mapping[str, Any] | None = None,
                    wild_2d: str = "2d", data: str = DEFAULT_DATA) -> ml_collections.ConfigDict:
    """The config of ``cell`` run into ``output`` with these settings (those :func:`run_cells` takes)."""
    init_from = os.path.join(output, "pretrain", cell.inputs) if pretrain_steps else None
    return cell_config(cell, steps=steps, image_size=image_size, overrides=overrides, wild_2d=wild_2d,
                       init_from=init_from, data=data)


def read_any_result(workdir: str, split: str = "test") -> dict[str, Any] | None:
    """A run's ``eval_<split>.json``, whatever step it evaluated, else None."""
    path = os.path.join(workdir, f"eval_{split}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_result(workdir: str, steps: int, split: str = "test") -> dict[str, Any] | None:
    """A finished run's ``eval_<split>.json`` (trained for ``steps``), else None."""
    report = read_any_result(workdir, split)
    return report if report is not None and report.get("checkpoint_step") == steps else None


# Fields under _SETTINGS that do not change a run's results.
_SAME_RESULTS = ("data.workers", "data.threads", "data.cache_mb")
_SETTINGS = ("num_train_steps", "batch_size", "learning_rate", "data", "model", "loss", "train_mixture", "init_from")


def differing_settings(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The settings in which the run in ``workdir`` (its config.json) differs from ``config``.

    How the input pipeline runs (:data:`_SAME_RESULTS`: worker processes, threads, the
    record cache) does not count: it does not change the examples.
    """
    from dct_jax import workdir as workdir_lib  # noqa: PLC0415

    previous = workdir_lib.read_recorded(workdir)
    if previous is None:
        return []
    changed = [name for name in workdir_lib.differences(previous, config) if name not in _SAME_RESULTS]
    return sorted(k for k in _SETTINGS if any(name == k or name.startswith(k + ".") for name in changed))


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
    """A cell folder trained with other settings is not silently continued."""
    differing = differing_settings(workdir, config)
    if differing:
        raise ValueError(f"{workdir} holds a run with other settings ({', '.join(differing)} differ); "
                         "use another --output or delete that folder")



def train_or_read(label: str, workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Trains (resuming) and evaluates one run unless it is done; the report (``preempted`` if stopped)."""
    from dct_jax import train  # noqa: PLC0415

    steps = int(config.num_train_steps)
    report = read_result(workdir, steps, config.eval_split)
    if report is not None:
        print(f"{label}: done already (PVE {report['metrics']['pve_mm']:.1f} mm)", flush=True)
        return report
    check_same_run(workdir, config)
    print(f"{label}: training {steps} steps in {workdir}", flush=True)
    report = train.train_and_evaluate(config, workdir)
    if report.get("preempted"):
        print(f"Stopped by {report.get('signal', 'SIGTERM')} in {label} at step {report['step']} "
              "(checkpoint saved); re-run the same command to resume", flush=True)
    return report


def finished_cells(output: str, cells: Sequence[Cell], make_config: Callable[[Cell], ml_collections.ConfigDict]
                   ) -> dict[Cell, dict[str, Any]]:
    """Those of ``cells`` finished in ``output/cells`` with the settings ``make_config(cell)`` gives.

    Runners of different cells may share one output folder (e.g. one per row, in
    parallel): each writes the report of all of them.
    """
    results = {}
    for cell in cells:
        workdir = os.path.join(output, "cells", cell.name)
        config = make_config(cell)
        report = read_result(workdir, int(config.num_train_steps), config.eval_split)
        if report is not None and not differing_settings(workdir, config):
            results[cell] = report
    return results


IMPORTED_FROM = "imported_from"  # an imported cell's eval_<split>.json: the record it came from


def import_results(output: str, recorded: Mapping[Cell, Mapping[str, Any]], source: str,
                   make_config: Callable[[Cell], ml_collections.ConfigDict]) -> list[Cell]:
    """Records cells finished elsewhere as finished in ``output/cells``; the cells imported.

    ``recorded`` maps cells to their evaluation reports as an earlier report's JSON
    holds them (``source``: its path). Each cell without a folder of its own in
    ``output`` gets one holding ``config.json`` (``make_config(cell)``: the settings
    it is imported under) and ``eval_<split>.json`` marked ``imported_from: source``,
    and no checkpoint: reports then count it as finished, and training it again is
    "done already". A cell with a folder (a run of its own) is left alone.

    Raises:
      ValueError: a report trained for other steps, or evaluated on another split or
        dataset, than ``make_config`` gives (nothing is imported then).
    """
    from dct_jax import workdir as workdir_lib  # noqa: PLC0415

    output = os.path.abspath(os.path.expanduser(output))
    todo = []
    for cell, report in recorded.items():
        config = make_config(cell)
        expected = {"checkpoint_step": int(config.num_train_steps), "split": config.eval_split,
                    "dataset": config.dataset}
        wrong = {k: (report.get(k), v) for k, v in expected.items() if report.get(k) != v}
        if wrong:
            raise ValueError(f"{source}: cell {cell.name} cannot be imported under these settings: "
                             + ", ".join(f"its {k} is {got!r}, not {want!r}" for k, (got, want) in wrong.items()))
        workdir = os.path.join(output, "cells", cell.name)
        if not os.path.exists(workdir):
            todo.append((cell, config, workdir, report))
    for cell, config, workdir, report in todo:
        os.makedirs(workdir)
        workdir_lib.write_config(config, workdir)
        with open(os.path.join(workdir, f"eval_{config.eval_split}.json"), "w") as f:
            json.dump({**report, IMPORTED_FROM: report.get(IMPORTED_FROM, source)}, f, indent=1)
    return [cell for cell, *_ in todo]


def imported_lines(names: Sequence[str]) -> list[str]:
    """The reports' note on imported cells (``names``), or nothing."""
    if not names:
        return []
    return ["", "Imported from an earlier report's record (`--import_results`; trained elsewhere, only their "
            "evaluation reports are here): " + ", ".join(f"`{n}`" for n in names) + "."]


def run_cells(output: str, cells: Sequence[Cell], *, steps: int, pretrain_steps: int, image_size: int,
              overrides: Mapping[str, Any] | None = None, wild_2d: str = "2d", data: str = DEFAULT_DATA,
              after_each: Callable[[], Any] | None = None) -> dict[Cell, dict[str, Any]]:
    """Pretrains each input type of ``cells`` (if ``pretrain_steps``), trains and evaluates each cell not done
    yet (calling ``after_each()`` after each), stopping at a preemption; the finished cells' reports."""
    if steps <= 0:
        raise ValueError(f"--steps must be positive, got {steps}")
    if pretrain_steps < 0:
        raise ValueError(f"--pretrain_steps must be >= 0, got {pretrain_steps}")
    output = os.path.abspath(os.path.expanduser(output))
    os.makedirs(os.path.join(output, "cells"), exist_ok=True)
    results: dict[Cell, dict[str, Any]] = {}
    pretrained: dict[str, str | None] = {}
    for index, cell in enumerate(cells, 1):
        if cell.inputs not in pretrained:
            pretrained[cell.inputs] = None
            if pretrain_steps:
                workdir = os.path.join(output, "pretrain", cell.inputs)
                config = pretrain_config(cell.inputs, steps=pretrain_steps, image_size=image_size,
                                         overrides=overrides, data=data)
                report = train_or_read(f"pretraining {cell.inputs} on {config.train_mixture.split(':')[0]}",
                                       workdir, config)
                if report.get("preempted"):
                    break
                pretrained[cell.inputs] = workdir
        workdir = os.path.join(output, "cells", cell.name)
        config = cell_config(cell, steps=steps, image_size=image_size, overrides=overrides,
                             init_from=pretrained[cell.inputs], wild_2d=wild_2d, data=data)
        report = train_or_read(f"[{index}/{len(cells)}] {cell.name}", workdir, config)
        if report.get("preempted"):
            break
        results[cell] = report
        if after_each is not None:
            after_each()
    return results
