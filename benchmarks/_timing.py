"""Timing shared by the speed benchmarks (a helper module, not a benchmark).

``encoder_speed.py`` and ``train_speed.py`` time several variants (ours, the
torch twin, ablations) in interleaved rounds and print images/s with ratios to
a reference variant.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence


def timed(fn: Callable[[], None]) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_rounds(variants: Mapping[str, Mapping[str, Callable[[], float]]],
                       rounds: int) -> dict[str, dict[str, list[float]]]:
    """``{variant: {kind: [seconds per round]}}`` from each variant's ``{kind: timer}``.

    Each round runs every variant's timers once, the variants in an order
    rotated by one each round: a variant's speed depends on what ran just
    before it (e.g. right after torch), by up to 20% on a 2-core CPU.
    """
    times = {name: {kind: [] for kind in timers} for name, timers in variants.items()}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for kind, timer in variants[name].items():
                times[name][kind].append(timer())
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return times


def print_ratio_table(times: Mapping[str, Mapping[str, Sequence[float]]], batch: int, reference: str,
                      columns: Sequence[tuple[str, str, str]], warm_up_seconds: Mapping[str, float]) -> None:
    """Images/s (median and best round) of each variant and kind, and their ratios to ``reference``.

    Args:
      times: from :func:`interleaved_rounds`.
      batch: images per timed call.
      reference: the variant the ratios divide by.
      columns: ``(kind, title, number format)`` per kind, e.g. ``("step", "step img/s", ".2f")``.
      warm_up_seconds: per variant, printed last.
    """
    med = {n: {k: batch / statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    best = {n: {k: batch / min(v) for k, v in t.items()} for n, t in times.items()}
    name_width = max(16, *(len(n) for n in times))
    header = f"{'variant':<{name_width}}"
    for _, title, _ in columns:
        header += f" {title:>{max(len(title), 11)}} {'ratio':>6} {'best':>8} {'ratio':>6}"
    header += f" {'warm-up s':>10}"
    print(header)
    print("-" * len(header))
    for name in times:
        row = f"{name:<{name_width}}"
        for kind, title, fmt in columns:
            m, b = med[name][kind], best[name][kind]
            row += (f" {m:>{max(len(title), 11)}{fmt}} {m / med[reference][kind]:>6.2f}"
                    f" {b:>8{fmt}} {b / best[reference][kind]:>6.2f}")
        print(row + f" {warm_up_seconds[name]:>10.1f}")
    rounds = len(next(iter(next(iter(times.values())).values())))
    print(f"(median and best of {rounds} interleaved rounds; ratios to {reference})")
