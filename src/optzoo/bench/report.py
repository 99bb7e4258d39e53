"""The benchmark report: one self-contained HTML page (PNG plots embedded as base64), rebuilt
from the store alone.

It shows the summary (benchmark score from steps and from wall time, speed-up over NAdamW),
the performance profiles, per workload the eval metric against steps and against training wall
time (median over the final seeds, band from the best to the worst seed) and the
learning-rate sensitivity of the tuning sweep, and a table per workload: steps and time to
target (every seed), final metric, step time, optimizer state bytes per parameter and peak
memory, with the tuned configuration and an edge-of-grid flag.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optzoo.bench import score
from optzoo.bench.benchmark import BenchConfig, chosen, stored_config
from optzoo.bench.runner import contended
from optzoo.bench.store import Store

REPORT_FILENAME = "report.html"


def _figure(width: float = 6.4, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot

    return pyplot.figure(figsize=(width, height), dpi=90)


def _png(figure: Any) -> str:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    pyplot.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(png: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    return {name: palette(i % 20) for i, name in enumerate(sorted(names))}


def _legend(axes: Any) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def curves_plot(
    store: Store, records: Sequence[Mapping[str, Any]], clock: str, target: float | None
) -> str:
    """Eval metric against ``clock`` (``"step"`` or ``"wall_s"``) for one workload's final
    trials: per algorithm the median over seeds and a band from best to worst seed."""
    figure = _figure()
    axes = figure.add_subplot()
    by_algorithm: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        by_algorithm[r["algorithm"]].append(store.curve(r["id"]))
    colors = _colors(list(by_algorithm))
    positive = True
    for algorithm, curves in sorted(by_algorithm.items()):
        steps = sorted({p.step for c in curves for p in c})
        xs, mids, lows, highs = [], [], [], []
        for step in steps:
            points = [p for c in curves for p in c if p.step == step]
            values = [p.eval_metric for p in points if p.eval_metric is not None]
            values = [v for v in values if math.isfinite(v)]
            if not values:
                continue
            x = step if clock == "step" else score.median([getattr(p, clock) for p in points])
            xs.append(x)
            mids.append(score.median(values))
            lows.append(min(values))
            highs.append(max(values))
        if not xs:
            continue
        positive = positive and min(lows) > 0
        axes.plot(xs, mids, color=colors[algorithm], label=algorithm, linewidth=1.2)
        axes.fill_between(xs, lows, highs, color=colors[algorithm], alpha=0.15, linewidth=0)
    if target is not None:
        axes.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        positive = positive and target > 0
    if positive:
        axes.set_yscale("log")
    axes.set_xlabel("step" if clock == "step" else "training wall time (s)")
    axes.set_ylabel("eval metric")
    _legend(axes)
    return _png(figure)


def profile_plot(summaries: Mapping[tuple[str, str], score.Summary], figure_name: str) -> str:
    """Performance profiles rho(tau) over tau in [1, 4] of every algorithm."""
    figure = _figure()
    axes = figure.add_subplot()
    ratios = score.performance_ratios(summaries, figure_name)
    grid = score.taus()
    colors = _colors(list(ratios))
    for algorithm in sorted(ratios):
        axes.step(
            grid,
            score.profile(ratios[algorithm], grid),
            where="post",
            label=algorithm,
            color=colors[algorithm],
        )
    axes.set_xlim(1, score.MAX_RATIO)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel(
        "tau (ratio to the best " + ("steps" if "steps" in figure_name else "time") + " to target)"
    )
    axes.set_ylabel("fraction of workloads")
    _legend(axes)
    return _png(figure)


def sensitivity_plot(records: Sequence[Mapping[str, Any]], target: float | None) -> str | None:
    """Best metric of each tuning trial against its learning rate, per algorithm (a trial stops
    at the target, so reaching it reads as the target value)."""
    by_algorithm: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        lr = r["hyperparameters"].get("lr")
        if lr is None:
            continue
        value = r["best_metric"] if r["status"] == "ok" and r["best_metric"] is not None else None
        by_algorithm[r["algorithm"]].append((float(lr), math.inf if value is None else value))
    if not by_algorithm:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    colors = _colors(list(by_algorithm))
    finite = [v for pts in by_algorithm.values() for _, v in pts if math.isfinite(v)]
    ceiling = max(finite) * 1.5 if finite else 1.0
    for algorithm, points in sorted(by_algorithm.items()):
        points.sort()
        xs = [x for x, _ in points]
        ys = [y if math.isfinite(y) else ceiling for _, y in points]
        axes.plot(xs, ys, marker="o", markersize=3, color=colors[algorithm], label=algorithm)
    if target is not None:
        axes.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
    axes.set_xscale("log")
    if finite and min(finite) > 0:
        axes.set_yscale("log")
    axes.set_xlabel("learning rate (tuning seed; diverged drawn at the top)")
    axes.set_ylabel("best eval metric")
    _legend(axes)
    return _png(figure)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "miss"
    return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_rows(summaries: Mapping[tuple[str, str], score.Summary]) -> list[list[str]]:
    """The summary table (also printed by the CLI): one row per algorithm."""
    rows = []
    for s in score.standings(summaries):
        speedup = "-" if s.speedup_workloads == 0 else f"{s.speedup:.2f}x ({s.speedup_workloads})"
        rows.append(
            [
                s.algorithm,
                f"{s.score:.3f}",
                f"{s.time_score:.3f}",
                f"{s.reached}/{s.workloads}",
                speedup,
            ]
        )
    return rows


SUMMARY_HEADER = (
    "algorithm",
    "score (steps)",
    "score (time)",
    "targets reached",
    "speed-up vs NAdamW (workloads)",
)

WORKLOAD_HEADER = (
    "algorithm",
    "tuned",
    "steps to target (median; seeds)",
    "time to target s (median)",
    "CPU time to target s",
    "final metric",
    "step ms",
    "state B/param",
    "peak MiB",
)


def workload_rows(
    summaries: Mapping[tuple[str, str], score.Summary],
    workload: str,
    picks: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[list[str]]:
    rows = []
    mine = sorted(
        (s for (w, _), s in summaries.items() if w == workload),
        key=lambda s: (s.median_steps, s.algorithm),
    )
    for s in mine:
        pick = picks.get((workload, s.algorithm), {})
        tuned = (
            ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(s.hyperparameters.items())
            )
            or "defaults"
        )
        if pick.get("edge"):
            tuned += " [edge of grid: " + ", ".join(pick["edge"]) + "]"
        seeds = " ".join(_number(v, 4) for v in s.steps)
        peak = None if s.peak_memory_bytes is None else s.peak_memory_bytes / 2**20
        rows.append(
            [
                s.algorithm,
                tuned,
                f"{_number(s.median_steps, 4)} ({seeds})",
                _number(s.median_time),
                _number(s.median_cpu_time),
                _number(s.median_final_metric),
                _number(s.median_step_ms),
                _number(s.state_bytes_per_param),
                _number(peak, 4),
            ]
        )
    return rows


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; }
.row { display: flex; flex-wrap: wrap; gap: 1em; }
.note { color: #555; font-size: 0.9em; }
"""


def render(store: Store) -> str:
    """The report's HTML for the benchmark run held by ``store``."""
    config = stored_config(store)
    finals = store.trials(phase="final")
    summaries = score.summarize(finals)
    picks = chosen(config, store) if config is not None else {}
    workloads = sorted({r["workload"] for r in finals})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>optzoo bench</title>"
        f"<style>{_STYLE}</style></head><body><h1>optzoo bench</h1>"
    ]
    parts.append(_intro(config, store, finals))
    parts.append("<h2>Summary</h2>" + _table(SUMMARY_HEADER, summary_rows(summaries)))
    if summaries:
        parts.append("<h2>Performance profiles</h2><div class='row'>")
        parts.append(_img(profile_plot(summaries, "median_steps"), "profile (steps)"))
        parts.append(_img(profile_plot(summaries, "median_time"), "profile (time)") + "</div>")
    for workload in workloads:
        records = [r for r in finals if r["workload"] == workload]
        target = records[0]["target"] if records else None
        parts.append(
            f"<h2>{html.escape(workload)}</h2><p class='note'>target: "
            f"{_number(target, 4)} (eval metric &le; target)</p><div class='row'>"
        )
        parts.append(_img(curves_plot(store, records, "step", target), f"{workload} vs steps"))
        parts.append(_img(curves_plot(store, records, "wall_s", target), f"{workload} vs time"))
        tuning = store.trials(phase="tune", workload=workload)
        sensitivity = sensitivity_plot(tuning, target)
        if sensitivity is not None:
            parts.append(_img(sensitivity, f"{workload} learning-rate sensitivity"))
        parts.append("</div>" + _table(WORKLOAD_HEADER, workload_rows(summaries, workload, picks)))
    parts.append("</body></html>")
    return "\n".join(parts)


def _intro(config: BenchConfig | None, store: Store, finals: Sequence[Mapping[str, Any]]) -> str:
    loads = [r["load_end"] for r in finals if r["load_end"] is not None]
    cores = max((r["cpu_count"] or 0 for r in finals), default=0)
    lines = [f"store: {html.escape(str(store.path))}; {len(store)} trials"]
    if config is not None:
        lines.append(
            f"suite {config.suite}; tuning: {config.tuning_budget} configurations per algorithm "
            f"and workload on seed {config.tuning_seed}, warm-up + cosine schedule; final seeds "
            f"{list(config.seeds)} (paired: same initialisation and batch order for everyone)"
        )
    if loads and cores and contended(max(loads), cores):
        lines.append(
            f"<b>the machine was contended</b> (load average up to {max(loads):.1f} on {cores} "
            "cores): wall times are inflated; steps to target are not"
        )
    lines.append(
        "score: AlgoPerf performance profile of median steps to target (ratio to the best "
        "algorithm, above 4x a miss) integrated over tau in [1, 4] and normalised; 1 = fastest "
        "on every workload it ran"
    )
    return "".join(f"<p class='note'>{line}</p>" for line in lines)


def write_report(folder: str | Path) -> Path:
    """Rebuild ``folder/report.html`` from ``folder``'s store; return its path."""
    folder = Path(folder)
    if not (folder / "bench.sqlite").exists():
        raise ValueError(f"{folder} holds no benchmark store (bench.sqlite); run `optzoo bench`")
    with Store(folder) as store:
        text = render(store)
    path = folder / REPORT_FILENAME
    path.write_text(text, encoding="utf-8")
    return path
