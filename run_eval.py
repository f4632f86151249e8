r"""Evaluates the newest usable checkpoint of a training run on a split, with the run's own config.

    python run_eval.py --workdir=/tmp/dct_quickstart [--split=test]
    python run_eval.py --workdir=W --set=dataset=pw3d --set=smpl_path=SMPL_NEUTRAL.pkl \
        --set=eval.j_regressor_h36m_path=J_regressor_h36m.npy

The run's ``WORKDIR/config.json`` says how the checkpoints were trained and is
used as it is; ``--set=FIELD=VALUE`` changes evaluation settings only (dataset,
eval_split, eval_batch_size, eval.*, data_dir, data.threads, smpl_path); with
``--set=dataset=NAME`` the split defaults to that dataset's evaluation split.
``--config=FILE`` is optional: it may differ from the run's config only in
evaluation settings (and in settings the checkpoints do not depend on, such as
num_train_steps, which are ignored). The evaluation settings that differ from
the run's are recorded in the report under "overrides".

Writes WORKDIR/eval_<split>.json ({"checkpoint_step", "num_examples", "split", "dataset",
"metrics", "baseline_mean_params", "counts", "protocol"[, "overrides"]}) and prints the
same as a table. The metrics follow the dataset's protocol (dct_jax/protocols.py,
docs/evaluation.md). A user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from dct_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional: a config file; only its evaluation settings may differ from the run's.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (holds config.json and checkpoints/).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's config.eval_split).")
_SET = flags.DEFINE_multi_string("set", None, "An evaluation setting FIELD=VALUE, e.g. --set=dataset=pw3d.")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail("run_eval.py", f"unexpected arguments {argv[1:]}; all options are --flags")
    if _CONFIG.value is not None:
        cli.check_config_flag("run_eval.py", _CONFIG.value)
    from dct_jax import evaluate, summaries, workdir  # noqa: PLC0415
    from dct_jax import state as state_lib  # noqa: PLC0415

    summaries.quiet_library_logs()
    try:
        overrides = workdir.parse_overrides(_SET.value)
        if _SPLIT.value:
            overrides["eval_split"] = _SPLIT.value
        elif "dataset" in overrides and "eval_split" not in overrides:  # that dataset's evaluation split
            from configs import dataset as dataset_configs  # noqa: PLC0415

            if overrides["dataset"] in dataset_configs.DATASETS:
                overrides["eval_split"] = dataset_configs.DATASETS[overrides["dataset"]][1]
        config, changes = workdir.evaluation_config(_WORKDIR.value, _CONFIG.value, overrides)
        report = evaluate.evaluate_checkpoint(config, _WORKDIR.value, overrides=changes)
    except (workdir.ConfigError, workdir.WorkdirError, state_lib.CheckpointError) as error:
        cli.fail("run_eval.py", str(error))
    print(evaluate.format_report(report))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser("run_eval.py"))
