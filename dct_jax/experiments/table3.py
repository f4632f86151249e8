r"""The paper's Table 3 (5 inputs x 5 supervisions) reproduced on the synthetic data (``--data=up3d``: on UP-3D).

    python -m dct_jax.experiments.table3 --steps=2000 --output=/tmp/table3

Every cell trains as the official code does (``configs/default.py:apply_protocol``):
half of every batch is the studio set (the Human3.6M stand-in, ``datasets/studio``)
with its SMPL and 2D labels, half the synthetic in-the-wild set with what the cell
grants it (2D keypoints always; dense keypoints; its SMPL labels on all, a fixed
20% or none of its records); loss weights SMPL 10 and keypoints 10 in every cell,
dense 1 with in-the-wild 3D and 10 without. Before the cells, one network per input
type is pretrained on studio alone (``--pretrain_steps``, 0: none), and every cell
of that input starts from it, as the paper's runs start from Human3.6M pretraining.
The network is the quickstart's (ResNet-10 of width 16 per branch, batch 32, Adam
with cosine decay) on ``--image_size`` crops. Writes

  DIR/table3.md    PVE / MPJPE / PA-MPJPE / PVE-T per cell (mm), the mean-parameter baseline,
                   the paper's numbers beside them and the checks of the paper's claims;
  DIR/table3.png   a grouped bar chart of PVE per input and supervision;
  DIR/results.json every finished cell's evaluation report;
  DIR/pretrain/INPUT/            each input's pretraining workdir;
  DIR/cells/INPUT-SUPERVISION/   each cell's training workdir (checkpoints, eval_test.json).

Re-running the same command resumes: finished runs are read back, an interrupted
one continues from its last checkpoint. Run it from the repository root (it reads
``configs/``). ``--cells=iuv:3d_dense,image:2d`` runs a subset; runners of different cells
may share one ``--output`` (e.g. one per row, in parallel), and the table shows every
cell finished there with the same settings; ``--report_only`` writes it without training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from dct_jax.experiments import runner
from dct_jax.experiments.runner import (  # noqa: F401  (this module's interface since before runner.py)
    DEFAULT_DATA, DEFAULT_IMAGE_SIZE, Cell, cell_config, pretrain_config, read_any_result, read_result)

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
METRICS = ("pve_mm", "mpjpe_mm", "pa_mpjpe_mm", "pvet_mm")


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


def run(output: str, *, steps: int, cells: Sequence[Cell] | None = None,
        overrides: Mapping[str, Any] | None = None, pretrain_steps: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE, wild_2d: str = "2d", data: str = DEFAULT_DATA
        ) -> dict[Cell, dict[str, Any]]:
    """Pretrains each input type (if ``pretrain_steps``), trains and evaluates each cell not done yet,
    rewriting table3.md and table3.png after each."""
    settings = dict(steps=steps, overrides=overrides, pretrain_steps=pretrain_steps, image_size=image_size,
                    wild_2d=wild_2d, data=data)
    return runner.run_cells(output, list(cells or all_cells()), **settings,
                            after_each=lambda: write_report(output, **settings))


def write_report(output: str, *, steps: int, overrides: Mapping[str, Any] | None = None, pretrain_steps: int = 0,
                 image_size: int = DEFAULT_IMAGE_SIZE, wild_2d: str = "2d", data: str = DEFAULT_DATA
                 ) -> dict[Cell, dict[str, Any]]:
    """Writes table3.md, table3.png and results.json of every cell finished in ``output`` with these
    settings (those :func:`run` takes); returns them (nothing is written if there are none). Nothing is trained."""
    output = os.path.abspath(os.path.expanduser(output))

    def make_config(cell: Cell) -> ml_collections.ConfigDict:
        return runner.finished_config(cell, output, steps=steps, pretrain_steps=pretrain_steps,
                                      image_size=image_size, overrides=overrides, wild_2d=wild_2d, data=data)

    results = runner.finished_cells(output, all_cells(), make_config)
    if results:  # never overwrite a table with an empty one (e.g. other settings asked for)
        write_outputs(output, results, make_config(next(iter(results))), pretrain_steps=pretrain_steps)
    return results


# ----------------------------------------------------------------------------- outputs


def _fmt(report: Mapping[str, Any] | None, key: str = "metrics") -> str:
    if report is None:
        return "—"
    return " / ".join(f"{report[key][m]:.1f}" for m in METRICS)


def _relative_gain(worse: float, better: float) -> float:
    """How much lower ``better`` is than ``worse``, as a fraction of ``worse``."""
    return (worse - better) / worse


def claim_values(pve: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """The numbers behind the paper's Sec. 4.1 claims, from PVE per (input, supervision) where present.

    ``dense_vs_3d``: 3D & 2D / Dense & 2D (Image only; paper 92%); ``dense_adds_to_3d``:
    gain of 3D & Dense & 2D over 3D & 2D (Image only; paper 2.9%); ``3d20_vs_3d``: 20% 3D &
    Dense & 2D relative to 3D & 2D (Image only; paper +0.1%); ``aux_helps_2d``: mean gain of
    the two-branch inputs over Image only with 2D only (the paper's words: 1.5% on average);
    ``dense_helps_2d``: gain of Dense & 2D over 2D only (Image only; paper 32%).
    """
    values = {}
    get = pve.get
    if get(("image", "3d")) and get(("image", "dense")):
        values["dense_vs_3d"] = get(("image", "3d")) / get(("image", "dense"))
    if get(("image", "3d")) and get(("image", "3d_dense")):
        values["dense_adds_to_3d"] = _relative_gain(get(("image", "3d")), get(("image", "3d_dense")))
    if get(("image", "3d")) and get(("image", "3d20_dense")):
        values["3d20_vs_3d"] = get(("image", "3d20_dense")) / get(("image", "3d")) - 1.0
    aux = [get((i, "2d")) for i in ("image_iuv", "image_seg") if get((i, "2d"))]
    if get(("image", "2d")) and aux:
        values["aux_helps_2d"] = sum(_relative_gain(get(("image", "2d")), v) for v in aux) / len(aux)
    if get(("image", "2d")) and get(("image", "dense")):
        values["dense_helps_2d"] = _relative_gain(get(("image", "2d")), get(("image", "dense")))
    return values


PAPER_PVE = {(i, s): PAPER_TABLE3[i][j][0] for i in INPUT_ORDER for j, s in enumerate(SUPERVISION_ORDER)}
PAPER_CLAIMS = claim_values(PAPER_PVE)


def _verdict(holds: bool) -> str:
    return "**holds**" if holds else "**does not hold**"


def ranking_checks(results: Mapping[Cell, Mapping[str, Any]]) -> list[str]:
    """The paper's Sec. 4.1 claims, checked on the cells present (PVE), each with its verdict."""
    pve = {(c.inputs, c.supervision): r["metrics"]["pve_mm"] for c, r in results.items()}
    ours, paper = claim_values(pve), PAPER_CLAIMS
    lines = []
    if "dense_vs_3d" in ours:
        lines.append(f"- Image only: Dense & 2D reaches {ours['dense_vs_3d']:.1%} of the performance of 3D & 2D "
                     f"(PVE ratio 3D/dense; paper {paper['dense_vs_3d']:.1%}): "
                     f"{_verdict(ours['dense_vs_3d'] >= 0.87)} (criterion: at least 87%).")
    if "dense_adds_to_3d" in ours:
        lines.append(f"- Image only: adding dense correspondence to 3D & 2D improves PVE by "
                     f"{ours['dense_adds_to_3d']:.1%} (paper {paper['dense_adds_to_3d']:.1%}): "
                     f"{_verdict(ours['dense_adds_to_3d'] > 0)} (criterion: an improvement).")
    if "3d20_vs_3d" in ours:
        lines.append(f"- Image only: 20% 3D & Dense & 2D is {ours['3d20_vs_3d']:+.1%} against 3D & 2D "
                     f"(paper {paper['3d20_vs_3d']:+.1%}, \"comparable\"): "
                     f"{_verdict(ours['3d20_vs_3d'] <= 0.03)} (criterion: at most 3% worse).")
    if "dense_helps_2d" in ours:
        dense = ours["dense_helps_2d"]
        if "aux_helps_2d" in ours:
            aux = ours["aux_helps_2d"]
            lines.append(f"- With 2D only, auxiliary inputs improve PVE by {aux:.1%} on average (Image & IUV and "
                         f"Image & Segment against Image only; paper: 1.5% in its text, "
                         f"{paper['aux_helps_2d']:.1%} from its table), while dense supervision improves Image only "
                         f"by {dense:.1%} (paper {paper['dense_helps_2d']:.0%}): "
                         f"{_verdict(dense >= 0.1 and dense >= 3 * aux)} (criterion: dense helps by at least 10% "
                         "and at least 3x as much as auxiliary inputs).")
        else:
            lines.append(f"- Image only: dense supervision improves 2D only by {dense:.1%} "
                         f"(paper {paper['dense_helps_2d']:.0%}): {_verdict(dense >= 0.1)} "
                         "(criterion: at least 10%).")
    rows = [i for i in INPUT_ORDER if any(k[0] == i for k in pve)]
    for inputs in rows:
        row = {s: pve[(inputs, s)] for s in SUPERVISION_ORDER if (inputs, s) in pve}
        if "2d" in row and len(row) > 1:
            worst = max(row, key=row.get)
            lines.append(f"- {INPUT_LABELS[inputs]}: 2D only is the worst supervision (paper: in every row): "
                         f"{_verdict(worst == '2d')} ({row['2d']:.1f} mm; worst: {SUPERVISION_LABELS[worst]}).")
    complete = [i for i in rows if all((i, s) in pve for s in SUPERVISION_ORDER)]
    if len(complete) > 1:
        means = {i: sum(pve[(i, s)] for s in SUPERVISION_ORDER) / len(SUPERVISION_ORDER) for i in complete}
        best = min(means, key=means.get)
        lines.append(f"- Best input by mean PVE over the five supervisions: {INPUT_LABELS[best]} "
                     f"({means[best]:.1f} mm; paper: Image & IUV). Means: "
                     + ", ".join(f"{INPUT_LABELS[i]} {m:.1f}" for i, m in means.items()) + ".")
    return lines


def _keypoint_label(source: Any) -> str:
    """What a mixture source's 2D labels are, in words."""
    from dct_jax import train  # noqa: PLC0415

    generated = train.is_generated_dataset(source.name)  # rendered: its keypoints are exact
    if source.keypoint_subset != "all":
        subset = f"the {source.keypoint_subset} subset"
    else:
        subset = "all 19 cocoplus keypoints" if generated else "every keypoint its records label"
    noise = (f"with annotator-like noise of {source.keypoint_noise:g}x COCO's per-keypoint spread"
             if source.keypoint_noise else "exact" if generated else "no noise added")
    return f"{subset}, {noise}"


# How reports name the protocol's datasets (configs/default.py:PROTOCOL_SOURCES).
_DATA_TITLES = {"synthetic": "the synthetic data", "up3d": "UP-3D"}
_LAB_WORDS = {"studio": "the Human3.6M stand-in", "h36m": "Human3.6M"}


def data_title(config: ml_collections.ConfigDict) -> str:
    """The data a cell's config trains and evaluates on, for titles: "the synthetic data", "UP-3D"."""
    return _DATA_TITLES.get(config.dataset, config.dataset)


def protocol_lines(config: ml_collections.ConfigDict, pretrain_steps: int) -> list[str]:
    """The cells' training protocol, stated exactly (from any cell's config)."""
    from dct_jax.data import pipeline  # noqa: PLC0415

    m, loss = config.model, config.loss
    sources = pipeline.parse_sources(config.train_mixture, config.train_split)
    wild, lab = sources[0].name, sources[1].name
    return [
        f"Every cell: ResNet-{m.depth} of width {m.width} (one per branch), {config.data.image_size}x"
        f"{config.data.image_size} crops, batch {config.batch_size}, {config.num_train_steps} steps of Adam "
        f"(learning rate {config.learning_rate:g} cosine-decayed to {config.end_learning_rate:g}), evaluated on "
        f"the {config.dataset} {config.eval_split} split with the official protocol (global rotation zeroed). "
        "Cells: PVE / MPJPE / PA-MPJPE / PVE-T (shape in zero pose) in mm, lower is better.",
        "",
        "Protocol (the official code's; `configs/default.py:apply_protocol`): the sources "
        + " and ".join(f"`{e.name}:{e.split}`" for e in sources) + " are drawn "
        + ":".join(f"{e.weight:g}" for e in sources) + f" into every batch. The in-the-wild source ({wild}) "
        f"supervises with 2D keypoints in every cell ({_keypoint_label(sources[0])}), with dense keypoints "
        "where the cell has Dense, and with "
        f"its SMPL labels on all (3D), a fixed 20% by record id (20% 3D) or none of its records; the {lab} "
        f"source ({_LAB_WORDS.get(lab, 'the 3D source')}) always with its SMPL and 2D labels, never dense. "
        f"Loss weights: keypoint {loss.keypoint:g} and SMPL {loss.smpl:g} in every cell, dense 1 with in-the-wild "
        "3D and 10 without, no 3D-joint loss; each example's keypoint and dense weights normalized as the official "
        f"loader's ({'on' if config.data.get('normalize_point_weights', True) else 'off'}). "
        + (f"Each input's network is first pretrained on {lab} alone for {pretrain_steps} steps (SMPL and 2D "
           "labels), and every cell of that input starts from it." if pretrain_steps else "No pretraining."),
    ]


def table_markdown(results: Mapping[Cell, Mapping[str, Any]], config: ml_collections.ConfigDict,
                   pretrain_steps: int = 0) -> str:
    """The table of the cells in ``results``; ``config`` is any cell's (for the shared settings)."""
    by_key = {(c.inputs, c.supervision): r for c, r in results.items()}
    any_report = next(iter(results.values()), None)
    header = ["| Input \\ Supervision | " + " | ".join(SUPERVISION_LABELS[s] for s in SUPERVISION_ORDER) + " |",
              "|---|" + "---|" * len(SUPERVISION_ORDER)]
    lines = [f"# Table 3 on {data_title(config)}", "", *protocol_lines(config, pretrain_steps), "", *header]
    for inputs in INPUT_ORDER:
        lines.append(f"| {INPUT_LABELS[inputs]} | "
                     + " | ".join(_fmt(by_key.get((inputs, s))) for s in SUPERVISION_ORDER) + " |")
    if any_report is not None:
        lines += ["", f"Mean-parameter baseline (always predicts the mean): {_fmt(any_report, 'baseline_mean_params')}"
                  f" mm on {any_report['num_examples']} test examples."]
    lines += runner.imported_lines([c.name for c in all_cells() if runner.IMPORTED_FROM in results.get(c, {})])
    checks = ranking_checks(results)
    if checks:
        lines += ["", "## The paper's claims (Sec. 4.1), checked", "", *checks]
    lines += ["", "## The paper's Table 3 (UP-3D; PVE / MPJPE / PVE-T in mm)", "", *header]
    for inputs in INPUT_ORDER:
        lines.append(f"| {INPUT_LABELS[inputs]} | "
                     + " | ".join(" / ".join(f"{v:.1f}" for v in cell) for cell in PAPER_TABLE3[inputs]) + " |")
    return "\n".join(lines) + "\n"


def plot(results: Mapping[Cell, Mapping[str, Any]], path: str, data: str = "the synthetic data") -> None:
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
    ax.set_title(f"Table 3 on {data}: PVE per input and supervision")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.09), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(output: str, results: Mapping[Cell, Mapping[str, Any]], config: ml_collections.ConfigDict,
                  *, pretrain_steps: int = 0) -> None:
    with open(os.path.join(output, "table3.md"), "w") as f:
        f.write(table_markdown(results, config, pretrain_steps))
    ordered = sorted(results, key=lambda c: (INPUT_ORDER.index(c.inputs), SUPERVISION_ORDER.index(c.supervision)))
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump({c.name: results[c] for c in ordered}, f, indent=1)
    if results:
        plot(results, os.path.join(output, "table3.png"), data_title(config))


# ----------------------------------------------------------------------------- CLI

if __name__ == "__main__":
    from dct_jax.experiments import command

    command.run_command("table3", program="python -m dct_jax.experiments.table3")
