r"""The paper's experiments after Table 3 (Sec. 4.2-4.3), on the synthetic data (``--data=up3d``: on UP-3D).

    python -m dct_jax.experiments NAME --steps=8000 --pretrain_steps=1000 --output=DIR

NAME               cells (``--cells`` keys)                             the paper's finding
``table4``         pose_dense, shape_dense, pose_2d, shape_2d           Table 4: SMPL pose vs shape labels alone
``figure4``        100, 80, 50, 20, 10, 5, 1, 0 (% of records with 3D)   3D labels are efficient: +6% error at 20%,
                                                                        0% is 34% worse than 1%
``figure5``        0, 5, 10, 20, 30, 40 (U, V noise std), 2d            noisy dense keypoints: graceful below 10,
                                                                        still far better than none at 40
``figure6``        100, 80, 60, 40, 20, 10, 0 (% of dense keypoints)    graceful above 60%; 10-15 points still far
                                                                        better than 2D only
``refinement``     refined, raw, exact                                  raw (unrefined) IUV maps: 20.1% worse

Every cell trains as Table 3's (``table3``: the studio source in every batch, the
official loss weights, studio pretraining per input type, the quickstart network);
its name says how it differs from its Table 3 cell (:mod:`dct_jax.experiments.variants`),
and cells equal to a Table 3 cell are that cell: run into Table 3's output folder,
an experiment reuses its finished cells and pretraining. Writes DIR/NAME.md (our
numbers, the paper's, and the paper's claims checked), DIR/NAME.png (a line plot
for the figures, bars for the rest) and DIR/NAME.json (every finished cell's
evaluation report).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from dct_jax.experiments import runner, table3, variants
from dct_jax.experiments.runner import Cell

Reports = Mapping[str, Mapping[str, Any]]  # point key -> evaluation report


@dataclasses.dataclass(frozen=True)
class Point:
    """One cell of an experiment: its ``--cells`` key, its run, its label and its x value (figures)."""

    key: str
    cell: Cell
    label: str
    x: float | None = None  # None: a reference drawn as a line (figures) or a bar


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    what: str  # how the cells differ, in words
    points: tuple[Point, ...]
    x_label: str | None  # figures: the x axis; None: a table
    paper: tuple[str, ...]  # the paper's numbers or words
    checks: Callable[[Reports], list[str]]
    paper_values: Mapping[str, tuple[float, float, float]] | None = None  # PVE / MPJPE / PVE-T per key

    def points_on(self, data: str) -> list[Point]:
        """The points that can run on ``data`` (real data has no exact IUV maps: ``variants.GENERATED_ONLY``)."""
        return [p for p in self.points
                if data == runner.DEFAULT_DATA or p.cell.variant not in variants.GENERATED_ONLY]

    def parse_cells(self, spec: str | None, data: str = runner.DEFAULT_DATA) -> list[Point]:
        """``"20,10"`` -> those points; empty or None -> all that can run on ``data``."""
        if not spec:
            return self.points_on(data)
        by_key = {p.key: p for p in self.points}
        keys = [k.strip() for k in spec.split(",") if k.strip()]
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise ValueError(f"--cells of {self.name} takes keys from {list(by_key)} separated by commas; "
                             f"got {unknown}")
        return [by_key[k] for k in keys]


def _pve(reports: Reports, key: str) -> float | None:
    report = reports.get(key)
    return None if report is None else float(report["metrics"]["pve_mm"])


def _verdict(holds: bool) -> str:
    return "**holds**" if holds else "**does not hold**"


def _worse(a: float, b: float) -> float:
    """How much higher error ``a`` is than ``b``, as a fraction of ``b``."""
    return a / b - 1.0


def _gain(worse: float, better: float) -> float:
    return (worse - better) / worse


# ----------------------------------------------------------------------------- Table 4

_TABLE4_PAPER = {"pose_dense": (131.3, 116.6, 59.0), "shape_dense": (148.5, 127.3, 30.6),
                 "pose_2d": (164.0, 148.2, 117.0), "shape_2d": (220.0, 180.6, 31.4)}


def _table4_checks(reports: Reports) -> list[str]:
    lines = []
    for row, label in (("dense", "Dense & 2D"), ("2d", "2D only")):
        pose, shape = reports.get(f"pose_{row}"), reports.get(f"shape_{row}")
        if pose is None or shape is None:
            continue
        p, s = pose["metrics"], shape["metrics"]
        lines.append(f"- {label}: the pose label alone gives the lower MPJPE ({p['mpjpe_mm']:.1f} vs "
                     f"{s['mpjpe_mm']:.1f} mm) and the shape label alone the lower PVE-T ({s['pvet_mm']:.1f} vs "
                     f"{p['pvet_mm']:.1f} mm) (paper: pose drives MPJPE, shape PVE-T): "
                     f"{_verdict(p['mpjpe_mm'] < s['mpjpe_mm'] and s['pvet_mm'] < p['pvet_mm'])}.")
        lines.append(f"- {label}: pose alone is better overall than shape alone (PVE {p['pve_mm']:.1f} vs "
                     f"{s['pve_mm']:.1f} mm; paper {_TABLE4_PAPER['pose_' + row][0]} vs "
                     f"{_TABLE4_PAPER['shape_' + row][0]}): {_verdict(p['pve_mm'] < s['pve_mm'])}.")
    return lines


TABLE4 = Experiment(
    name="table4", title="Table 4: influence of SMPL pose vs shape labels",
    what=("Image only. The in-the-wild SMPL label supervises the pose alone (its betas term weighs 0) or the "
          "shape alone (its pose term weighs 0), with Dense & 2D or 2D only as the other supervision (the "
          "in-the-wild source labelled `3d=pose` or `3d=shape`); the studio source keeps its full SMPL label; "
          "dense weight 1, as with in-the-wild 3D."),
    points=(Point("pose_dense", Cell("image", "3d_dense", "pose_only"), "Dense & 2D, 3D pose only"),
            Point("shape_dense", Cell("image", "3d_dense", "shape_only"), "Dense & 2D, shape only"),
            Point("pose_2d", Cell("image", "3d", "pose_only"), "2D only, 3D pose only"),
            Point("shape_2d", Cell("image", "3d", "shape_only"), "2D only, shape only")),
    x_label=None,
    paper=("Table 4 (UP-3D, Image only; PVE / MPJPE / PVE-T): Dense & 2D: pose only 131.3 / 116.6 / 59.0, "
           "shape only 148.5 / 127.3 / 30.6; 2D only: pose only 164.0 / 148.2 / 117.0, shape only "
           "220.0 / 180.6 / 31.4. \"3D poses and SMPL parameters explicitly affect MPJPE and PVE-T, "
           "respectively\"; \"3D poses have more influence on the model's overall performance\".",),
    checks=_table4_checks, paper_values=_TABLE4_PAPER)


# ----------------------------------------------------------------------------- Figure 4

_FIGURE4_PERCENT = (100, 80, 50, 20, 10, 5, 1, 0)


def _figure4_cell(percent: int) -> Cell:
    if percent == 100:
        return Cell("image", "3d")
    if percent == 0:
        return Cell("image", "2d")
    return Cell("image", "3d", f"3d_{percent / 100:g}")


def _figure4_checks(reports: Reports) -> list[str]:
    lines = []
    full, twenty, one, none = (_pve(reports, k) for k in ("100", "20", "1", "0"))
    if full and twenty:
        value = _worse(twenty, full)
        lines.append(f"- With 3D labels on 20% of the records the error is {value:+.1%} against 100% (paper +6%): "
                     f"{_verdict(value <= 0.10)} (criterion: at most +10%).")
    if one and none:
        value = _worse(none, one)
        lines.append(f"- Without 3D labels (0%) the error is {value:+.1%} against 1% (paper +34%): "
                     f"{_verdict(value >= 0.17)} (criterion: at least +17%, half the paper's effect).")
    return lines


FIGURE4 = Experiment(
    name="figure4", title="Figure 4: efficiency of 3D labels",
    what=("Image only, 3D & 2D, with the in-the-wild SMPL labels kept on a fixed fraction of the records (by "
          "record id; the source labelled `3d=F`); 100% is Table 3's 3D & 2D cell, 0% its 2D only cell."),
    points=tuple(Point(str(p), _figure4_cell(p), f"{p}% 3D", float(p)) for p in _FIGURE4_PERCENT),
    x_label="in-the-wild records with 3D labels (%)",
    paper=("Figure 4 (UP-3D, Image only): \"the reconstruction error only increases by 6% when 80% 3D "
           "annotations are excluded\"; without paired 3D \"the reconstruction error is 34% larger than models "
           "trained with only 1% of paired 3D data\" (the figure's values are not in the text).",),
    checks=_figure4_checks)


# ----------------------------------------------------------------------------- Figure 5

_FIGURE5_SIGMA = (0, 5, 10, 20, 30, 40)


def _figure5_checks(reports: Reports) -> list[str]:
    lines = []
    exact, ten, forty, sparse = (_pve(reports, k) for k in ("0", "10", "40", "2d"))
    if exact and ten:
        value = _worse(ten, exact)
        lines.append(f"- Noise of std 10 costs {value:+.1%} against none (paper: \"drops gracefully while the "
                     f"variance of noise is less than 10\"): {_verdict(value <= 0.05)} (criterion: at most +5%).")
    if exact and forty and sparse:
        kept, full = _gain(sparse, forty), _gain(sparse, exact)
        lines.append(f"- With noise of std 40, dense keypoints still improve on 2D only by {kept:.1%} (exact: "
                     f"{full:.1%}; paper: \"could still enhance the performance of the model considerably\"): "
                     f"{_verdict(kept > 0 and kept >= 0.5 * full)} (criterion: better than 2D only, keeping at "
                     "least half of the exact keypoints' gain).")
    return lines


FIGURE5 = Experiment(
    name="figure5", title="Figure 5: noisy dense correspondence",
    what=("Image & IUV, Dense & 2D, with Gaussian noise of std S (0-255 scale) on the U and V of the dense "
          "keypoints' source, fixed per record (`config.data.dense_uv_noise`); I and the IUV input are "
          "unchanged. S = 0 is Table 3's Dense & 2D cell; the 2D only cell is the reference."),
    points=tuple(Point(str(s), Cell("image_iuv", "dense", f"uv_noise_{s}") if s else Cell("image_iuv", "dense"),
                       f"U, V noise std {s}", float(s)) for s in _FIGURE5_SIGMA)
    + (Point("2d", Cell("image_iuv", "2d"), "2D only"),),
    x_label="std of the Gaussian noise on U, V (0-255)",
    paper=("Figure 5 (UP-3D, Image & IUV, Dense & 2D): \"The performance of the model drops gracefully while "
           "the variance of noise is less than 10. Even the variance of noise increases to 40, using noisy dense "
           "keypoints could still enhance the performance of the model considerably\" (values not in the text).",),
    checks=_figure5_checks)


# ----------------------------------------------------------------------------- Figure 6

_FIGURE6_PERCENT = (100, 80, 60, 40, 20, 10, 0)


def _figure6_cell(percent: int) -> Cell:
    if percent == 100:
        return Cell("image_iuv", "dense")
    if percent == 0:
        return Cell("image_iuv", "2d")
    return Cell("image_iuv", "dense", f"dense_keep_{percent / 100:g}")


def _figure6_checks(reports: Reports) -> list[str]:
    lines = []
    full, sixty, ten, none = (_pve(reports, k) for k in ("100", "60", "10", "0"))
    if full and sixty:
        value = _worse(sixty, full)
        lines.append(f"- Keeping 60% of the dense keypoints costs {value:+.1%} (paper: \"drops gracefully when "
                     f"more than 60% keypoints are retained\"): {_verdict(value <= 0.05)} (criterion: at most +5%).")
    if full and ten and none:
        kept, whole = _gain(none, ten), _gain(none, full)
        lines.append(f"- With 10% of the dense keypoints (12-15 per person) the gain over 2D only is {kept:.1%} "
                     f"(all keypoints: {whole:.1%}; paper: \"still significantly more efficient than sparse 2D "
                     f"keypoints\"): {_verdict(kept > 0 and kept >= 0.5 * whole)} (criterion: better than 2D only, "
                     "keeping at least half of the full gain).")
    return lines


FIGURE6 = Experiment(
    name="figure6", title="Figure 6: dense keypoint density",
    what=("Image & IUV, Dense & 2D, keeping a fixed fraction of each record's dense keypoints (chosen by record "
          "id; `config.data.dense_keep`; the synthetic records have 100-150 each, like COCO-DensePose). 100% is "
          "Table 3's Dense & 2D cell, 0% its 2D only cell."),
    points=tuple(Point(str(p), _figure6_cell(p), f"{p}% dense keypoints", float(p)) for p in _FIGURE6_PERCENT),
    x_label="dense keypoints kept (%)",
    paper=("Figure 6 (UP-3D, Image & IUV, Dense & 2D): \"The performance drops gracefully when more than 60% "
           "dense keypoints are retained. Besides, models trained with only 10 ~ 15 dense keypoints still have "
           "significantly higher performance than models trained with only sparse 2D keypoints\".",),
    checks=_figure6_checks)


# ----------------------------------------------------------------------------- raw vs refined IUV


def _refinement_checks(reports: Reports) -> list[str]:
    refined, raw = _pve(reports, "refined"), _pve(reports, "raw")
    if not (refined and raw):
        return []
    value = _worse(raw, refined)
    lines = [f"- Raw predicted-like IUV maps are {value:+.1%} against refined ones (paper +20.1%): "
             f"{_verdict(value >= 0.10)} (criterion: at least +10%, half the paper's effect)."]
    exact = _pve(reports, "exact")
    if exact:
        won_back = (f"; refinement wins back {(raw - refined) / (raw - exact):.0%} of what the raw maps lose"
                    if raw > exact else "")
        lines.append(f"- Not a claim of the paper (DensePose's maps have no exact reference): against the exact "
                     f"maps the errors cost {_worse(raw, exact):+.1%} raw and {_worse(refined, exact):+.1%} "
                     f"refined{won_back}.")
    return lines


REFINEMENT = Experiment(
    name="refinement", title="Raw vs refined IUV maps",
    what=("Image & IUV, Dense & 2D, with dense keypoints sampled from the IUV maps (not the records' dense "
          "annotations). `refined` and `raw`: every IUV map (input and dense source, studio's too) made "
          "DensePose-like by `dct_jax.iuv_errors.DENSEPOSE_LIKE` (docs/iuv_errors.md), with and without the "
          "keypoint-guided refinement of Sec. 3.2; `exact`: the exact maps (the reference)."),
    points=(Point("refined", Cell("image_iuv", "dense", "predicted_iuv"), "predicted-like IUV, refined"),
            Point("raw", Cell("image_iuv", "dense", "predicted_iuv_raw"), "predicted-like IUV, raw"),
            Point("exact", Cell("image_iuv", "dense", "exact_iuv"), "exact IUV")),
    x_label=None,
    paper=("Sec. 4.3 (UP-3D, Image & IUV, Dense & 2D, DensePose's predicted maps): \"If we directly use raw IUV "
           "maps the performance drops by 20.1%\".",),
    checks=_refinement_checks)


EXPERIMENTS = {e.name: e for e in (TABLE4, FIGURE4, FIGURE5, FIGURE6, REFINEMENT)}


# ----------------------------------------------------------------------------- running


def _settings(steps: int, pretrain_steps: int, image_size: int, overrides: Mapping[str, Any] | None,
              wild_2d: str, data: str) -> dict[str, Any]:
    return dict(steps=steps, pretrain_steps=pretrain_steps, image_size=image_size, overrides=overrides,
                wild_2d=wild_2d, data=data)


def run(experiment: Experiment, output: str, *, steps: int, points: Sequence[Point] | None = None,
        overrides: Mapping[str, Any] | None = None, pretrain_steps: int = 0,
        image_size: int = runner.DEFAULT_IMAGE_SIZE, wild_2d: str = "2d", data: str = runner.DEFAULT_DATA
        ) -> dict[str, dict[str, Any]]:
    """Trains (resuming) the experiment's cells not done yet, rewriting its report after each; the finished ones."""
    settings = _settings(steps, pretrain_steps, image_size, overrides, wild_2d, data)
    points = list(points or experiment.points_on(data))
    done = runner.run_cells(output, [p.cell for p in points], **settings,
                            after_each=lambda: write_report(experiment, output, **settings))
    return {p.key: done[p.cell] for p in points if p.cell in done}


def write_report(experiment: Experiment, output: str, *, steps: int, pretrain_steps: int = 0,
                 image_size: int = runner.DEFAULT_IMAGE_SIZE, overrides: Mapping[str, Any] | None = None,
                 wild_2d: str = "2d", data: str = runner.DEFAULT_DATA) -> dict[str, dict[str, Any]]:
    """Writes NAME.md, NAME.png and NAME.json of the experiment's cells finished in ``output`` with these
    settings; returns them by key (nothing is written if there are none). Nothing is trained."""
    output = os.path.abspath(os.path.expanduser(output))

    def make_config(cell: Cell) -> ml_collections.ConfigDict:
        return runner.finished_config(cell, output, steps=steps, pretrain_steps=pretrain_steps,
                                      image_size=image_size, overrides=overrides, wild_2d=wild_2d, data=data)

    points = experiment.points_on(data)
    finished = runner.finished_cells(output, [p.cell for p in points], make_config)
    reports = {p.key: finished[p.cell] for p in points if p.cell in finished}
    if reports:
        config = make_config(points[0].cell)
        with open(os.path.join(output, f"{experiment.name}.md"), "w") as f:
            f.write(markdown(experiment, reports, config, pretrain_steps, data=data))
        with open(os.path.join(output, f"{experiment.name}.json"), "w") as f:
            json.dump({k: reports[k] for k in reports}, f, indent=1)
        plot(experiment, reports, os.path.join(output, f"{experiment.name}.png"), table3.data_title(config))
    return reports


# ----------------------------------------------------------------------------- outputs


def markdown(experiment: Experiment, reports: Reports, config: ml_collections.ConfigDict,
             pretrain_steps: int = 0, data: str = runner.DEFAULT_DATA) -> str:
    """The report: protocol, what the cells change, our numbers beside the paper's, the claims checked
    (``data``: the protocol's data; points that cannot run on it are left out)."""
    paper_column = experiment.paper_values is not None
    lines = [f"# {experiment.title} on {table3.data_title(config)}", "",
             *table3.protocol_lines(config, pretrain_steps), "", f"This experiment: {experiment.what}", "",
             "| cell | run | PVE / MPJPE / PA-MPJPE / PVE-T (mm) |" + (" paper PVE / MPJPE / PVE-T |" if paper_column
                                                                    else ""),
             "|---|---|---|" + ("---|" if paper_column else "")]
    for point in experiment.points_on(data):
        row = f"| {point.label} | `{point.cell.name}` | {table3._fmt(reports.get(point.key))} |"
        if paper_column:
            row += " " + " / ".join(f"{v:.1f}" for v in experiment.paper_values[point.key]) + " |"
        lines.append(row)
    any_report = next(iter(reports.values()))
    lines += ["", f"Mean-parameter baseline (always predicts the mean): {table3._fmt(any_report, 'baseline_mean_params')}"
              f" mm on {any_report['num_examples']} test examples. A dash: not run (yet)."]
    lines += runner.imported_lines([p.cell.name for p in experiment.points_on(data)
                                   if runner.IMPORTED_FROM in reports.get(p.key, {})])
    checks = experiment.checks(reports)
    lines += ["", "## The paper's claims, checked", ""]
    lines += checks or ["None yet: each claim compares cells of which some have not finished (the dashes above)."]
    lines += ["", "## The paper", "", *experiment.paper]
    return "\n".join(lines) + "\n"


def plot(experiment: Experiment, reports: Reports, path: str, data: str = "the synthetic data") -> None:
    """Figures: PVE against the x value (references as dashed lines); tables: one bar per cell."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    baseline = next(iter(reports.values()))["baseline_mean_params"]["pve_mm"]
    if experiment.x_label is not None:
        # Categorical x in the experiment's order, as the paper's figures (from all labels to none).
        curve = [(i, p) for i, p in enumerate(q for q in experiment.points if q.x is not None) if p.key in reports]
        ax.plot([i for i, _ in curve], [_pve(reports, p.key) for _, p in curve], marker="o", label="ours (PVE)")
        ticks = [p for p in experiment.points if p.x is not None]
        ax.set_xticks(range(len(ticks)), [f"{p.x:g}" for p in ticks])
        for point in experiment.points:
            if point.x is None and point.key in reports:
                ax.axhline(_pve(reports, point.key), color="tab:red", linestyle=":", label=point.label)
        ax.set_xlabel(experiment.x_label)
        ax.grid(alpha=0.3)
    else:
        shown = [p for p in experiment.points if p.key in reports]
        ax.bar(range(len(shown)), [_pve(reports, p.key) for p in shown])
        ax.set_xticks(range(len(shown)), [p.label for p in shown], rotation=15, fontsize=8)
    ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label="mean parameters")
    ax.set_ylabel("PVE (mm), lower is better")
    ax.set_title(f"{experiment.title} ({data.removeprefix('the ')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
