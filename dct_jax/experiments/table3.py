r"""The paper's Table 3 (5 inputs x 5 supervisions) reproduced on the synthetic data.

    python -m dct_jax.experiments.table3 --steps=500 --output=/tmp/table3

Trains every cell with one small configuration (the quickstart's, on 64x64 crops:
ResNet-10 of width 16 per branch, batch 32, Adam with cosine decay), evaluates it
on the synthetic test split with the official protocol and writes

  DIR/table3.md    PVE / MPJPE / PA-MPJPE per cell (mm), the mean-parameter baseline,
                   the paper's numbers beside them and the checks of the paper's ranking;
  DIR/table3.png   a grouped bar chart of PVE per input and supervision;
  DIR/cells/INPUT-SUPERVISION/   each cell's training workdir (checkpoints, eval_test.json).

Re-running the same command resumes: finished cells are read back, an interrupted
cell continues from its last checkpoint. Run it from the repository root (it reads
``configs/``). ``--cells=iuv:3d_dense,image:2d`` runs a subset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

# The paper's row and column order (Table 3).
INPUT_ORDER = ("iuv", "seg", "image", "image_iuv", "image_seg")
SUPERVISION_ORDER = ("3d_dense", "3d20_dense", "3d", "dense", "2d")
INPUT_LABELS = {"iuv": "IUV only", "seg": "Segment only", "image": "Image only",
                "image_iuv": "Image & IUV", "image_seg": "Image & Segment"}
SUPERVISION_LABELS = {"3d_dense": "3D & Dense & 2D", "3d20_dense": "20% 3D & Dense & 2D",
                      "3d": "3D & 2D", "dense": "Dense & 2D", "2d": "2D only"}
# The paper's Table 3, PVE / MPJPE / PVE-T in mm on UP-3D (for reference only:
# real data, ResNet-101 / ResNet-50 + ResNet-18 encoders).
PAPER_TABLE3 = {
    "iuv": ((120.0, 103.1, 31.8), (125.0, 107.2, 32.6), (125.2, 106.4, 32.1), (138.7, 121.2, 54.7),
            (204.3, 177.0, 92.1)),
    "seg": ((123.0, 105.1, 32.7), (126.7, 110.0, 33.2), (124.8, 107.8, 31.7), (147.4, 130.1, 55.9),
            (203.8, 176.7, 93.3)),
    "image": ((123.7, 105.9, 30.9), (127.5, 110.6, 32.2), (127.4, 108.5, 30.7), (137.7, 120.3, 51.7),
              (203.2, 178.5, 106.2)),
    "image_iuv": ((122.4, 105.1, 30.2), (125.0, 107.6, 32.1), (125.5, 107.3, 30.7), (133.8, 117.2, 52.5),
                  (197.3, 172.8, 107.9)),
    "image_seg": ((121.5, 104.3, 31.0), (126.4, 107.0, 31.6), (125.8, 106.8, 31.5), (142.2, 124.2, 56.6),
                  (201.2, 177.5, 101.7)),
}
METRICS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm")


@dataclasses.dataclass(frozen=True)
class Cell:
    inputs: str
    supervision: str

    @property
    def name(self) -> str:
        return f"{self.inputs}-{self.supervision}"


def all_cells() -> list[Cell]:
    return [Cell(i, s) for i in INPUT_ORDER for s in SUPERVISION_ORDER]


def parse_cells(spec: str | None) -> list[Cell]:
    """``"iuv:3d_dense,image:2d"`` -> those cells; empty or None -> all 25."""
    if not spec:
        return all_cells()
    cells = []
    for item in spec.split(","):
        inputs, sep, supervision = item.strip().partition(":")
        if not sep or inputs not in INPUT_ORDER or supervision not in SUPERVISION_ORDER:
            raise ValueError(f"--cells takes INPUT:SUPERVISION items separated by commas, with INPUT one of "
                             f"{list(INPUT_ORDER)} and SUPERVISION one of {list(SUPERVISION_ORDER)}; got {item!r}")
        cells.append(Cell(inputs, supervision))
    return cells


def cell_config(cell: Cell, *, steps: int, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The quickstart configuration with the cell's input and supervision (two-branch: ResNet-10 each)."""
    from configs import default, quickstart  # noqa: PLC0415  (the repository's configs/)

    config = quickstart.get_config()
    config.model.inputs = cell.inputs
    config.model.aux_depth = config.model.depth
    default.apply_supervision(config, cell.supervision)
    config.data.image_size = 64  # 25 cells in about an hour on a 2-core CPU
    config.num_train_steps = steps
    config.checkpoint_every_steps = max(1, min(config.checkpoint_every_steps, steps // 2))
    config.image_summary_every_steps = 0
    config.eval_every_steps = 0
    for key, value in (overrides or {}).items():
        *path, field = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[field] = value
    return config


def read_result(workdir: str, steps: int, split: str = "test") -> dict[str, Any] | None:
    """A finished cell's ``eval_<split>.json`` (trained for ``steps``), else None."""
    path = os.path.join(workdir, f"eval_{split}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        report = json.load(f)
    return report if report.get("checkpoint_step") == steps else None


def _check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
    """A cell folder trained with other settings is not silently continued."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(config.to_json_best_effort())
    differing = sorted(k for k in ("num_train_steps", "batch_size", "learning_rate", "data", "model", "loss")
                       if previous.get(k) != current.get(k))
    if differing:
        raise ValueError(f"{workdir} holds a run with other settings ({', '.join(differing)} differ); "
                         "use another --output or delete that folder")


def run(output: str, *, steps: int, cells: Sequence[Cell] | None = None,
        overrides: Mapping[str, Any] | None = None) -> dict[Cell, dict[str, Any]]:
    """Trains and evaluates each cell not done yet, then writes table3.md and table3.png."""
    from dct_jax import train  # noqa: PLC0415

    if steps <= 0:
        raise ValueError(f"--steps must be positive, got {steps}")
    cells = list(cells or all_cells())
    output = os.path.abspath(os.path.expanduser(output))
    os.makedirs(os.path.join(output, "cells"), exist_ok=True)
    results: dict[Cell, dict[str, Any]] = {}
    for index, cell in enumerate(cells, 1):
        workdir = os.path.join(output, "cells", cell.name)
        config = cell_config(cell, steps=steps, overrides=overrides)
        report = read_result(workdir, steps, config.eval_split)
        if report is not None:
            print(f"[{index}/{len(cells)}] {cell.name}: done already (PVE {report['metrics']['pve_mm']:.1f} mm)",
                  flush=True)
        else:
            _check_same_run(workdir, config)
            print(f"[{index}/{len(cells)}] {cell.name}: training {steps} steps in {workdir}", flush=True)
            report = train.train_and_evaluate(config, workdir)
            if report.get("preempted"):
                print(f"Stopped by {report.get('signal', 'SIGTERM')} in cell {cell.name} at step {report['step']} "
                      "(checkpoint saved); re-run the same command to resume", flush=True)
                break
        results[cell] = report
        write_outputs(output, results, config)
    return results


# ----------------------------------------------------------------------------- outputs


def _fmt(report: Mapping[str, Any] | None, key: str = "metrics") -> str:
    if report is None:
        return "—"
    return " / ".join(f"{report[key][m]:.1f}" for m in METRICS)


def ranking_checks(results: Mapping[Cell, Mapping[str, Any]]) -> list[str]:
    """The paper's claims, checked on the cells present (PVE)."""
    pve = {(c.inputs, c.supervision): r["metrics"]["pve_mm"] for c, r in results.items()}
    lines = []
    rows = [i for i in INPUT_ORDER if any(k[0] == i for k in pve)]
    for inputs in rows:
        row = {s: pve[(inputs, s)] for s in SUPERVISION_ORDER if (inputs, s) in pve}
        if "dense" in row and "3d" in row:
            lines.append(f"- {INPUT_LABELS[inputs]}: Dense & 2D reaches {row['3d'] / row['dense']:.0%} of the "
                         f"performance of 3D & 2D (PVE ratio 3D/dense; paper, image only: 92%).")
        if "2d" in row and len(row) > 1:
            worst = max(row, key=row.get)
            lines.append(f"- {INPUT_LABELS[inputs]}: 2D only is {'the worst' if worst == '2d' else 'not the worst'}"
                         f" supervision ({row['2d']:.1f} mm; worst: {SUPERVISION_LABELS[worst]}).")
        if "3d20_dense" in row and "3d" in row:
            lines.append(f"- {INPUT_LABELS[inputs]}: 20% 3D & Dense & 2D {row['3d20_dense']:.1f} mm vs 3D & 2D "
                         f"{row['3d']:.1f} mm (paper: comparable).")
    complete = [i for i in rows if all((i, s) in pve for s in SUPERVISION_ORDER)]
    if len(complete) > 1:
        means = {i: sum(pve[(i, s)] for s in SUPERVISION_ORDER) / len(SUPERVISION_ORDER) for i in complete}
        best = min(means, key=means.get)
        lines.append(f"- Best input by mean PVE over the five supervisions: {INPUT_LABELS[best]} "
                     f"({means[best]:.1f} mm; paper: Image & IUV). Means: "
                     + ", ".join(f"{INPUT_LABELS[i]} {m:.1f}" for i, m in means.items()) + ".")
    return lines


def table_markdown(results: Mapping[Cell, Mapping[str, Any]], config: ml_collections.ConfigDict) -> str:
    """The table of the cells in ``results``; ``config`` is any cell's (for the shared settings)."""
    by_key = {(c.inputs, c.supervision): r for c, r in results.items()}
    any_report = next(iter(results.values()), None)
    m = config.model
    lines = [
        "# Table 3 on the synthetic data",
        "",
        f"Every cell: ResNet-{m.depth} of width {m.width} (one per branch), {config.data.image_size}x"
        f"{config.data.image_size} crops, batch {config.batch_size}, {config.num_train_steps} steps of Adam "
        f"(learning rate {config.learning_rate:g} cosine-decayed to {config.end_learning_rate:g}), evaluated on "
        f"the synthetic test split with the official protocol (global rotation zeroed). "
        f"Cells: PVE / MPJPE / PA-MPJPE in mm, lower is better.",
        "",
        "| Input \\ Supervision | " + " | ".join(SUPERVISION_LABELS[s] for s in SUPERVISION_ORDER) + " |",
        "|---|" + "---|" * len(SUPERVISION_ORDER),
    ]
    for inputs in INPUT_ORDER:
        lines.append(f"| {INPUT_LABELS[inputs]} | "
                     + " | ".join(_fmt(by_key.get((inputs, s))) for s in SUPERVISION_ORDER) + " |")
    if any_report is not None:
        lines += ["", f"Mean-parameter baseline (always predicts the mean): {_fmt(any_report, 'baseline_mean_params')}"
                  f" mm on {any_report['num_examples']} test examples."]
    checks = ranking_checks(results)
    if checks:
        lines += ["", "## The paper's ranking, checked", "", *checks]
    lines += ["", "## The paper's Table 3 (UP-3D; PVE / MPJPE / PVE-T in mm)", "",
              "| Input \\ Supervision | " + " | ".join(SUPERVISION_LABELS[s] for s in SUPERVISION_ORDER) + " |",
              "|---|" + "---|" * len(SUPERVISION_ORDER)]
    for inputs in INPUT_ORDER:
        lines.append(f"| {INPUT_LABELS[inputs]} | "
                     + " | ".join(" / ".join(f"{v:.1f}" for v in cell) for cell in PAPER_TABLE3[inputs]) + " |")
    return "\n".join(lines) + "\n"


def plot(results: Mapping[Cell, Mapping[str, Any]], path: str) -> None:
    """A grouped bar chart of PVE: one group per input, one bar per supervision."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    by_key = {(c.inputs, c.supervision): r["metrics"]["pve_mm"] for c, r in results.items()}
    inputs = [i for i in INPUT_ORDER if any(k[0] == i for k in by_key)]
    supervisions = [s for s in SUPERVISION_ORDER if any(k[1] == s for k in by_key)]
    width = 0.8 / max(len(supervisions), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(inputs) + 2), 5.0), dpi=120)
    for j, supervision in enumerate(supervisions):
        xs = [i + (j - (len(supervisions) - 1) / 2) * width for i in range(len(inputs))]
        heights = [by_key.get((name, supervision), float("nan")) for name in inputs]
        ax.bar(xs, heights, width, label=SUPERVISION_LABELS[supervision])
    baseline = next(iter(results.values()))["baseline_mean_params"]["pve_mm"]
    ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label="mean parameters")
    ax.set_xticks(range(len(inputs)), [INPUT_LABELS[i] for i in inputs])
    ax.set_ylabel("PVE (mm), lower is better")
    ax.set_title("Table 3 on synthetic data: PVE per input and supervision")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.09), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(output: str, results: Mapping[Cell, Mapping[str, Any]], config: ml_collections.ConfigDict) -> None:
    with open(os.path.join(output, "table3.md"), "w") as f:
        f.write(table_markdown(results, config))
    if results:
        plot(results, os.path.join(output, "table3.png"))


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str]) -> None:
    from absl import app, flags  # noqa: PLC0415

    del argv
    f = flags.FLAGS
    overrides: dict[str, Any] = {}
    if f.data_dir:
        overrides["data_dir"] = f.data_dir
    for override in f.set or ():
        key, sep, value = override.partition("=")
        if not sep:
            raise app.UsageError(f"--set takes KEY=VALUE (a config field), got {override!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    try:
        cells = parse_cells(f.cells)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    run(f.output, steps=f.steps, cells=cells, overrides=overrides)
    print(f"Wrote {os.path.join(os.path.abspath(f.output), 'table3.md')} and table3.png")


def _define_flags() -> None:
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_integer("steps", 500, "Training steps per cell.")
    flags.DEFINE_string("output", None, "Directory for table3.md, table3.png and the cells' workdirs.")
    flags.DEFINE_string("cells", None, "INPUT:SUPERVISION,... to run a subset (default: all 25).")
    flags.DEFINE_string("data_dir", None, "Where the synthetic dataset is (built there if missing); "
                        "default: the quickstart's ~/tensorflow_datasets.")
    flags.DEFINE_multi_string("set", None, "Config overrides KEY=VALUE, e.g. --set=data.image_size=64.")
    flags.mark_flag_as_required("output")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
