r"""The command line of every experiment: ``python -m dct_jax.experiments NAME [--flags]``.

    python -m dct_jax.experiments figure4 --steps=8000 --pretrain_steps=1000 --output=DIR [--cells=20,10]

NAME is ``table3`` (:mod:`dct_jax.experiments.table3`) or one of
:data:`dct_jax.experiments.ablations.EXPERIMENTS` (table4, figure4, figure5,
figure6, refinement). Re-running the same command resumes; ``--report_only``
writes the report of the cells finished with these settings without training.
``--import_results=NAME.json`` counts the cells of an earlier report's record
(trained elsewhere with the same settings) as finished. ``--data=up3d`` runs the
same cells on UP-3D with Human3.6M as the 3D source (built with
``python -m datasets build``; pass ``--set=smpl_path=...``), into an ``--output``
of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

NAMES = ("table3", "table4", "figure4", "figure5", "figure6", "refinement")


def _cells(name: str, spec: str | None, data: str) -> tuple[list[Any], list[Any]]:
    """``(points or cells to run, their runner.Cell s)`` of ``--cells`` for experiment ``name`` on ``data``."""
    from dct_jax.experiments import ablations, table3  # noqa: PLC0415

    if name == "table3":
        cells = table3.parse_cells(spec)
        return cells, cells
    points = ablations.EXPERIMENTS[name].parse_cells(spec, data)
    return points, [p.cell for p in points]


def recorded_cells(path: str) -> dict[Any, dict[str, Any]]:
    """An earlier report's record by cell: ``NAME.json`` of an experiment (by its ``--cells`` keys) or
    table3's ``results.json`` (by cell names); a ValueError naming the file if it is neither."""
    import json  # noqa: PLC0415

    from dct_jax.experiments import ablations, table3  # noqa: PLC0415

    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in ("results", "table3"):
        cells = {c.name: c for c in table3.all_cells()}
    elif stem in ablations.EXPERIMENTS:
        cells = {p.key: p.cell for p in ablations.EXPERIMENTS[stem].points}
    else:
        raise ValueError(f"--import_results: cannot tell which experiment {path} records; give an experiment's "
                         f"NAME.json ({', '.join(ablations.EXPERIMENTS)}) or table3's results.json")
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--import_results: cannot read {path}: {error}") from error
    if not isinstance(recorded, dict):
        raise ValueError(f"--import_results: {path} holds no cell reports (a JSON object by cell)")
    unknown = [k for k in recorded if k not in cells]
    if unknown:
        raise ValueError(f"--import_results: {path} has cells {unknown} that {stem} does not have "
                         f"(its keys: {list(cells)})")
    return {cells[k]: report for k, report in recorded.items()}


def main(argv: Sequence[str], *, name: str, program: str) -> None:
    from absl import flags  # noqa: PLC0415

    from dct_jax import cli, state, workdir  # noqa: PLC0415
    from dct_jax.experiments import ablations, runner, table3  # noqa: PLC0415

    if len(argv) > 1:
        cli.fail(program, f"unexpected arguments {argv[1:]}; all options are --flags")
    f = flags.FLAGS
    try:
        overrides: dict[str, Any] = {}
        if f.data_dir:
            overrides["data_dir"] = f.data_dir
        overrides.update(workdir.parse_overrides(f.set))
        selected, cells = _cells(name, f.cells, f.data)
        settings = dict(steps=f.steps, overrides=overrides, pretrain_steps=f.pretrain_steps,
                        image_size=f.image_size, wild_2d=f.wild_2d, data=f.data)
        for cell in cells:  # every setting checked before anything is built or trained
            workdir.validate(runner.cell_config(cell, steps=f.steps, image_size=f.image_size, overrides=overrides,
                                                wild_2d=f.wild_2d, data=f.data))
        output = os.path.abspath(os.path.expanduser(f.output))  # as the report writers resolve it
        for path in f.import_results or ():
            imported = runner.import_results(output, recorded_cells(path), path,
                                             lambda cell: runner.finished_config(cell, output, **settings))
            print(f"Imported {len(imported)} finished cells from {path}"
                  + (f": {', '.join(c.name for c in imported)}" if imported else " (each has a folder here already)"))
    except ValueError as error:  # ConfigError, bad --cells, --wild_2d, --data or --import_results
        cli.fail(program, str(error))
    report = os.path.join(os.path.abspath(f.output), f"{name}.md")
    try:
        if name == "table3":
            found = (table3.write_report(f.output, **settings) if f.report_only
                     else table3.run(f.output, cells=selected, **settings))
        else:
            experiment = ablations.EXPERIMENTS[name]
            found = (ablations.write_report(experiment, f.output, **settings) if f.report_only
                     else ablations.run(experiment, f.output, points=selected, **settings))
    except (workdir.ConfigError, workdir.WorkdirError, state.CheckpointError) as error:
        cli.fail(program, str(error))
    if f.report_only:
        print(f"{len(found)} finished cells with these settings in {os.path.abspath(f.output)}"
              + ("" if found else " (nothing written; pass the --steps, --pretrain_steps, --image_size, "
                 "--wild_2d, --data and --set of the runs)"))
    elif found:
        print(f"Wrote {report} and {name}.png")


def define_flags(name: str) -> None:
    from absl import flags  # noqa: PLC0415

    from configs import default  # noqa: PLC0415  (the repository's configs/)
    from dct_jax.experiments import runner  # noqa: PLC0415

    flags.DEFINE_integer("steps", 2000, "Training steps per cell.")
    flags.DEFINE_integer("pretrain_steps", 1000, "Steps of pretraining on the 3D source alone (studio or "
                         "Human3.6M) per input type (0: none).")
    flags.DEFINE_integer("image_size", runner.DEFAULT_IMAGE_SIZE, "Crop side in pixels.")
    flags.DEFINE_string("wild_2d", "2d", "The in-the-wild source's 2D label: 2d (all 19 keypoints, exact) or e.g. "
                        "2d=lsp14,2d_noise=1 (LSP's 14 joints with COCO annotators' noise, as UP-3D's labels).")
    flags.DEFINE_enum("data", runner.DEFAULT_DATA, sorted(default.PROTOCOL_SOURCES),
                      "The protocol's data: synthetic (with studio as its Human3.6M; built if missing) or up3d "
                      "(UP-3D with Human3.6M: build both with python -m datasets, with --iuv_dir for the dense "
                      "cells, and pass --set=smpl_path=SMPL_NEUTRAL.pkl).")
    flags.DEFINE_string("output", None, f"Directory for {name}.md, {name}.png and the cells' workdirs.")
    flags.DEFINE_string("cells", None, "INPUT:SUPERVISION,... (table3) or the experiment's cell keys, e.g. 20,10 "
                        "(figure4), to run a subset (default: all).")
    flags.DEFINE_string("data_dir", None, "Where the datasets are (synthetic and studio are built there if "
                        "missing); default: the quickstart's ~/tensorflow_datasets.")
    flags.DEFINE_bool("report_only", False, "Train nothing: write the report of the cells finished in --output "
                      "with these settings (e.g. after runners of different cells in parallel).")
    flags.DEFINE_multi_string("import_results", None, "An earlier report's record (an experiment's NAME.json or "
                              "table3's results.json) whose cells, trained elsewhere with these settings, count as "
                              "finished here unless --output has them (evaluation reports only; the reports say "
                              "which cells are imported). Repeatable.")
    flags.DEFINE_multi_string("set", None, "Config overrides KEY=VALUE, e.g. --set=data.image_size=64.")
    flags.mark_flag_as_required("output")


def run_command(name: str | None = None, *, program: str = "python -m dct_jax.experiments") -> None:
    """Parses ``sys.argv`` (``NAME --flags`` unless ``name`` is given) and runs the experiment."""
    from absl import app  # noqa: PLC0415

    from dct_jax import cli  # noqa: PLC0415

    if name is None:
        if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
            given = sys.argv[1] if len(sys.argv) > 1 else "nothing"
            cli.fail(program, f"the first argument names the experiment, one of {', '.join(NAMES)}; got {given} "
                     f"(e.g. {program} figure4 --steps=8000 --output=DIR)")
        name = sys.argv.pop(1)
        program = f"{program} {name}"
    define_flags(name)
    app.run(lambda argv: main(argv, name=name, program=program), flags_parser=cli.flags_parser(program))
