r"""Trains a DCT model (and evaluates it after the last step).

    python run_train.py --config=configs/quickstart.py --workdir=/tmp/dct_quickstart
    python run_train.py --config=configs/ours_dc.py --workdir=/tmp/ours_dc --config.dataset=up3d

Writes orbax checkpoints to WORKDIR/checkpoints/, TensorBoard events to WORKDIR/,
the config to WORKDIR/config.json and, after the last step, WORKDIR/eval_<split>.json.
Re-running the same command resumes from the latest checkpoint.

Several processes (TPU pod slices, several GPU nodes; see docs/scaling.md): run
the same command on every host with
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``, or with
none of these on a SLURM job, an Open MPI job or a Cloud TPU VM (detected by
JAX). Only process 0 writes logs (the others log warnings and errors only),
TensorBoard events, config.json and eval JSON; checkpoints are written by all.

SIGTERM (preemption) saves a checkpoint of the current step, logs
"Preempted (SIGTERM) at step N: ..." and exits with --preempted_exit_code
(0 by default); re-running the same command resumes.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dct_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs: HOST:PORT of process 0 (the same on every process).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-process runs: how many processes (1: single process, no cluster detection).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 to N-1.")
_PREEMPTED_EXIT_CODE = flags.DEFINE_integer(
    "preempted_exit_code", 0, "Exit status after a SIGTERM made the run save and stop (e.g. non-zero for "
    "schedulers that restart failed jobs only).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail("run_train.py", f"unexpected arguments {argv[1:]}; all options are --flags")
    cli.check_config_flag("run_train.py", _CONFIG.value)
    from dct_jax import distributed  # noqa: PLC0415  (after flag parsing: keeps --help fast)

    try:
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        cli.fail("run_train.py", str(e))
    import jax  # noqa: PLC0415

    from dct_jax import summaries, train  # noqa: PLC0415

    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    from dct_jax import state as state_lib  # noqa: PLC0415
    from dct_jax import workdir  # noqa: PLC0415

    summaries.quiet_library_logs()
    logging.info("Config:\n%s", _CONFIG.value)
    try:
        result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (workdir.ConfigError, workdir.WorkdirError, state_lib.CheckpointError) as error:
        cli.fail("run_train.py", str(error))
    if result.get("preempted"):
        sys.exit(_PREEMPTED_EXIT_CODE.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser("run_train.py"))
