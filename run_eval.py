r"""Evaluates the latest checkpoint of a training run on a split.

    python run_eval.py --config=configs/quickstart.py --workdir=/tmp/dct_quickstart [--split=test]

    python run_eval.py --config=configs/dataset.py:pw3d --workdir=W --config.smpl_path=SMPL_NEUTRAL.pkl \
        --config.eval.j_regressor_h36m_path=J_regressor_h36m.npy

Writes WORKDIR/eval_<split>.json ({"checkpoint_step", "num_examples", "split", "dataset",
"metrics", "baseline_mean_params", "counts", "protocol"}) and prints the same as a table.
The metrics follow the dataset's protocol (dct_jax/protocols.py, docs/evaluation.md).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (holds checkpoints/).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from dct_jax import evaluate, summaries  # noqa: PLC0415

    summaries.quiet_library_logs()

    report = evaluate.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, split=_SPLIT.value)
    print(evaluate.format_report(report))


if __name__ == "__main__":
    app.run(main)
