r"""How long Table 3's cells must train: test PVE against steps for a few cells.

    python -m dct_jax.experiments.budget --output=/tmp/budget --steps=6000 --eval_every=500 \
        [--cells=image:3d,image:dense] [--pretrain_steps=1000] [--image_size=112]

Trains the cells as the Table 3 runner does (``table3.run``: the official protocol,
studio pretraining), evaluating on the synthetic test split every ``--eval_every``
steps (each evaluation is a line of the cell's ``eval_test_history.jsonl``), and writes

  DIR/budget.md    PVE per cell and step (the pretrained network at step 0), and the
                   first step after which 3D & 2D improves by less than ``--flat`` (2%)
                   over the rest of the run;
  DIR/budget.png   the curves, with the mean-parameter baseline.

The evaluations are of one cosine-decayed run of ``--steps``: the error at step k of it
is not that of a run of k steps (whose learning rate would have decayed by then), so
the curve tells where training flattens, and a shorter budget is then run on its own.
Re-running resumes, as the Table 3 runner does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from dct_jax.experiments import table3

DEFAULT_CELLS = "image:3d,image:dense"


def read_history(workdir: str, split: str = "test") -> dict[int, dict[str, Any]]:
    """``{step: report}`` of a run's evaluations (the last one per step, e.g. after a resume)."""
    path = os.path.join(workdir, f"eval_{split}_history.jsonl")
    history: dict[int, dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    report = json.loads(line)
                    history[int(report["checkpoint_step"])] = report
    return dict(sorted(history.items()))


def curves(output: str, cells: Sequence[table3.Cell], split: str = "test") -> dict[table3.Cell, dict[int, float]]:
    """PVE (mm) per step of each cell; step 0 is its pretrained network where there is one."""
    result = {}
    for cell in cells:
        points = {step: r["metrics"]["pve_mm"]
                  for step, r in read_history(os.path.join(output, "cells", cell.name), split).items()}
        pretrained = table3.read_any_result(os.path.join(output, "pretrain", cell.inputs), split)
        if pretrained is not None and points:
            points = {0: pretrained["metrics"]["pve_mm"], **points}
        result[cell] = points
    return result


def flat_from(points: Mapping[int, float], tolerance: float) -> int | None:
    """The first evaluated step after which PVE improves by less than ``tolerance`` (a fraction) to the end."""
    steps = sorted(points)
    if len(steps) < 2:
        return None
    final = points[steps[-1]]
    for step in steps:
        if points[step] - final <= tolerance * points[step]:
            return step
    return steps[-1]


def write_outputs(output: str, data: Mapping[table3.Cell, Mapping[int, float]], *, baseline: float | None,
                  tolerance: float, description: str) -> None:
    steps = sorted({s for points in data.values() for s in points})
    lines = ["# Training budget: test PVE against steps", "", description, "",
             "| step | " + " | ".join(f"{table3.INPUT_LABELS[c.inputs]}, {table3.SUPERVISION_LABELS[c.supervision]}"
                                     for c in data) + " |",
             "|---|" + "---|" * len(data)]
    for step in steps:
        values = (f"{points[step]:.1f}" if step in points else "—" for points in data.values())
        lines.append(f"| {step} | " + " | ".join(values) + " |")
    if baseline is not None:
        lines += ["", f"Mean-parameter baseline: {baseline:.1f} mm (step 0: the network pretrained on studio)."]
    for cell, points in data.items():
        flat = flat_from(points, tolerance)
        if flat is not None:
            lines.append(f"- {table3.SUPERVISION_LABELS[cell.supervision]} ({table3.INPUT_LABELS[cell.inputs]}): "
                         f"within {tolerance:.0%} of its final PVE ({points[max(points)]:.1f} mm) from step {flat}.")
    with open(os.path.join(output, "budget.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if any(data.values()):
        _plot(data, baseline, os.path.join(output, "budget.png"))


def _plot(data: Mapping[table3.Cell, Mapping[int, float]], baseline: float | None, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    for cell, points in data.items():
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], marker="o", markersize=3,
                label=f"{table3.INPUT_LABELS[cell.inputs]}, {table3.SUPERVISION_LABELS[cell.supervision]}")
    if baseline is not None:
        ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label="mean parameters")
    ax.set_xlabel("training step (step 0: pretrained on studio)")
    ax.set_ylabel("test PVE (mm), lower is better")
    ax.set_title("Synthetic test PVE during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(output: str, *, steps: int, eval_every: int, cells: Sequence[table3.Cell], pretrain_steps: int,
        image_size: int, overrides: Mapping[str, Any] | None = None, tolerance: float = 0.02) -> None:
    if eval_every <= 0:
        raise ValueError(f"--eval_every must be positive, got {eval_every}")
    output = os.path.abspath(os.path.expanduser(output))
    overrides = dict(overrides or {}, eval_every_steps=eval_every)
    results = table3.run(output, steps=steps, cells=cells, overrides=overrides, pretrain_steps=pretrain_steps,
                         image_size=image_size)
    data = curves(output, cells)
    baseline = next((r["baseline_mean_params"]["pve_mm"] for r in results.values()), None)
    config = table3.cell_config(cells[0], steps=steps, image_size=image_size, overrides=overrides)
    description = " ".join(table3.protocol_lines(config, pretrain_steps)).replace(
        f"{config.num_train_steps} steps of Adam", f"one run of {steps} steps of Adam") + (
        f" Evaluated every {eval_every} steps.")
    write_outputs(output, data, baseline=baseline, tolerance=tolerance, description=description)


def main(argv: Sequence[str]) -> None:
    from absl import app, flags  # noqa: PLC0415

    del argv
    f = flags.FLAGS
    try:
        cells = table3.parse_cells(f.cells)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    overrides = {"data_dir": f.data_dir} if f.data_dir else {}
    run(f.output, steps=f.steps, eval_every=f.eval_every, cells=cells, pretrain_steps=f.pretrain_steps,
        image_size=f.image_size, overrides=overrides, tolerance=f.flat)
    print(f"Wrote {os.path.join(os.path.abspath(f.output), 'budget.md')} and budget.png")


def _define_flags() -> None:
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("output", None, "Directory for budget.md, budget.png and the runs.")
    flags.DEFINE_integer("steps", 6000, "Training steps of each cell's run.")
    flags.DEFINE_integer("eval_every", 500, "Evaluate every this many steps.")
    flags.DEFINE_string("cells", DEFAULT_CELLS, "INPUT:SUPERVISION,... (Table 3 cells).")
    flags.DEFINE_integer("pretrain_steps", 1000, "Steps of pretraining on studio per input type (0: none).")
    flags.DEFINE_integer("image_size", table3.DEFAULT_IMAGE_SIZE, "Crop side in pixels.")
    flags.DEFINE_float("flat", 0.02, "A curve is flat from the step after which it improves by less than this.")
    flags.DEFINE_string("data_dir", None, "Where the synthetic and studio datasets are (built there if missing).")
    flags.mark_flag_as_required("output")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
