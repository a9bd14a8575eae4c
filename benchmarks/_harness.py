"""What the benchmark scripts share: result rows, interleaved sampling and the summary table.

Each script in this folder keeps what it measures; this module holds how it is measured
and reported, written once:

* a ``Side`` is one measured thing; ``measure`` calibrates each side's calls per sample and
  then takes the samples interleaved across the sides (``sample``), so that drift hits them
  alike; a side's figure is the median of its samples;
* ``show`` and ``show_ratio`` print a section's sides and ratios as it goes;
* every comparison becomes a ``Row`` (``compare``, ``ratio_row``, ``unmeasured``), and
  ``print_summary`` ends the run with the table of rows and the targets missed.

The scripts import it by name (``from _harness import ...``): run as ``python
benchmarks/NAME.py``, a script's folder is the first entry of ``sys.path``, and the child
processes that multiprocessing starts under spawn or forkserver are given the parent's
``sys.path``, so they find it too. It imports the standard library only, and neither
suitkaise nor multiprocessing: ``pool.py``'s workers re-import their script, and should not
pay for either.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


# -- result rows --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary: ours against a floor, a peer, or an absolute limit."""

    label: str
    ours: str
    other: str
    ratio: float | None  # None: no ratio (a side not measured, or an absolute target)
    target: str  # "<= 2.0x", ">= 1.0x", "<= 5 µs", or "info" for context rows
    met: bool | None = None  # None for context rows


def judge(ratio: float, target: str) -> bool:
    """Whether ``ratio`` meets a ratio target such as ``"<= 1.2x"`` or ``">= 1.0x"``."""
    op, _, bound = target.partition(" ")
    limit = float(bound.rstrip("x"))
    return ratio <= limit if op == "<=" else ratio >= limit


def compare(label: str, ours: str, other: str, ratio: float | None, target: str) -> Row:
    """A row from figures already formatted; judged unless it is context ("info") or a side
    could not be measured (``ratio`` None)."""
    met = None if ratio is None or target == "info" else judge(ratio, target)
    return Row(label, ours, other, ratio, target, met)


def ratio_row(
    label: str, ours: float, other: float, target: str, fmt: Callable[[float], str]
) -> Row:
    """A row whose ratio is ``ours / other``, both figures shown with ``fmt``."""
    return compare(label, fmt(ours), fmt(other), ours / other, target)


def unmeasured(label: str, why: str) -> Row:
    """A context row for something that could not be measured; ``why`` takes the peer's
    column."""
    return Row(label, "-", why, None, "info")


def guarded(section: Callable[[], list[Row]], labels: list[str]) -> list[Row]:
    """Run a section; if it fails, say so and give its rows as unmeasured (exit stays 0)."""
    try:
        return section()
    except Exception:
        traceback.print_exc()
        print(f"  could not measure: {', '.join(labels)}")
        return [unmeasured(label, "failed, see above") for label in labels]


# -- figures ------------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    """Nanoseconds: ``"153 ns"``, ``"2,285 ns"``, ``"9.5 ns"``."""
    return f"{ns:,.0f} ns" if ns >= 10 else f"{ns:.1f} ns"


def fmt_us(ns: float) -> str:
    """Nanoseconds shown in microseconds: ``"33.0 µs"``, ``"0.55 µs"``."""
    return f"{ns / 1000:,.1f} µs" if ns >= 10_000 else f"{ns / 1000:.2f} µs"


def ms_format(digits: int) -> Callable[[float], str]:
    """A formatter of nanoseconds in milliseconds: one decimal from 10 ms up, ``digits``
    decimals below (``ms_format(1)`` always shows one)."""

    def fmt_ms(ns: float) -> str:
        return f"{ns / 1e6:.1f} ms" if ns >= 1e7 else f"{ns / 1e6:.{digits}f} ms"

    return fmt_ms


def fmt_mps(ops_per_s: float) -> str:
    """A rate in millions of calls per second: ``"3.54 M/s"``."""
    return f"{ops_per_s / 1e6:.2f} M/s"


def fmt_kps(ops_per_s: float) -> str:
    """A rate in thousands of calls per second: ``"22.7 k/s"``."""
    return f"{ops_per_s / 1e3:,.1f} k/s"


# -- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How ``measure`` samples; a script's ``Config`` adds its own fields to these (as
    keywords, so that a subclass may give ``first_calls`` its default)."""

    repeats: int  # timed samples per side, interleaved across sides
    sample_s: float  # wanted duration of one sample; sets the calls per sample
    min_calls: int
    max_calls: int
    first_calls: int  # the calls of calibration's first try


@dataclass
class Side:
    """One measured thing: ``run(n)`` makes n calls (or rounds) and returns the elapsed
    nanoseconds; a sample is that time over n. ``calls`` is the n of every sample, set by
    ``calibrate`` or given."""

    name: str
    run: Callable[[int], float]
    calls: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def paused_gc(run: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``run(*args, **kwargs)`` with the garbage collector paused, as ``timeit`` does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return run(*args, **kwargs)
    finally:
        if enabled:
            gc.enable()


def calibrate(side: Side, config: Sampling, *, local_gc: bool = True) -> None:
    """Pick the calls per sample so that one sample lasts about ``config.sample_s``. The
    tries warm the side up too (code paths, connections, caches).

    ``local_gc``: pause this process's garbage collector in each try and collect after the
    last. False for sides that run in another process, which minds its own collector.
    """
    n = config.first_calls
    while True:
        elapsed = paused_gc(side.run, n) if local_gc else side.run(n)
        if elapsed >= 20_000_000 or n >= config.max_calls:  # 20 ms is enough to estimate
            break
        n *= 4
    wanted = int(config.sample_s * 1e9 * n / max(elapsed, 1))
    side.calls = max(config.min_calls, min(config.max_calls, wanted))
    if local_gc:
        gc.collect()


def sample(sides: Sequence[Side], repeats: int, *, local_gc: bool = True) -> None:
    """Interleaved samples: every repeat times each side once, in turn, ``side.calls``
    calls each. ``local_gc`` as for ``calibrate``; with it, a collection follows every
    sample (exception paths, for one, leave reference cycles behind)."""
    for _ in range(repeats):
        for side in sides:
            elapsed = paused_gc(side.run, side.calls) if local_gc else side.run(side.calls)
            side.samples.append(elapsed / side.calls)
            if local_gc:
                gc.collect()


def measure(sides: Sequence[Side], config: Sampling, *, local_gc: bool = True) -> None:
    """Calibrate every side, then take ``config.repeats`` interleaved samples of each."""
    for side in sides:
        calibrate(side, config, local_gc=local_gc)
    sample(sides, config.repeats, local_gc=local_gc)


def paired(ours: list[float], other: list[float]) -> float:
    """The median, over the repeats, of ours / other in one repeat (samples taken side by
    side, so that both are from the same state of the machine)."""
    return statistics.median(a / b for a, b in zip(ours, other, strict=True))


# -- printing as it goes ------------------------------------------------------------------


def show(
    sides: Sequence[Side],
    fmt: Callable[[float], str],
    *,
    width: int = 46,
    unit: str = "",
    calls_shown: bool = True,
) -> None:
    """One line per side: its median, min and max (``fmt``, then ``unit``) and how many
    samples of how many calls (with ``calls_shown`` False: how many samples)."""
    for side in sides:
        count = len(side.samples)
        size = f"{side.calls:,} calls x {count}" if calls_shown else f"{count} samples"
        print(
            f"  {side.name:<{width}} median {fmt(side.median):>9}{unit}"
            f"   (min {fmt(min(side.samples))}, max {fmt(max(side.samples))}, {size})"
        )


def show_ratio(
    ours: Side,
    other: Side,
    *,
    digits: int = 2,
    per_repeat: bool = False,
    title: str | None = None,
) -> None:
    """The ratio of ours to other by medians and by bests (least disturbed by noise),
    preceded with ``per_repeat`` by the median of the per-repeat ratios (``paired``).
    ``title`` names the pair; by default the two sides' names."""
    figures = [
        (ours.median / other.median, "by medians"),
        (min(ours.samples) / min(other.samples), "by bests"),
    ]
    if per_repeat:
        figures.insert(0, (paired(ours.samples, other.samples), "median per repeat"))
    pair = f"{ours.name} / {other.name}" if title is None else title
    print(f"    {pair}: " + ", ".join(f"{ratio:.{digits}f}x {how}" for ratio, how in figures))


# -- the start and the end of a run -------------------------------------------------------


def print_banner(title: str, quick: bool, notes: Sequence[str], machine: str = "") -> None:
    """The first lines: ``title`` (what and which version), the run's kind, the Python and
    the machine (``machine`` is appended to it), ``notes`` after it, then the load."""
    print(
        f"{title} ({'quick' if quick else 'full'} run): Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs{machine}; " + "; ".join(notes)
    )
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f} (above ~0.5, expect noise)")


def print_table(rows: Sequence[Row], other_header: str, ratio_digits: int = 2) -> None:
    """The rows as a Markdown table; ``other_header`` heads the column of what ours is
    compared with."""
    headers = ("operation", "ours", other_header, "ratio", "target", "met?")
    cells = [
        (
            row.label,
            row.ours,
            row.other,
            "-" if row.ratio is None else f"{row.ratio:.{ratio_digits}f}x",
            row.target,
            "-" if row.met is None else ("yes" if row.met else "NO"),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for values in cells:
        print(line(values))


def print_summary(
    rows: Sequence[Row],
    started: float,
    other_header: str,
    *,
    ratio_digits: int = 2,
    note: str | None = None,
) -> None:
    """The end of a run: the time since ``started`` (a ``time.perf_counter()`` reading),
    the table (``print_table``), ``note`` if any, and the targets missed."""
    print(f"\nSummary ({time.perf_counter() - started:.1f} s):\n")
    print_table(rows, other_header, ratio_digits)
    if note is not None:
        print(note)
    missed = [row.label for row in rows if row.met is False]
    print(f"\nTargets missed: {', '.join(missed)}" if missed else "\nAll targets met.")
