"""pareto.png of a sweep's summary: what it shows (`Chart`, made from the result rows) and
how it is drawn (`figure`, `png`).

The front's points are numbered, and a table under the axes says what each number is: the
overrides that set a point apart are long, and written beside their points they overlap as
soon as a front is dense (an optimizing sweep's front comes in pairs that measure the same).
A front of more than two objectives is drawn on its first two without a line: joined, it
would read as a two-dimensional front, and some of its points look beaten in the drawing by
points they beat on another objective. matplotlib is imported by `figure` only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from ..errors import OK_STATUSES as OK
from ..files import pareto_front

# An axis turns logarithmic when its largest value is this many times its smallest: an
# Ethos-U65's 384 KiB SRAM arena beside 27 KiB programs, or U55-32 latencies beside U85-2048
# ones, would otherwise squeeze every other point into a band.
LOG_RATIO = 10.0
FRONT, FEASIBLE, OVER = "#d1495b", "#9aa5b1", "#e0a458"
DPI = 110


@dataclass
class Chart:
    """What pareto.png shows, in data terms (so tests can check it without reading pixels)."""

    xlabel: str
    ylabel: str
    caption: str  # what the front is, in words, above the axes
    points: list[tuple[float, float]]  # every feasible configuration, the front's included
    over: list[tuple[float, float]]  # measured but over a budget (optimizing sweeps)
    front: list[tuple[float, float]]  # numbered 1, 2, ... in this order
    table: list[str]  # a header and one line per front point, in the same order
    join: bool  # the front is two-dimensional, so joining it says something true

    def log_x(self) -> bool:
        return log_scale([x for x, _ in self.points + self.over])

    def log_y(self) -> bool:
        return log_scale([y for _, y in self.points + self.over])


def log_scale(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) >= LOG_RATIO * min(values)


# --- the data: which rows, which front, what each is called -----------------------------------


def quality_axis(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Top-1 accuracy when every built row has labels to measure it, else SQNR."""
    done = [r for r in rows if r["status"] in OK]
    if not done:
        return None
    if all(r.get("quantized_top1") is not None for r in done):
        return "quantized_top1", "quantized top-1 (%)"
    if all(r.get("sqnr_db") is not None for r in done):
        return "sqnr_db", "SQNR vs float (dB)"
    return None


def front(rows: list[dict[str, Any]], quality: str) -> list[dict[str, Any]]:
    """Rows no other row beats on both inference time (lower) and quality (higher)."""
    done = [r for r in rows if r["status"] in OK]
    return pareto_front(done, [(lambda r: r.get("inference_ms"), "min"), (lambda r: r.get(quality), "max")])


def labels(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Each row's overrides without those every row shares (they tell the points apart)."""
    common = set.intersection(*(set(r.get("overrides") or []) for r in rows)) if rows else set()
    return {id(r): " ".join(o for o in r.get("overrides") or [] if o not in common) or r.get("job", "") for r in rows}


def _table(best: list[dict[str, Any]], names: list[str], values, label: dict[int, str]) -> list[str]:
    """' #  job  overrides  name value ...', aligned, one line per front row."""
    width = max([len("overrides")] + [len(label[id(r)]) for r in best])
    jobs = max([3] + [len(str(r.get("job", ""))) for r in best])
    lines = [f"{'#':>2}  {'job':<{jobs}}  {'overrides':<{width}}  " + "  ".join(names)]
    for k, r in enumerate(best, 1):
        cells = "  ".join(f"{v:<{len(n)}.4g}" for n, v in zip(names, values(r)))
        lines.append(f"{k:>2}  {str(r.get('job', '')):<{jobs}}  {label[id(r)]:<{width}}  {cells}")
    return lines


def grid_chart(rows: list[dict[str, Any]]) -> Chart | None:
    """A grid sweep: quality against Vela's inference time, the front (a 2-D one) joined."""
    axis = quality_axis(rows)
    if axis is None:
        return None
    quality, name = axis
    pts = [r for r in rows if r["status"] in OK and r.get("inference_ms") is not None and r.get(quality) is not None]
    if not pts:
        return None
    best = front(rows, quality)
    return Chart(
        xlabel="Vela estimated inference time (ms)",
        ylabel=name,
        caption="Red, numbered and joined: the Pareto front, the configurations no other is both faster and better "
        "than; the table below says what each number is (summary.md marks them *).",
        points=[(r["inference_ms"], r[quality]) for r in pts],
        over=[],
        front=[(r["inference_ms"], r[quality]) for r in best],
        table=_table(best, ["inference_ms", quality], lambda r: [r["inference_ms"], r[quality]], labels(pts)),
        join=True,
    )


def objective_chart(rows: list[dict[str, Any]], best: list[dict[str, Any]], plan: dict[str, Any]) -> Chart | None:
    """An optimizing sweep: its first two objectives (one: against the job number), feasible
    points, those over a budget, and its front numbered as its recipes are (NAME_front<k>)."""
    pairs = plan["objective"]

    def complete(r: dict[str, Any]) -> bool:
        v = r.get("objective")
        return isinstance(v, list) and len(v) == len(pairs) and None not in v

    measured = [r for r in rows if complete(r)]
    if not measured:
        return None

    def xy(r: dict[str, Any]) -> tuple[float, float]:
        v = r["objective"]
        return (v[0], v[1]) if len(pairs) > 1 else (_job_number(r), v[0])

    names = [f"{n} ({d})" for n, d in pairs]
    best = [r for r in best if complete(r)]
    if len(pairs) > 2:
        caption = (
            f"Red, numbered: the Pareto front, the feasible trials no other beats on all {len(pairs)} objectives "
            f"({', '.join(names)}). Drawn on the first two only and not joined: a front point may look beaten "
            f"here by one it beats on {', '.join(n for n, _ in pairs[2:])}."
        )
    elif len(pairs) == 2:
        caption = "Red, numbered and joined: the Pareto front, the feasible trials no other beats on both objectives."
    else:
        caption = "Red, numbered: the best feasible trial(s) on the objective."
    caption += " The numbers are the recipes' (NAME_front<k>); the table below says what each is."
    if not best:  # every trial over a budget or rejected (front.no_front)
        caption = "No feasible trial (each over a budget or rejected): no Pareto front, and no recipe was written."
    return Chart(
        xlabel=names[0] if len(pairs) > 1 else "job",
        ylabel=names[1] if len(pairs) > 1 else names[0],
        caption=caption,
        points=[xy(r) for r in measured if r["status"] in OK],
        over=[xy(r) for r in measured if r["status"] not in OK],
        front=[xy(r) for r in best],
        table=_table(best, [n for n, _ in pairs], lambda r: r["objective"], labels(measured)) if best else [],
        join=len(pairs) == 2,
    )


def _job_number(row: dict[str, Any]) -> int:
    job = str(row.get("job", ""))
    return int(job) if job.isdigit() else 0


# --- the drawing ------------------------------------------------------------------------------

# Where a front number may go, in points from its marker, tried in this order: close first,
# then further out with a leader line.
_OFFSETS = [
    (dx * r, dy * r)
    for r in (1.0, 2.2, 3.6, 5.2)
    for dx, dy in ((5, 4), (5, -4), (-5, 4), (-5, -4), (0, 6), (0, -6), (7, 0), (-7, 0))
]


def figure(chart: Chart):
    """The matplotlib figure of `chart`: caption, legend and axes, the front's numbers placed
    where they overlap nothing, and the table under the axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    line_h = 7.4 / 72 * 1.25  # inches per line of 7-pt text
    table_h = line_h * len(chart.table) + 0.15
    top_h, axes_h, bottom_h = 0.95, 3.4, 0.55  # caption + legend; the axes; tick labels and x label
    width, height = 8.5, top_h + axes_h + bottom_h + table_h
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0.85 / width, (bottom_h + table_h) / height, (width - 1.1) / width, axes_h / height))
    if chart.points:
        ax.scatter(*zip(*chart.points), color=FEASIBLE, marker="o", zorder=2, label="feasible configuration")
    if chart.over:
        ax.scatter(*zip(*chart.over), color=OVER, marker="x", zorder=2, label="over a budget")
    if chart.front:
        style = {"color": FRONT, "zorder": 3, "label": "Pareto front (numbered)"}
        if chart.join:
            ax.plot(*zip(*sorted(chart.front)), "-o", **style)
        else:
            ax.scatter(*zip(*chart.front), marker="o", **style)
    ax.set_xscale("log" if chart.log_x() else "linear")
    ax.set_yscale("log" if chart.log_y() else "linear")
    for axis, log in ((ax.xaxis, chart.log_x()), (ax.yaxis, chart.log_y())):
        if log:  # plain numbers at every labelled tick, not 10^k
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_label))
    ax.set_xlabel(chart.xlabel)
    ax.set_ylabel(chart.ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.margins(0.08)
    # Above the axes, so that it never hides a point.
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=3, fontsize=8, frameon=False, borderaxespad=0)
    fig.text(0.1 / width, 1 - 0.08 / height, chart.caption, fontsize=8, va="top", wrap=True)
    place_numbers(fig, ax, chart)
    fig.text(0.85 / width, (table_h - 0.05) / height, "\n".join(chart.table), family="monospace", fontsize=7,
             va="top")  # fmt: skip
    return fig


def _minor_label(value: float, _pos) -> str:
    """Label 2x and 5x minor ticks on a log axis that spans little more than a decade."""
    mantissa = value / 10 ** int(f"{value:e}".split("e")[1])
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def place_numbers(fig, ax, chart: Chart) -> list:
    """Number the front's points (equal points share one label, '3,8'), each label at the
    first offset where it overlaps no label placed before, no marker and nothing outside
    the axes; failing all, where it overlaps least. Returns the labels."""
    fig.canvas.draw()  # final axes limits and a renderer for text extents
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 5  # pixels around a marker's centre
    markers = [ax.transData.transform(p) for p in chart.points + chart.over + chart.front]
    taken = [(x - r, y - r, x + r, y + r) for x, y in markers]
    groups: dict[tuple[float, float], list[int]] = {}
    for k, p in enumerate(chart.front, 1):
        groups.setdefault(p, []).append(k)
    placed = []
    for p, numbers in groups.items():
        best, best_cost = None, None
        for dx, dy in _OFFSETS:
            label = ax.annotate(
                ",".join(map(str, numbers)),
                p,
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                color=FRONT,
                fontweight="bold",
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops={"arrowstyle": "-", "color": FRONT, "lw": 0.5} if abs(dx) + abs(dy) > 12 else None,
                zorder=4,
            )
            e = label.get_window_extent(renderer)
            box = (e.x0, e.y0, e.x1, e.y1)
            cost = sum(_overlap(box, t) for t in taken) + _outside(box, (frame.x0, frame.y0, frame.x1, frame.y1))
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (label, box), cost
            else:
                label.remove()
            if cost == 0:
                break
        taken.append(best[1])
        placed.append(best[0])
    return placed


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box, frame) -> float:
    area = (box[2] - box[0]) * (box[3] - box[1])
    return area - _overlap(box, frame)


def png(chart: Chart) -> bytes:
    fig = figure(chart)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
