"""The ``optzoo`` command: ``list``, ``bench``, ``report`` and ``targets``.

``optzoo bench`` tunes every registered algorithm that suits each workload of a suite with the
same budget, reruns the winners on fresh paired seeds against the frozen targets, prints a
summary table and writes ``report.html``; ``optzoo report DIR`` rebuilds the report from the
store alone; ``optzoo targets`` runs the target-setting pass. ``optzoo COMMAND --help`` explains
each option.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUT = "bench-out"


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers like 1,2,3, got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"workers must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``optzoo`` (its ``--help`` is the command's documentation)."""
    parser = argparse.ArgumentParser(
        prog="optzoo",
        description="optzoo: optimization algorithms and a benchmark that tells you which to "
        "pick. Commands: list (what is registered), bench (tune, run, score, report), report "
        "(rebuild a report from a results folder), targets (the target-setting pass).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser(
        "list",
        help="list algorithms (family, paper, oracle) and workloads",
        description="List the registered algorithms with family, paper and oracle, the "
        "benchmark's baselines, and the workloads with their oracles, budgets and targets.",
    )
    listing.add_argument(
        "what",
        nargs="?",
        choices=("all", "algorithms", "workloads"),
        default="all",
        help="what to list (default: all)",
    )

    bench = commands.add_parser(
        "bench",
        help="run the benchmark and write the report",
        description="Benchmark every registered algorithm that suits each workload: tune on "
        "seed 0 with the same budget for every algorithm (a log-spaced learning-rate grid, "
        "widened where the best value is on its edge), rerun the winner on fresh seeds that "
        "are paired across algorithms, stop each trial at the workload's frozen target, then "
        "score steps to target with AlgoPerf performance profiles and write report.html. "
        "Results go to an SQLite store in the output folder as each trial finishes, so an "
        "interrupted run continues with --resume.",
    )
    bench.add_argument(
        "--suite",
        choices=("quick", "full"),
        default="quick",
        help="workload suite; quick (default) takes about 5 minutes on 2 cores, "
        "full is the whole benchmark",
    )
    bench.add_argument(
        "--algorithms",
        type=_names,
        metavar="A,B,...",
        help="comma-separated algorithm names (default: every registered "
        "algorithm plus the SGDMomentum/SGDNesterov baselines)",
    )
    bench.add_argument(
        "--workloads",
        type=_names,
        metavar="W,...",
        help="comma-separated workload names (default: the suite's)",
    )
    bench.add_argument(
        "--seeds",
        type=_seeds,
        metavar="S,...",
        help="final seeds, fresh (not 0, the tuning seed); default 1,2,3 (quick) or 1,...,5 (full)",
    )
    bench.add_argument(
        "--tuning-budget",
        type=_positive,
        metavar="N",
        help="configurations tried per algorithm and workload (default 5 quick, 7 full)",
    )
    bench.add_argument(
        "--steps",
        type=_positive,
        metavar="N",
        help="step budget of every trial (default: each workload's own; the "
        "frozen targets were set on those)",
    )
    bench.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output folder for bench.sqlite and report.html (default {DEFAULT_OUT})",
    )
    bench.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (finished trials are kept)",
    )
    bench.add_argument(
        "--workers",
        type=_workers,
        default=2,
        metavar="N",
        help="trials run at once, one process each (default 2)",
    )

    report = commands.add_parser(
        "report",
        help="rebuild report.html from a results folder",
        description="Rebuild DIR/report.html from DIR/bench.sqlite alone and print the "
        "summary table.",
    )
    report.add_argument("folder", metavar="DIR", help="a folder written by optzoo bench")

    targets = commands.add_parser(
        "targets",
        help="run the target-setting pass",
        description="Tune the baseline pool (NAdamW, AdamW, momentum and Nesterov SGD, warm-up "
        "+ cosine) on every chosen workload with the benchmark's own tuning budget, rerun each "
        "baseline's best on fresh seeds, and take the NAdamW baseline's median of the best "
        "metric reached within 3/4 of the budget. Writes DIR/targets.json; --write also "
        "replaces the targets shipped with optzoo (optzoo/bench/workloads/targets.json).",
    )
    targets.add_argument(
        "--workloads",
        type=_names,
        metavar="W,...",
        help="workloads (default: every registered workload)",
    )
    targets.add_argument(
        "--out",
        default="targets-out",
        metavar="DIR",
        help="folder for the pass's store and targets.json",
    )
    targets.add_argument("--workers", type=_workers, default=2, metavar="N")
    targets.add_argument(
        "--write", action="store_true", help="update the shipped targets.json with the new targets"
    )
    return parser


# --------------------------------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    # Piped output (a log file, CI) gets wide lines instead of rich's 80-column default.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from optzoo.bench.algorithms import bench_algorithms
    from optzoo.bench.workloads import WORKLOADS, load_targets, target_for

    console = _console()
    if args.what in ("all", "algorithms"):
        table = Table(title="algorithms")
        for column in ("name", "family", "oracle", "paper"):
            table.add_column(column)
        for a in bench_algorithms():
            table.add_row(a.name, a.family, a.oracle, a.paper)
        console.print(table)
    if args.what in ("all", "workloads"):
        table = Table(title="workloads")
        for column in ("name", "suites", "oracles", "metric", "steps", "target"):
            table.add_column(column)
        targets = load_targets()
        for name, w in sorted(WORKLOADS.items()):
            target = target_for(w, targets)
            table.add_row(
                name,
                ",".join(sorted(w.suite)),
                ",".join(sorted(w.oracles)),
                w.metric,
                str(w.max_steps),
                "-" if target is None else f"{target:.4g}",
            )
        console.print(table)
    return 0


class _Bar:
    """A rich progress bar over the stages of a run."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
        )
        self.tasks: dict[str, Any] = {}
        self.warned: set[str] = set()

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, event: Any) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=event.total, last="")
        task = self.tasks[stage]
        if event.event == "warning":
            kind = (event.message or "").split(" ")[0]
            if kind not in self.warned:  # one warning of each kind per run
                self.warned.add(kind)
                self.progress.console.print(f"[yellow]warning:[/] {event.message}")
        elif event.event == "result":
            r = event.result
            last = f"{r.trial.algorithm} on {r.trial.workload}: {r.status}"
            self.progress.update(task, completed=event.done, total=event.total, last=last)
        else:
            self.progress.update(task, completed=event.done, total=event.total)


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """The progress bar prints the runner's warnings; keep Python's copy off the terminal."""
    from optzoo.bench.runner import ContendedMachineWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContendedMachineWarning)
        yield


def _summary(console: Any, folder: Path) -> None:
    from rich.table import Table

    from optzoo.bench import report, score
    from optzoo.bench.store import Store

    with Store(folder) as store:
        summaries = score.summarize(store.trials(phase="final"))
    table = Table(title="optzoo bench summary (AlgoPerf score; 1 = fastest everywhere)")
    for column in report.SUMMARY_HEADER:
        table.add_column(column)
    for row in report.summary_rows(summaries):
        table.add_row(*row)
    console.print(table)


def cmd_bench(args: argparse.Namespace) -> int:
    from optzoo.bench.benchmark import make_config, run_benchmark
    from optzoo.bench.report import write_report
    from optzoo.bench.store import Store

    console = _console()
    config = make_config(
        suite=args.suite,
        algorithms=args.algorithms,
        workloads=args.workloads,
        seeds=args.seeds,
        tuning_budget=args.tuning_budget,
        max_steps=args.steps,
    )
    folder = Path(args.out)
    if (folder / "bench.sqlite").exists() and not args.resume:
        raise ValueError(
            f"{folder} already holds a benchmark run; pass --resume to continue "
            "it or choose another --out"
        )
    missing = [w for w, t in config.targets.items() if t is None]
    if missing:
        console.print(
            f"[yellow]note:[/] no frozen target for {', '.join(missing)}: trials "
            "there run their whole budget and score as misses"
        )
    started = time.perf_counter()
    console.print(
        f"optzoo bench: {len(config.algorithms)} algorithms x {len(config.workloads)} "
        f"workloads (suite {config.suite}), results in {folder}/"
    )
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder) as store, _Bar(console) as bar, _quiet_warnings():
        run_benchmark(config, store, workers=args.workers, resume=args.resume, progress=bar)
    path = write_report(folder)
    _summary(console, folder)
    console.print(f"report: {path}  ({time.perf_counter() - started:.0f} s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from optzoo.bench.report import write_report

    console = _console()
    path = write_report(args.folder)
    _summary(console, Path(args.folder))
    console.print(f"report: {path}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from importlib import resources

    from optzoo.bench.set_targets import set_targets
    from optzoo.bench.store import Store
    from optzoo.bench.workloads import WORKLOADS, load_targets
    from optzoo.bench.workloads.targets import dump_targets

    console = _console()
    names = args.workloads or sorted(WORKLOADS)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder) as store, _Bar(console) as bar, _quiet_warnings():
        targets, results = set_targets(names, store, workers=args.workers, progress=bar)
    for name in names:
        console.print(
            f"{name}: {targets[name].target}  "
            + "; ".join(f"{r.algorithm} {r.median:.4g}" for r in results[name])
        )
    merged = {**load_targets(), **targets}
    (folder / "targets.json").write_text(dump_targets(merged), encoding="utf-8")
    console.print(f"targets: {folder / 'targets.json'}")
    if args.write:
        shipped = Path(str(resources.files("optzoo.bench.workloads").joinpath("targets.json")))
        shipped.write_text(dump_targets(merged), encoding="utf-8")
        console.print(f"updated {shipped}")
    return 0


COMMANDS = {"list": cmd_list, "bench": cmd_bench, "report": cmd_report, "targets": cmd_targets}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optzoo`` command; returns the exit status (2 for bad input)."""
    import torch

    torch.set_num_threads(1)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as error:
        print(f"optzoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are stored; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
