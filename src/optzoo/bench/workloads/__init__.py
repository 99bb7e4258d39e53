"""Benchmark workloads: each builds model, data and evaluation from a seed, fully offline.

``WORKLOADS`` maps names to ``Workload`` objects (see ``base.py`` for the interface);
``get_workload(name)`` looks one up, ``workloads_in_suite("quick")`` lists a suite, and
``load_targets()`` reads the frozen targets shipped in ``targets.json``. Importing this package
registers every workload below.
"""

from optzoo.bench.workloads import (
    char_lm,
    digits,
    least_squares,
    logistic,
    mnist1d,
    nondiff,
    quick,
    regression,
    sklearn_data,
    test_functions,
)
from optzoo.bench.workloads.base import (
    SUITES,
    WORKLOADS,
    ModuleTask,
    ResidualTask,
    Task,
    Workload,
    get_workload,
    load_all_data,
    register_workload,
    workloads_in_suite,
)
from optzoo.bench.workloads.targets import Target, load_targets, target_for

__all__ = [
    "SUITES",
    "WORKLOADS",
    "ModuleTask",
    "ResidualTask",
    "Target",
    "Task",
    "Workload",
    "char_lm",
    "digits",
    "get_workload",
    "least_squares",
    "load_all_data",
    "load_targets",
    "logistic",
    "mnist1d",
    "nondiff",
    "quick",
    "register_workload",
    "regression",
    "sklearn_data",
    "target_for",
    "test_functions",
    "workloads_in_suite",
]
