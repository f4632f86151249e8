r"""Trains a DCT model (and evaluates it after the last step).

    python run_train.py --config=configs/quickstart.py --workdir=/tmp/dct_quickstart
    python run_train.py --config=configs/ours_dc.py --workdir=/tmp/ours_dc --config.dataset=up3d

Writes orbax checkpoints to WORKDIR/checkpoints/, TensorBoard events to WORKDIR/,
the config to WORKDIR/config.json and, after the last step, WORKDIR/eval_<split>.json.
Re-running the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from dct_jax import summaries, train  # noqa: PLC0415  (after flag parsing: keeps --help fast)

    summaries.quiet_library_logs()
    logging.info("Config:\n%s", _CONFIG.value)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
