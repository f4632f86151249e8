"""Scale-out: preemption (SIGTERM, SIGKILL) and resume, multi-process flags, multi-device equivalence.

The training runs here are ``run_train.py`` subprocesses on a tiny config (a
config file written in tmp that builds ``conftest.tiny_config``); they share
compiled steps with each other and with this process through the session's
persistent compilation cache (``conftest``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_config

from dct_jax import distributed, train
from dct_jax import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
NUM_STEPS = 8

# A run_train.py config file: the tiny config, plus (env DCT_TEST_STEP_DELAY) a pause per step so
# that a signal can arrive mid-run (sleeping costs no CPU; the steps themselves take milliseconds).
_CONFIG_FILE = """
import os, sys, time
sys.path.insert(0, {tests!r})
from conftest import tiny_config

_DELAY = float(os.environ.get("DCT_TEST_STEP_DELAY", "0"))
if _DELAY:
    from dct_jax.data import pipeline
    _split = pipeline.split_host_fields

    def _slow_split(batch):
        print("batch read", flush=True)
        time.sleep(_DELAY)
        return _split(batch)

    pipeline.split_host_fields = _slow_split


def get_config():
    config = tiny_config({data_dir!r})
    config.optimizer = "sgd"  # Adam turns rounding noise into lr-sized steps; SGD keeps runs comparable
    config.num_train_steps = {steps}
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.image_summary_every_steps = 0
    return config
"""


def _config(data_dir):
    config = tiny_config(data_dir)
    config.optimizer = "sgd"
    config.num_train_steps = NUM_STEPS
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.image_summary_every_steps = 0
    return config


@pytest.fixture(scope="module")
def config_file(tiny_data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_scale.py"
    path.write_text(_CONFIG_FILE.format(tests=TESTS, data_dir=tiny_data_dir, steps=NUM_STEPS))
    return str(path)


@pytest.fixture(scope="module")
def reference(tiny_data_dir, tmp_path_factory):
    """An uninterrupted in-process run: (final train state, evaluation report)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    report = train.train_and_evaluate(_config(tiny_data_dir), workdir)
    step, state = _final_state(workdir)
    assert step == NUM_STEPS and report["checkpoint_step"] == NUM_STEPS
    return state, report


def _final_state(workdir):
    """The latest checkpoint's step and state, on this process's first device (whatever saved it)."""
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = manager.latest_step()
    metadata = ocp.StandardCheckpointer().metadata(os.path.join(workdir, "checkpoints", str(step), "state"))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          metadata.item_metadata.tree)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    manager.close()
    return step, restored["state"]


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _command(config_file, workdir):
    return [sys.executable, "run_train.py", f"--config={config_file}", f"--workdir={workdir}"]


def _start(config_file, workdir, log_path, delay):
    log = open(log_path, "w")
    return subprocess.Popen(_command(config_file, workdir), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=_env(DCT_TEST_STEP_DELAY=str(delay)))


def _wait_for(predicate, proc, what, timeout=600):
    start = time.monotonic()
    while not predicate():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {what}"
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(config_file, workdir, env=None, extra=()):
    """Re-runs the same command to the end; returns its output."""
    run = subprocess.run([*_command(config_file, workdir), *extra], cwd=ROOT, capture_output=True, text=True,
                         env=env or _env(), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


def _assert_matches_reference(workdir, reference):
    ref_state, ref_report = reference
    step, state = _final_state(workdir)
    assert step == NUM_STEPS and int(state["step"]) == NUM_STEPS
    for name in ("params", "batch_stats", "opt_state"):
        for x, y in zip(jax.tree.leaves(ref_state[name]), jax.tree.leaves(state[name]), strict=True):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7, err_msg=name)
    report = json.load(open(os.path.join(workdir, "eval_test.json")))
    for key, value in ref_report["metrics"].items():
        assert report["metrics"][key] == pytest.approx(value, rel=1e-6), key


def _steps_on_disk(workdir):
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


# ----------------------------------------------------------------------------- preemption


def test_sigterm_saves_exits_cleanly_and_resumes_exactly(config_file, reference, tmp_path):
    workdir, log_path = str(tmp_path / "run"), tmp_path / "first.log"
    proc = _start(config_file, workdir, log_path, delay=0.25)
    try:
        _wait_for(lambda: re.search(r"\bstep 1: ", log_path.read_text()), proc, "the first logged step")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    finally:
        proc.kill()
    text = log_path.read_text()
    match = re.search(r"Preempted \(SIGTERM\) at step (\d+): checkpoint saved in (\S+); "
                      r"re-run the same command to resume", text)
    assert match, text[-3000:]
    stopped = int(match[1])
    assert 1 <= stopped < NUM_STEPS
    assert match[2] == os.path.join(workdir, "checkpoints")
    assert _steps_on_disk(workdir)[-1] == stopped  # written whole (no tmp folder left)
    assert not [n for n in os.listdir(match[2]) if "orbax-checkpoint-tmp" in n]
    assert not os.path.exists(os.path.join(workdir, "eval_test.json"))  # no evaluation when preempted

    output = _finish(config_file, workdir)
    assert f"Resumed from step {stopped} " in output
    _assert_matches_reference(workdir, reference)


def test_ctrl_c_before_the_first_step_finishes_it_saves_and_exits_cleanly(config_file, tmp_path):
    workdir, log_path = str(tmp_path / "run"), tmp_path / "first.log"
    proc = _start(config_file, workdir, log_path, delay=1.0)
    try:  # the first batch is read: the first step (and its compilation) is next
        _wait_for(lambda: "batch read" in log_path.read_text(), proc, "the first batch")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    finally:
        proc.kill()
    text = log_path.read_text()
    assert "Segmentation fault" not in text and "Traceback" not in text, text[-3000:]
    assert re.search(r"Preempted \(SIGINT\) at step 1: checkpoint saved", text), text[-3000:]
    assert _steps_on_disk(workdir) == [1]


def test_evaluation_runs_on_any_device_count(tiny_checkpoint, tmp_path):
    """8 devices and an evaluation batch of 4: padded, and the metrics of one device."""
    import shutil  # noqa: PLC0415

    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_checkpoint("image_iuv"), workdir)
    one_device = json.load(open(os.path.join(workdir, "eval_test.json")))
    run = subprocess.run([sys.executable, "run_eval.py", f"--workdir={workdir}"], cwd=ROOT, capture_output=True,
                         text=True, env=_device_env(8), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    eight = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert eight["num_examples"] == one_device["num_examples"] == 6
    for key, value in one_device["metrics"].items():
        assert eight["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_sigkill_then_rerun_matches_and_ignores_half_written_checkpoints(config_file, reference, tmp_path):
    workdir, log_path = str(tmp_path / "run"), tmp_path / "first.log"
    checkpoints = os.path.join(workdir, "checkpoints")
    proc = _start(config_file, workdir, log_path, delay=0.25)
    try:
        _wait_for(lambda: os.path.isdir(os.path.join(checkpoints, "2")), proc, "the step-2 checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    last = _steps_on_disk(workdir)[-1]
    assert 2 <= last < NUM_STEPS
    # What a kill during a save leaves: a half-written step folder. Here a later one with garbage in
    # it (the final step's, which the re-run then writes for real).
    fake = os.path.join(checkpoints, f"{NUM_STEPS}.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(fake, "state"), exist_ok=True)
    with open(os.path.join(fake, "state", "garbage"), "w") as f:
        f.write("not a checkpoint")
    manager = ocp.CheckpointManager(checkpoints)
    assert manager.latest_step() == last
    manager.close()

    output = _finish(config_file, workdir)
    assert f"Resumed from step {last} " in output
    _assert_matches_reference(workdir, reference)


# ----------------------------------------------------------------------------- multi-process flags


def test_cluster_detection_and_flag_errors():
    assert distributed.cluster_environment({}) is None
    slurm = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    assert distributed.cluster_environment(slurm) == "SLURM"
    assert distributed.cluster_environment(dict(slurm, SLURM_NTASKS="1")) is None
    assert distributed.cluster_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) is None  # not under srun
    assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "a,b"}) == "Cloud TPU"
    assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "a"}) is None
    assert distributed.cluster_environment(
        {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}) == "Open MPI"
    # Nothing to start: single process (no JAX runtime touched).
    assert distributed.initialize(environ={}) is False
    assert distributed.initialize(num_processes=1, environ=slurm) is False
    with pytest.raises(ValueError, match="--coordinator_address missing"):
        distributed.initialize(None, 2, 0)
    with pytest.raises(ValueError, match="--num_processes, --process_id missing"):
        distributed.initialize("localhost:1234")
    with pytest.raises(ValueError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
        distributed.initialize("localhost:1234", 2, 2)
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        distributed.initialize("localhost", 2, 0)


def test_resuming_on_another_process_count_continues_the_global_stream(tmp_path):
    data = tmp_path / "checkpoints" / "4" / "data"
    data.mkdir(parents=True)
    (data / "process_0-of-1.json").write_text('{"next_index": 4}')
    assert train.translate_data_state(str(data)) is None  # this process (0 of 1) has its own file
    # Saved by two processes: positions (steps taken) carry over to any process count.
    (data / "process_0-of-1.json").unlink()
    for i in range(2):
        (data / f"process_{i}-of-2.json").write_text('{"next_index": 4}')
    assert train.translate_data_state(str(data)) == {"next_index": 4}
    # Worker-process state, or processes at different positions, do not.
    (data / "process_1-of-2.json").write_text('{"next_index": 3}')
    with pytest.raises(ValueError, match=r"another number of processes \(process_0-of-2.json, process_1-of-2"):
        train.translate_data_state(str(data))
    (data / "process_1-of-2.json").write_text('{"workers_state": {}, "iterations_to_skip": {}}')
    with pytest.raises(ValueError, match="resume with the same number of processes"):
        train.translate_data_state(str(data))


def test_run_train_rejects_partial_multiprocess_flags(config_file, tmp_path):
    run = subprocess.run([*_command(config_file, str(tmp_path / "w")), "--num_processes=2"], cwd=ROOT,
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode != 0
    assert "--coordinator_address, --process_id missing" in run.stderr, run.stderr[-2000:]


# ----------------------------------------------------------------------------- multi-device equivalence

# One forward/backward pass (train.loss_and_grads, the body of train.train_step) on a batch of 8,
# on the devices of a mesh; writes loss, BatchNorm statistics and gradients to an npz.
_STEP_SCRIPT = """
import functools, os, sys
import numpy as np
sys.path[:0] = [{root!r}, {tests!r}]
import jax
from conftest import tiny_config
from dct_jax import train
from dct_jax import state as state_lib
from dct_jax.data import pipeline

mode, out = sys.argv[1], sys.argv[2]
if mode == "two_processes":
    jax.distributed.initialize(f"localhost:{{sys.argv[4]}}", 2, int(sys.argv[3]))
config = tiny_config({data_dir!r})
model = state_lib.create_model(config.model)
tx, _ = state_lib.create_optimizer(config)
body, layout = state_lib.load_body(config)
state = state_lib.initial_state(model, tx, config, jax.random.key(0))
source = pipeline.load_source("synthetic", data_dir={data_dir!r}, split="train")
batch = pipeline.eval_dataset(source, state_lib.example_spec(config, train=True), batch_size=8)[0]
batch, _ = pipeline.split_host_fields(batch)
fn = functools.partial(train.loss_and_grads, model=model, body=body, layout=layout,
                       weights=train.loss_weights(config), inputs=config.model.inputs)


def run(devices, local_rows, fsdp=False):
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    if fsdp:  # parameters and optimizer state split over the devices (tiny model: small threshold)
        placed = jax.device_put(state, state_lib.state_shardings(state, mesh, fsdp=True, min_size=256))
        sharded = [x for x in jax.tree.leaves(placed) if not x.sharding.is_fully_replicated]
        assert len(sharded) >= 10, len(sharded)
        assert all(x.addressable_shards[0].data.size * len(devices) == x.size for x in sharded)
    else:
        placed = state_lib.replicate(state, mesh)
    total, _, batch_stats, grads = jax.jit(fn, out_shardings=replicated)(
        placed, state_lib.to_global({{k: v[local_rows] for k, v in batch.items()}}, mesh))
    local = lambda x: np.asarray(x.addressable_data(0))
    leaves = {{"loss": local(total)}}
    leaves.update({{f"batch_stats/{{jax.tree_util.keystr(p)}}": local(x)
                   for p, x in jax.tree_util.tree_leaves_with_path(batch_stats)}})
    leaves.update({{f"grads/{{jax.tree_util.keystr(p)}}": local(x)
                   for p, x in jax.tree_util.tree_leaves_with_path(grads)}})
    return leaves


if mode == "one_process":
    assert jax.device_count() == 4
    np.savez(out + "_1.npz", **run(jax.devices()[:1], slice(None)))
    np.savez(out + "_4.npz", **run(jax.devices(), slice(None)))
    np.savez(out + "_4fsdp.npz", **run(jax.devices(), slice(None), fsdp=True))
else:
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    p = jax.process_index()
    leaves = run(jax.devices(), slice(4 * p, 4 * p + 4))  # each process feeds its own half
    if p == 0:
        np.savez(out + "_2x2.npz", **leaves)
"""


def _device_env(count):
    return _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")


def _assert_same_step(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    assert any(k.startswith("grads/") for k in a.files) and any(k.startswith("batch_stats/") for k in a.files)
    # 1e-5 relative, with a floor at 1e-5 of the array's largest value (for entries near zero);
    # for BatchNorm statistics, of the largest statistic: a running mean that is rounding
    # noise around zero (~1e-6 beside variances ~1) differs with the reduction order.
    stats_max = max(float(np.max(np.abs(a[key]))) for key in a.files if key.startswith("batch_stats/"))
    for key in a.files:
        x, y = a[key], b[key]
        scale = stats_max if key.startswith("batch_stats/") else float(np.max(np.abs(x)))
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5 * scale, err_msg=key)


@pytest.fixture(scope="module")
def step_script(tiny_data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("step") / "step.py"
    path.write_text(_STEP_SCRIPT.format(root=ROOT, tests=TESTS, data_dir=tiny_data_dir))
    return str(path)


@pytest.fixture(scope="module")
def one_process_step(step_script, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("step_out") / "step")
    run = subprocess.run([sys.executable, step_script, "one_process", out], cwd=ROOT, capture_output=True,
                         text=True, env=_device_env(4), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_four_devices_take_the_step_of_one(one_process_step):
    _assert_same_step(one_process_step + "_1.npz", one_process_step + "_4.npz")


def test_fsdp_takes_the_step_of_one_device(one_process_step):
    # Parameters and Adam state sharded over 4 devices (checked in the script): same step.
    _assert_same_step(one_process_step + "_1.npz", one_process_step + "_4fsdp.npz")


def test_state_shardings_rule():
    # FSDP splits each large array along its largest dimension the device count divides.
    mesh = jax.sharding.AbstractMesh((4,), ("data",))
    tree = {"wide": np.zeros((6, 8)), "tall": np.zeros((12, 3, 5)), "odd": np.zeros((5, 7)),
            "small": np.zeros(3), "scalar": np.zeros(())}
    specs = {k: tuple(v.spec) for k, v in state_lib.state_shardings(tree, mesh, fsdp=True, min_size=4).items()}
    assert specs == {"wide": (None, "data"), "tall": ("data", None, None), "odd": (), "small": (), "scalar": ()}
    replicated = state_lib.state_shardings(tree, mesh, fsdp=False)
    assert all(tuple(s.spec) == () for s in replicated.values())


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # about 2.5 minutes on a busy 2-core machine (two processes compiling at once)
def test_two_processes_take_the_step_of_one_with_four_devices(step_script, one_process_step):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, step_script, "two_processes", one_process_step, str(i), str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_device_env(2)) for i in range(2)]
    try:
        results = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    _assert_same_step(one_process_step + "_4.npz", one_process_step + "_2x2.npz")


# ----------------------------------------------------------------------------- short runs on more devices


def _assert_same_run(workdir, reference, *, rtol):
    """The run in ``workdir`` ends where the 1-device reference does (SGD: parameters and metrics)."""
    ref_state, ref_report = reference
    step, state = _final_state(workdir)
    assert step == NUM_STEPS
    for x, y in zip(jax.tree.leaves(ref_state["params"]), jax.tree.leaves(state["params"]), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * float(np.max(np.abs(x))))
    report = json.load(open(os.path.join(workdir, "eval_test.json")))
    assert report["metrics"].keys() == ref_report["metrics"].keys()
    for key, value in ref_report["metrics"].items():
        assert report["metrics"][key] == pytest.approx(value, rel=1e-3), key


def test_short_run_on_four_devices_with_fsdp_ends_like_one(config_file, reference, tmp_path):
    workdir = str(tmp_path / "four")
    output = _finish(config_file, workdir, env=_device_env(4), extra=["--config.fsdp=True"])
    assert "4 devices, 1 processes" in output
    _assert_same_run(workdir, reference, rtol=1e-4)


@pytest.mark.slow  # two processes compiling at once: minutes on a 2-core machine
def test_short_run_on_two_processes_of_two_devices_ends_like_one(config_file, reference, tmp_path):
    workdir = str(tmp_path / "two_by_two")
    port = _free_port()
    procs = [subprocess.Popen([*_command(config_file, workdir), f"--coordinator_address=localhost:{port}",
                               "--num_processes=2", f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_device_env(2)) for i in range(2)]
    try:
        results = [p.communicate(timeout=1200) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert "4 devices, 2 processes" in results[0][1]
    _assert_same_run(workdir, reference, rtol=1e-4)
    # Resume the two-process run from its step 4 on one process: the global batches continue.
    checkpoints = os.path.join(workdir, "checkpoints")
    for step in _steps_on_disk(workdir):
        if step > NUM_STEPS // 2:
            shutil.rmtree(os.path.join(checkpoints, str(step)))
    os.remove(os.path.join(workdir, "eval_test.json"))
    output = _finish(config_file, workdir)
    assert f"Resumed from step {NUM_STEPS // 2}" in output and "2-process checkpoint on 1 processes" in output
    _assert_same_run(workdir, reference, rtol=1e-4)
