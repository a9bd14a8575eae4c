"""Command line: ``python -m suitkaise demo`` and ``python -m suitkaise bench``.

``demo [SCENARIO ...]``  a short terminal show of what circuits do (a few seconds).
``bench [ARGS ...]``     run ``benchmarks/circuits.py`` from the source checkout this package
                         lives in; the benchmarks are not installed with the package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["benchmark_script", "main"]

PROG = "python -m suitkaise"


def benchmark_script(package_dir: Path | None = None) -> Path | None:
    """``benchmarks/circuits.py`` of the source checkout (``<repo>/src/suitkaise``) that the
    package was loaded from, or ``None`` for an installed copy or a checkout without it."""
    package = Path(__file__).resolve().parent if package_dir is None else package_dir
    if package.parent.name != "src":
        return None
    script = package.parent.parent / "benchmarks" / "circuits.py"
    return script if script.is_file() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="suitkaise: coordinated failure handling (circuits with backoff, jitter, "
        "and shared state across threads, asyncio and processes).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="a short terminal show of circuits at work (a few seconds)",
        description="A short terminal show of circuits at work. Runs every scenario "
        "unless some are named.",
    )
    demo.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="run only these (see --list)"
    )
    demo.add_argument("--list", action="store_true", help="list the scenarios and exit")
    demo.add_argument(
        "--seed", type=int, default=None, help="seed the jitter for a reproducible run"
    )

    commands.add_parser(
        "bench",
        help="run the circuit benchmarks (source checkout only)",
        description="Run benchmarks/circuits.py from the source checkout; any further "
        "arguments are passed to it.",
    )
    return parser


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import _demo  # only the command line pays for the demo's imports

    if args.list:
        for scenario in _demo.SCENARIOS:
            print(f"{scenario.name:12} {scenario.title}")
        return 0
    try:
        return _demo.run(args.scenarios, seed=args.seed)
    except KeyError as unknown:
        names = ", ".join(scenario.name for scenario in _demo.SCENARIOS)
        parser.error(f"unknown demo scenario: {unknown.args[0]} (choose from {names})")


def _bench(extra: Sequence[str]) -> int:
    script = benchmark_script()
    if script is None:
        print(
            "suitkaise bench: the benchmarks live in the source repository "
            "(benchmarks/circuits.py) and are not installed with the package; "
            f"run `{PROG} bench` from a source checkout (pip install -e .).",
            file=sys.stderr,
        )
        return 2
    try:
        return subprocess.call([sys.executable, str(script), *extra], cwd=script.parent.parent)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        return _bench(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _demo(parser, args)


if __name__ == "__main__":
    sys.exit(main())
