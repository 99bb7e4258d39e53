"""The benchmark's result store: one SQLite file in the output folder.

Data flows one way (DESIGN.md section 5): the runner produces ``TrialResult`` objects, the store
keeps them, and scoring and the report read them back from the store alone.

Schema (version ``SCHEMA_VERSION``):

- ``meta(key, value)``: ``schema_version`` and the optzoo version that created the file.
- ``trials``: one row per finished trial. ``key`` is a stable hash of what defines the trial
  (see ``trial_key``), unique, so a resumed run can tell which trials are already done. Columns:
  what was run (``phase``, ``algorithm``, ``hyperparameters`` and ``schedule`` as sorted JSON,
  ``workload``, ``seed``, ``max_steps``, ``time_budget_s``, ``target``), the outcome
  (``status`` "ok" / "failed" / "diverged", ``error`` text), the figures
  (``steps_to_target``, ``time_to_target_s``, ``cpu_time_to_target_s``, ``final_metric``,
  ``best_metric``, ``steps_run``, ``wall_s``, ``cpu_s``, ``eval_s``, ``setup_s``,
  ``overhead_s``, ``median_step_ms``, ``state_bytes_per_param``, ``peak_memory_bytes``), the
  environment (``threads``, ``cpu_count``, ``load_start``, ``load_end``, ``torch_version``,
  ``implementation`` as JSON, ``hostname``) and ``created_at`` / ``finished_at`` (ISO 8601, UTC).
  Times follow AlgoPerf: ``wall_s``, ``cpu_s`` and the times to target count training only,
  not evaluation (``eval_s``) or building the task (``setup_s``).
- ``curves(trial_id, step, wall_s, cpu_s, train_loss, eval_metric)``: the trial's evaluation
  points, on the same clock as ``wall_s``.

Each trial and its curve are written in one transaction, and the database runs in WAL mode: a
process killed at any moment leaves every committed trial intact and never half a trial.
SQLite stores NaN as NULL, so a non-finite metric reads back as ``None``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from optzoo.bench.runner import TrialResult

SCHEMA_VERSION = 1
STORE_FILENAME = "bench.sqlite"
PHASES = ("tune", "final", "targets")
STATUSES = ("ok", "failed", "diverged")

_SCHEMA = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    phase TEXT NOT NULL CHECK (phase IN {PHASES!r}),
    algorithm TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    schedule TEXT,
    workload TEXT NOT NULL,
    seed INTEGER NOT NULL,
    max_steps INTEGER NOT NULL,
    time_budget_s REAL,
    target REAL,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    error TEXT,
    steps_to_target INTEGER,
    time_to_target_s REAL,
    cpu_time_to_target_s REAL,
    final_metric REAL,
    best_metric REAL,
    steps_run INTEGER NOT NULL,
    wall_s REAL,
    cpu_s REAL,
    eval_s REAL,
    setup_s REAL,
    overhead_s REAL,
    median_step_ms REAL,
    state_bytes_per_param REAL,
    peak_memory_bytes INTEGER,
    threads INTEGER,
    cpu_count INTEGER,
    load_start REAL,
    load_end REAL,
    torch_version TEXT,
    implementation TEXT,
    hostname TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE INDEX trials_by_workload ON trials (phase, workload, algorithm);
CREATE TABLE curves (
    trial_id INTEGER NOT NULL REFERENCES trials (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    wall_s REAL NOT NULL,
    cpu_s REAL NOT NULL,
    train_loss REAL,
    eval_metric REAL,
    PRIMARY KEY (trial_id, step)
) WITHOUT ROWID;
"""

# Columns of ``trials`` written from a result, in order (``id`` is assigned by SQLite).
TRIAL_COLUMNS = (
    "key",
    "phase",
    "algorithm",
    "hyperparameters",
    "schedule",
    "workload",
    "seed",
    "max_steps",
    "time_budget_s",
    "target",
    "status",
    "error",
    "steps_to_target",
    "time_to_target_s",
    "cpu_time_to_target_s",
    "final_metric",
    "best_metric",
    "steps_run",
    "wall_s",
    "cpu_s",
    "eval_s",
    "setup_s",
    "overhead_s",
    "median_step_ms",
    "state_bytes_per_param",
    "peak_memory_bytes",
    "threads",
    "cpu_count",
    "load_start",
    "load_end",
    "torch_version",
    "implementation",
    "hostname",
    "created_at",
    "finished_at",
)
_JSON_COLUMNS = ("hyperparameters", "schedule", "implementation")
_FILTERABLE = ("id", *TRIAL_COLUMNS)


class StoreVersionError(RuntimeError):
    """The file was written with another schema version (or is not an optzoo store)."""


class CurvePoint(NamedTuple):
    """One evaluation point of a trial; times count training only (not evaluation)."""

    step: int
    wall_s: float
    cpu_s: float
    train_loss: float | None
    eval_metric: float | None


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace (tuples become lists): equal values give equal
    text, so it can be hashed and compared."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def trial_key(
    *,
    phase: str,
    algorithm: str,
    hyperparameters: Mapping[str, Any],
    schedule: Mapping[str, Any] | None,
    workload: str,
    seed: int,
    max_steps: int,
    time_budget_s: float | None,
    target: float | None,
) -> str:
    """Stable hash (hex SHA-256) of what defines a trial.

    The budget is ``max_steps`` and ``time_budget_s``; the target is part of the key too,
    because a trial stops there, so a trial run against another target is another trial.
    """
    identity = {
        "phase": phase,
        "algorithm": algorithm,
        "hyperparameters": dict(hyperparameters),
        "schedule": None if schedule is None else dict(schedule),
        "workload": workload,
        "seed": int(seed),
        "max_steps": int(max_steps),
        "time_budget_s": None if time_budget_s is None else float(time_budget_s),
        "target": None if target is None else float(target),
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


class Store:
    """The SQLite store of one benchmark run.

    ``path`` is the database file, or a folder (then ``folder / STORE_FILENAME``); a missing
    file is created with the current schema. Opening a file of another schema version raises
    ``StoreVersionError``. Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / STORE_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._prepare()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreVersionError(f"{path} is not an optzoo benchmark store: {error}") from error
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (committed trials are already on disk)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _prepare(self) -> None:
        with self._transaction() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                for statement in _statements(_SCHEMA):
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT INTO meta VALUES ('optzoo_version', ?)", (_optzoo_version(),))
                return
        self._check_version(tables)

    def _check_version(self, tables: set[str]) -> None:
        if "meta" not in tables:
            raise StoreVersionError(
                f"{self.path} is an SQLite file but not an optzoo benchmark store "
                "(it has no meta table); choose another output folder"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        found = None if row is None else row[0]
        if found != str(SCHEMA_VERSION):
            raise StoreVersionError(
                f"{self.path} has store schema version {found}, but this optzoo reads version "
                f"{SCHEMA_VERSION}; use a new output folder, or the optzoo version that wrote it"
            )

    # -- writing ------------------------------------------------------------------------------
    def add(self, result: TrialResult) -> int:
        """Store one finished trial and its curve in one transaction; return its ``id``.

        Raises ``ValueError`` if a trial with the same key is already stored.
        """
        row = _trial_row(result)
        placeholders = ", ".join("?" for _ in TRIAL_COLUMNS)
        try:
            with self._transaction() as db:
                cursor = db.execute(
                    f"INSERT INTO trials ({', '.join(TRIAL_COLUMNS)}) VALUES ({placeholders})",
                    [row[c] for c in TRIAL_COLUMNS],
                )
                trial_id = int(cursor.lastrowid or 0)
                db.executemany(
                    "INSERT INTO curves VALUES (?, ?, ?, ?, ?, ?)",
                    [(trial_id, *_finite_point(p)) for p in result.curve],
                )
        except sqlite3.IntegrityError as error:
            if self.has(row["key"]):
                raise ValueError(f"trial {row['key']} is already in {self.path}") from error
            raise
        return trial_id

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` in the ``meta`` table (e.g. the options of a run)."""
        if key in ("schema_version", "optzoo_version"):
            raise ValueError(f"meta key {key!r} is reserved")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reading ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """The ``meta`` value under ``key``, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def has(self, key: str) -> bool:
        """Whether a finished trial with this key is stored."""
        found = self._db.execute("SELECT 1 FROM trials WHERE key = ?", (key,)).fetchone()
        return found is not None

    def keys(self) -> set[str]:
        """Keys of every stored trial."""
        return {r[0] for r in self._db.execute("SELECT key FROM trials")}

    def trials(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored trials as dicts (column -> value; JSON columns decoded), ordered by id.

        Each filter is ``column=value`` (equality) or ``column=[v1, v2, ...]`` (any of), e.g.
        ``store.trials(phase="final", workload="mnist1d_mlp", status="ok")``.
        """
        where, args = _where(filters)
        rows = self._db.execute(f"SELECT * FROM trials{where} ORDER BY id", args).fetchall()
        return [_decode(row) for row in rows]

    def curve(self, trial_id: int) -> list[CurvePoint]:
        """The evaluation points of trial ``trial_id``, by step."""
        rows = self._db.execute(
            "SELECT step, wall_s, cpu_s, train_loss, eval_metric FROM curves "
            "WHERE trial_id = ? ORDER BY step",
            (trial_id,),
        )
        return [CurvePoint(*row) for row in rows]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _optzoo_version() -> str:
    from optzoo import __version__

    return __version__


def _trial_row(result: TrialResult) -> dict[str, Any]:
    trial, env = result.trial, result.environment
    schedule = None if trial.schedule is None else {"name": trial.schedule, **trial.schedule_args}
    row: dict[str, Any] = {
        "key": trial.key,
        "phase": trial.phase,
        "algorithm": trial.algorithm,
        "hyperparameters": canonical_json(dict(trial.hyperparameters)),
        "schedule": None if schedule is None else canonical_json(schedule),
        "workload": trial.workload,
        "seed": trial.seed,
        "max_steps": trial.max_steps,
        "time_budget_s": trial.time_budget_s,
        "target": trial.target,
        "implementation": canonical_json(env.implementation),
    }
    for name in TRIAL_COLUMNS:
        if name not in row:
            source = env if hasattr(env, name) else result
            row[name] = getattr(source, name)
    return {k: _finite(v) for k, v in row.items()}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _finite_point(point: CurvePoint) -> tuple[Any, ...]:
    return tuple(_finite(v) for v in point)


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in sorted(filters.items()):
        if column not in _FILTERABLE:
            raise ValueError(f"unknown trial column {column!r}; expected one of {_FILTERABLE}")
        if column in _JSON_COLUMNS and value is not None and not isinstance(value, str):
            value = canonical_json(value)
        if value is None:
            clauses.append(f"{column} IS NULL")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            clauses.append(f"{column} IN ({', '.join('?' for _ in value)})")
            args.extend(value)
        else:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for column in _JSON_COLUMNS:
        if record[column] is not None:
            record[column] = json.loads(record[column])
    return record
