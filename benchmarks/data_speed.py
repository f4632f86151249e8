"""Examples/s of the training input pipeline: synthetic array_record -> decoded, cropped, augmented crops.

The pipeline is the real one (``pipeline.train_dataset`` + ``pipeline.make_iterator``)
with the ``configs/ours_dc.py`` data settings (``state_lib.example_spec``): 224x224
crops, scale (0.2) and translate (0.1) jitter, flip p=0.5, dense keypoints from the
records' annotations (dense_source auto, 400 points, phi) and the IUV map refined
(``densepose.refine_iuv``) before it is cropped. It is timed for each ``--inputs``
(``image_iuv``: ours_dc's two branches; ``image``: the RGB crop only) and each
``--workers`` (0: in this process, with ``--threads`` grain read threads; w > 0:
grain ``mp_prefetch`` worker processes), in interleaved, rotated rounds, each on a
fresh iterator whose start-up (worker spawn, body assets, prefetched batches) is
left out. The table gives median and best ex/s, their ratio to the 300 ex/s
target (enough that input never starves a GPU step) and the CPU time per example
of this process and of the workers.

Then the time per example is split into stages (``time.perf_counter`` and
``time.process_time`` around the library calls, patched here, exclusive of the
stages they call; best of two runs) by running ``ProcessRecord`` in this process;
CPU time is the better guide on a shared machine. With ``--step``, a small network
(quickstart's: ResNet-10 width 16, and a ResNet-18 width 16 on the IUV) at ``--size``
runs ``train.train_step`` (jitted, state donated, as ``train.train_and_evaluate``)
fed by the pipeline, next to the same step on one constant batch already on device.

  python benchmarks/data_speed.py                     # image_iuv and image, workers 0,1,2
  python benchmarks/data_speed.py --step              # + the train step fed by the pipeline
  python benchmarks/data_speed.py --profile_only      # only the per-stage profile
  python benchmarks/data_speed.py --cache_mb=1024     # with training's record cache, after its first epoch
  python benchmarks/data_speed.py --examples 64 --rounds 1 --profile_examples 20   # smoke run

Needs the synthetic dataset in ``--data_dir`` (``python -m datasets build synthetic
--data_dir=~/tensorflow_datasets``); it is read from its built directory, so a
build older than the current schema works too. Expect about 10 minutes at the
defaults on a 2-core CPU, 5 more with ``--step`` (compilation included).

Measured on the 2-core development CPU, shared with a test run and another
benchmark (load average 4.5-6: about one core left for this; jax 0.10.2, grain
0.2.18, OpenCV 5.0), batch 16, 224x224, 512 examples per measurement, 2 rounds,
now and before the speed work below (the commit before it, run right after):

  inputs     workers    ex/s  / 300    best  / 300   CPU ms/ex: main  workers   before: ex/s  CPU ms/ex
  image_iuv        0   142.2   0.47   152.0   0.51              7.24     0.00            96.7  11.26
  image_iuv        1   123.5   0.41   124.0   0.41              0.40     8.35            94.3  0.41 + 12.14
  image_iuv        2   145.6   0.49   168.7   0.56              0.36     7.65            77.6  0.39 + 11.65
  image            0   239.8   0.80   267.7   0.89              4.59     0.00           118.0   9.33
  image            1   197.9   0.66   198.8   0.66              0.35     5.09           125.5  0.37 + 8.19
  image            2   208.0   0.69   229.6   0.77              0.30     4.78           133.0  0.33 + 8.61

The 300 ex/s target is not met on this machine: 145 ex/s for ours_dc (image_iuv),
210-240 for the image input. Two cores are the limit: the workers compete with
each other, with the main process and with the other jobs for them, so 2 workers
are no faster than 0 workers with 4 read threads (OpenCV and numpy release the
GIL). At the CPU cost per example (7.2-8 ms for image_iuv, 4.6-5 ms for image,
workers included), two otherwise idle cores would give about 250 and 400 ex/s.

Per-example stages, CPU ms (one process; load average 4.7 now, 5.9 before):

  stage                                 image_iuv: before   now    image: before   now
  read record (array_record, TFDS)                  1.43   1.23             1.24   0.96
  record checks (validate)                          0.46   0.39             0.37   0.29
  decode JPEG image                                 0.52   0.46             0.52   0.39
  decode IUV PNG                                    0.87   0.90             0.84      -
  refine_iuv                                        1.72   0.95             1.56      -
  crop/warp image (bilinear)                        0.54   0.39             0.52   0.32
  crop IUV (nearest)                                0.19   0.18                -      -
  dense sampling                                    0.40   0.37             0.33   0.27
  phi (iuv_to_surface)                              0.84   0.75             0.69   0.57
  flip: image                                       0.31   0.06             0.32   0.04
  flip: IUV                                         1.69   0.35                -      -
  flip: other fields                                0.34   0.19             0.19   0.15
  stack into batch                                  0.13   0.12             0.10   0.09
  other (jitter, labels, bookkeeping)               0.95   0.82             0.77   0.50
  total                                            10.39   7.16             7.44   3.56

The speed work (every output identical, compared bit for bit on 300 records of
three specs and on random IUV maps): ``flip_iuv`` mirrors with OpenCV and looks
up only foreground pixels, one 16-bit (U, V) entry each (5x); ``flip_image`` is
``cv2.flip`` (5x); ``refine_iuv`` labels components with OpenCV, keeps the uint8
labels without padding, compares instead of gathering, and zeroes with a masked
copy (1.8x); the IUV map is decoded and refined only when the example uses it
(the image spec no longer pays 2.4 ms for it); bilinear RGB crops warp 4 channels
(OpenCV's 3-channel warp is 1.7x slower); JPEGs decode straight to RGB; grain
workers run OpenCV without its thread pool (``pipeline.init_worker``: 22% less
worker CPU per example, 117 -> 147 ex/s with 2 workers, 3 interleaved rounds).
What did not help: Pillow for the PNG (slower than OpenCV: the cost is zlib),
1 read thread per worker instead of 4 (75 vs 107 ex/s). Left: TFDS's record
parsing (1-1.4 ms, in tensorflow_datasets), the PNG decode, phi's per-slot loop
(~0.3 ms to gain on ~125 points), and the per-worker start-up (chart + mirror,
~6 s of CPU each; the assets pickle to 10.8 MB).

Train step (``--step``; load average 5.3), median s/step of 2 x 4 steps:

  feed                       s/step     best  ratio batch wait s
  constant batch              1.838    1.458   1.00        0.000
  pipeline, 0 workers         2.171    1.972   1.18        0.040
  pipeline, 1 workers         2.081    1.746   1.13        0.063
  pipeline, 2 workers         2.071    1.754   1.13        0.077

The batch is always ready (the step needs 9 ex/s here), but the pipeline's CPU
time (~0.12 s a batch) and threads slow the XLA step on the shared cores by
13-18%. Closing an iterator mid-stream makes grain's workers leave shared-memory
buffers that Python's resource tracker reports at exit (harmless).
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.metadata
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dct_jax.data import pipeline  # noqa: E402

TARGET = 300.0  # examples/s


def load(args) -> Any:
    """The synthetic train split; exits with the build command if it is not there."""
    root = os.path.join(os.path.expanduser(args.data_dir), "synthetic")
    versions = sorted(v for v in os.listdir(root) if os.path.isdir(os.path.join(root, v))) if os.path.isdir(root) else []
    if not versions:
        sys.exit(f"no synthetic dataset in {args.data_dir}; build it with\n"
                 f"  python -m datasets build synthetic --data_dir={args.data_dir}")
    # The built directory (its own features.json): a build that predates a schema
    # field then reads back without it (schema.upgrade_record completes it).
    return pipeline.load_source(os.path.join(root, versions[-1]), data_dir=None, split="train")


def make_config(inputs: str, size: int, batch: int):
    """ours_dc's data settings and quickstart's small network at ``size``."""
    from configs import ours_dc, quickstart  # noqa: PLC0415

    config = ours_dc.get_config()
    small = quickstart.get_config().model
    for key in ("depth", "width", "feature_dim", "hidden_dim"):
        config.model[key] = small[key]
    config.model.inputs = inputs
    config.data.image_size = size
    config.batch_size = batch
    return config


def spec_for(inputs: str, size: int, batch: int) -> pipeline.ExampleSpec:
    from dct_jax import state as state_lib  # noqa: PLC0415

    return state_lib.example_spec(make_config(inputs, size, batch), train=True)


def iterator(source, spec: pipeline.ExampleSpec, *, batch: int, workers: int, threads: int, seed: int = 0,
             cache_mb: float = 0):
    ds = pipeline.train_dataset(source, spec, batch_size=batch, seed=seed, cache_bytes=int(cache_mb * 2**20))
    return pipeline.make_iterator(ds, workers=workers, prefetch_threads=threads)


def check_batch(batch: dict[str, np.ndarray]) -> None:
    if batch["skipped"].any():
        error = next(e for e in batch["error"] if e)
        sys.exit(f"the pipeline skips records (the timing would be meaningless): {error}")


def _cpu_seconds(process) -> tuple[float, float]:
    """CPU seconds (user + system) so far of ``process`` and of its live child processes."""
    own = process.cpu_times()
    children = 0.0
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
            children += times.user + times.system
        except psutil.Error:
            pass
    return own.user + own.system, children


def measure(source, spec, *, batch: int, workers: int, threads: int, examples: int,
            cache_mb: float = 0) -> tuple[float, ...]:
    """(start-up seconds to the first batch, examples/s after it, CPU ms per example here and in workers).

    The clock starts once the batches prefetched during the start-up (``threads``
    per process, one more per worker) are taken, so it sees the steady rate.
    With ``cache_mb`` the records are first read through once per process
    (untimed), so that the measurement sees the epochs after the first.
    """
    t = time.perf_counter()
    it = iterator(source, spec, batch=batch, workers=workers, threads=threads, cache_mb=cache_mb)
    check_batch(next(it))
    startup = time.perf_counter() - t
    warm_up = (threads + 1) * max(workers, 1)
    if cache_mb:
        warm_up += len(source) * max(workers, 1) // batch
    for _ in range(warm_up):
        next(it)
    num = max(examples // batch, 1)
    me = psutil.Process()
    cpu0 = _cpu_seconds(me)
    t = time.perf_counter()
    for _ in range(num):
        next(it)
    elapsed = time.perf_counter() - t
    cpu1 = _cpu_seconds(me)
    it.close()
    per_example = 1000.0 / (num * batch)
    return startup, num * batch / elapsed, (cpu1[0] - cpu0[0]) * per_example, (cpu1[1] - cpu0[1]) * per_example


# ----------------------------------------------------------------------------- per-stage profile


class StageTimer:
    """Patches library functions to add their wall and CPU seconds to a stage (exclusive of nested stages)."""

    def __init__(self):
        self.wall: dict[str, float] = collections.defaultdict(float)
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self._stack: list[list[float]] = []
        self._undo: list[Callable[[], None]] = []

    def patch(self, module, name: str, stage: str | Callable[..., str]) -> None:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append([0.0, 0.0])
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dw, dc = time.perf_counter() - w, time.process_time() - c
                child_w, child_c = self._stack.pop()
                key = stage(*args, **kwargs) if callable(stage) else stage
                self.wall[key] += dw - child_w
                self.cpu[key] += dc - child_c
                if self._stack:
                    self._stack[-1][0] += dw
                    self._stack[-1][1] += dc

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, fn))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


STAGES = ("read record (array_record)", "record checks (validate)", "decode JPEG image", "decode IUV PNG",
          "refine_iuv", "crop/warp image (bilinear)", "crop IUV (nearest)", "dense sampling",
          "phi (iuv_to_surface)", "flip: image", "flip: IUV", "flip: other fields", "stack into batch",
          "other (jitter, labels, bookkeeping)")


def profile(source, spec: pipeline.ExampleSpec, *, num: int, batch: int) -> tuple[dict, dict, float, float]:
    """Per-stage (wall, CPU) ms per example over ``num`` records, and the unpatched total (wall, CPU)."""
    from dct_jax import densepose  # noqa: PLC0415
    from dct_jax.data import flip, schema  # noqa: PLC0415

    process = pipeline.ProcessRecord(spec, train=True)
    indices = [(i * 7919) % len(source) for i in range(num)]
    records = [source[i] for i in indices[:8]]
    for i, record in enumerate(records):  # warm-up: body assets (chart, mirror), caches
        process.random_map((i, record), np.random.default_rng(i))

    def run(timer: StageTimer | None) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        examples = []
        for n, index in enumerate(indices):
            rw, rc = time.perf_counter(), time.process_time()
            item = pipeline.IndexedSource(source)[index]
            if timer is not None:
                timer.wall[STAGES[0]] += time.perf_counter() - rw
                timer.cpu[STAGES[0]] += time.process_time() - rc
            examples.append(process.random_map(item, np.random.default_rng(n)))
            if len(examples) == batch:
                pipeline.stack_examples(examples)
                examples = []
        return time.perf_counter() - w, time.process_time() - c

    def staged() -> StageTimer:
        timer = StageTimer()
        timer.patch(schema, "validate_record", STAGES[1])
        timer.patch(schema, "decode_image", STAGES[2])
        timer.patch(schema, "decode_iuv", STAGES[3])
        timer.patch(densepose, "refine_iuv", STAGES[4])
        timer.patch(pipeline, "crop_image", lambda *a, nearest=False, **k: STAGES[6 if nearest else 5])
        timer.patch(densepose, "sample_dense_keypoints", STAGES[7])
        timer.patch(densepose, "iuv_to_surface", STAGES[8])
        timer.patch(flip, "flip_image", STAGES[9])
        timer.patch(flip, "flip_iuv", STAGES[10])
        timer.patch(flip, "flip_example", STAGES[11])
        timer.patch(pipeline, "stack_examples", STAGES[12])
        try:
            wall, cpu = run(timer)
        finally:
            timer.restore()
        timer.wall[STAGES[-1]] = wall - sum(timer.wall.values())
        timer.cpu[STAGES[-1]] = cpu - sum(timer.cpu.values())
        return timer

    plain, timers = [], []
    for _ in range(2):  # alternated; the best of two of each (less noise from a shared machine)
        plain.append(run(None))
        timers.append(staged())
    total_wall, total_cpu = min(plain, key=lambda x: x[1])
    timer = min(timers, key=lambda t: sum(t.cpu.values()))
    scale = 1000.0 / num
    return ({k: v * scale for k, v in timer.wall.items()}, {k: v * scale for k, v in timer.cpu.items()},
            total_wall * scale, total_cpu * scale)


# ----------------------------------------------------------------------------- train step


def time_step(source, args, inputs: str) -> list[tuple[str, float, float, float]]:
    """Rows (feed, median s/step, best s/step, median s waiting for the batch)."""
    import jax  # noqa: PLC0415

    from dct_jax import state as state_lib  # noqa: PLC0415
    from dct_jax import train  # noqa: PLC0415

    config = make_config(inputs, args.size, args.batch)
    model = state_lib.create_model(config.model)
    tx, _ = state_lib.create_optimizer(config)
    body, layout = state_lib.load_body(config)
    mesh = state_lib.data_mesh()
    state = jax.device_put(state_lib.initial_state(model, tx, config, jax.random.key(0), pretrained=False),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step_fn = jax.jit(functools.partial(train.train_step, model=model, tx=tx, body=body, layout=layout,
                                        weights=train.loss_weights(config), inputs=inputs),
                      donate_argnums=(0,))
    spec = state_lib.example_spec(config, train=True)
    first = next(iterator(source, spec, batch=args.batch, workers=0, threads=0))
    check_batch(first)
    constant = state_lib.to_global(pipeline.split_host_fields(first)[0], mesh)
    box = {"state": state}

    def step(batch) -> None:
        box["state"], metrics = step_fn(box["state"], batch)
        jax.device_get(metrics)  # as the training loop does every step

    compile_s = time.perf_counter()
    step(constant)
    compile_s = time.perf_counter() - compile_s
    print(f"  train step compiled in {compile_s:.1f} s", file=sys.stderr, flush=True)

    iters = {w: iterator(source, spec, batch=args.batch, workers=w, threads=args.threads) for w in args.workers}
    for it in iters.values():  # start-up (spawn, first batches) and a first step outside the timing
        host = next(it)
        check_batch(host)
        step(state_lib.to_global(pipeline.split_host_fields(host)[0], mesh))
    for _ in range(2):
        step(constant)
    feeds = ["constant batch"] + [f"pipeline, {w} workers" for w in args.workers]
    times = {f: [] for f in feeds}
    waits = {f: [] for f in feeds}
    for r in range(args.rounds):
        for feed in feeds[r % len(feeds):] + feeds[: r % len(feeds)]:
            for _ in range(args.steps):
                t = time.perf_counter()
                if feed == "constant batch":
                    batch = constant
                else:
                    host = next(iters[args.workers[feeds.index(feed) - 1]])
                    batch = state_lib.to_global(pipeline.split_host_fields(host)[0], mesh)
                waits[feed].append(time.perf_counter() - t)
                step(batch)
                times[feed].append(time.perf_counter() - t)
        print(f"  step round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for it in iters.values():
        it.close()
    return [(f, statistics.median(times[f]), min(times[f]), statistics.median(waits[f])) for f in feeds]


def print_rates(source, specs: dict[str, pipeline.ExampleSpec], args) -> None:
    cases = [(inputs, w) for inputs in args.inputs for w in args.workers]
    runs = {c: [] for c in cases}
    for r in range(args.rounds):
        for case in cases[r % len(cases):] + cases[: r % len(cases)]:
            inputs, w = case
            runs[case].append(measure(source, specs[inputs], batch=args.batch, workers=w, threads=args.threads,
                                      examples=args.examples, cache_mb=args.cache_mb))
        print(f"  round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    header = (f"{'inputs':<10} {'workers':>7} {'ex/s':>7} {'/ 300':>6} {'best':>7} {'/ 300':>6} "
              f"{'start-up s':>10} {'CPU ms/ex: main':>15} {'workers':>8}")
    print(header)
    print("-" * len(header))
    for inputs, w in cases:
        startup, rate, main_cpu, worker_cpu = (list(x) for x in zip(*runs[inputs, w]))
        med, best = statistics.median(rate), max(rate)
        print(f"{inputs:<10} {w:>7} {med:>7.1f} {med / TARGET:>6.2f} {best:>7.1f} {best / TARGET:>6.2f} "
              f"{statistics.median(startup):>10.1f} {statistics.median(main_cpu):>15.2f} "
              f"{statistics.median(worker_cpu):>8.2f}")
    print(f"(median and best of {args.rounds} rotated rounds; ratios to the {TARGET:.0f} ex/s target; CPU time "
          f"per example of this process and of the workers; load average now {os.getloadavg()[0]:.2f})",
          flush=True)


def print_profile(source, spec: pipeline.ExampleSpec, args, inputs: str) -> None:
    wall, cpu, total_wall, total_cpu = profile(source, spec, num=args.profile_examples, batch=args.batch)
    print(f"\nper-example stages, inputs={inputs}, one process, {args.profile_examples} records "
          f"(load average {os.getloadavg()[0]:.2f}):")
    print(f"  {'stage':<36} {'wall ms':>8} {'CPU ms':>8} {'CPU %':>6}")
    patched_cpu = sum(cpu.values())
    for stage in STAGES:
        if stage in cpu:
            print(f"  {stage:<36} {wall[stage]:>8.2f} {cpu[stage]:>8.2f} {100 * cpu[stage] / patched_cpu:>6.1f}")
    print(f"  {'total (timers on)':<36} {sum(wall.values()):>8.2f} {patched_cpu:>8.2f}")
    print(f"  {'total (timers off)':<36} {total_wall:>8.2f} {total_cpu:>8.2f}   -> {1000 / total_cpu:.0f} ex/s "
          f"per CPU core, {2000 / total_cpu:.0f} ex/s if 2 cores did nothing else", flush=True)


def print_step(source, args) -> None:
    rows = time_step(source, args, args.inputs[0])
    print(f"\ntrain step, inputs={args.inputs[0]}, quickstart's network at {args.size}x{args.size}, "
          f"batch {args.batch} (median of {args.rounds} x {args.steps} steps per feed):")
    header = f"  {'feed':<24} {'s/step':>8} {'best':>8} {'ratio':>6} {'batch wait s':>12}"
    print(header)
    base = rows[0][1]
    for feed, med, best, wait in rows:
        print(f"  {feed:<24} {med:>8.3f} {best:>8.3f} {med / base:>6.2f} {wait:>12.3f}")
    print(f"  (ratio: to the constant batch; load average now {os.getloadavg()[0]:.2f})", flush=True)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="~/tensorflow_datasets")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--threads", type=int, default=4,
                        help="grain read threads per process (config.data.threads, default 4)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--inputs", default="image_iuv,image", help="comma-separated config.model.inputs values")
    parser.add_argument("--examples", type=int, default=512, help="examples per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache_mb", type=float, default=0,
                        help="records kept decoded per process (config.data.cache_mb); > 0 times the epochs "
                             "after the first (each measurement first reads the records through once per process)")
    parser.add_argument("--profile_examples", type=int, default=200, help="records in the per-stage profile")
    parser.add_argument("--profile_only", action="store_true", help="only the per-stage profile")
    parser.add_argument("--step", action="store_true", help="also time the train step fed by the pipeline")
    parser.add_argument("--steps", type=int, default=4, help="train steps per feed and round (with --step)")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.inputs = [s.strip() for s in args.inputs.split(",") if s.strip()]

    from absl import flags  # noqa: PLC0415

    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    import cv2  # noqa: PLC0415

    source = load(args)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; grain {importlib.metadata.version('grain')}, "
          f"OpenCV {cv2.__version__}; {len(source)} records, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.threads} read threads, {args.examples} examples per measurement"
          + (f", record cache {args.cache_mb:g} MB per process (warm)" if args.cache_mb else ", no record cache"),
          flush=True)

    specs = {inputs: spec_for(inputs, args.size, args.batch) for inputs in args.inputs}
    if not args.profile_only:
        print_rates(source, specs, args)
    for inputs in args.inputs:
        print_profile(source, specs[inputs], args, inputs)
    if args.step:
        print_step(source, args)


if __name__ == "__main__":
    main()
