"""The ``optzoo`` command: help, listing, clear errors for bad names and options, and a tiny
``bench`` run end to end (worker processes, store, summary table, report, resume)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optzoo.cli import build_parser, main

pytestmark = pytest.mark.filterwarnings("ignore::optzoo.bench.runner.ContendedMachineWarning")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ("list", "bench", "report", "targets")),
        (
            ["bench"],
            (
                "--suite",
                "--algorithms",
                "--workloads",
                "--seeds",
                "--steps",
                "--tuning-budget",
                "--out",
                "--resume",
                "--workers",
                "paired",
            ),
        ),
        (["report"], ("DIR", "bench.sqlite")),
        (["targets"], ("3/4", "--write")),
        (["list"], ("algorithms", "workloads")),
    ],
)
def test_help_explains_every_command_and_option(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in expected:
        assert word in text


def test_list_shows_algorithms_with_family_paper_oracle_and_workloads(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "NAdamW",
        "first_order",
        "gradient",
        "Symbolic Discovery",
        "SGDNesterov",
        "mnist1d_cnn_quick",
        "least_squares_noisy",
        "quick",
    ):
        assert word in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["bench", "--algorithms", "NAdamWW"],
            "unknown algorithm 'NAdamWW'; did you mean 'NAdamW'",
        ),
        (["bench", "--workloads", "mnist1d_mpl"], "unknown workload 'mnist1d_mpl'"),
        (["bench", "--seeds", "0,1"], "must be fresh"),
        (["report", "/nonexistent/folder"], "holds no benchmark store"),
    ],
)
def test_unknown_names_are_clear_errors(argv, message, capsys):
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and err.startswith(f"optzoo {argv[0]}: error:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--suite", "medium"], "invalid choice: 'medium'"),
        (["bench", "--seeds", "1,x"], "seeds must be integers"),
        (["bench", "--seeds", "1,1"], "distinct"),
        (["bench", "--steps", "0"], "positive integer"),
        (["bench", "--workers", "0"], "workers must be >= 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_options_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_parser_defaults():
    args = build_parser().parse_args(["bench"])
    assert (args.suite, args.out, args.resume, args.workers) == ("quick", "bench-out", False, 2)


def test_tiny_bench_run_writes_store_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "bench",
        "--algorithms",
        "SGDNesterov",
        "--workloads",
        "least_squares_noisy_quick",
        "--tuning-budget",
        "1",
        "--seeds",
        "1",
        "--steps",
        "40",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "summary" in text and "SGDNesterov" in text and "report.html" in text
    assert (out / "bench.sqlite").is_file() and (out / "report.html").is_file()
    assert main(argv) == 2  # the folder holds a run: --resume or another folder
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 5


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "optzoo", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0 and "optzoo" in done.stdout
