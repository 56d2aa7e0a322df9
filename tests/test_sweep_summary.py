"""A sweep's summary without builds: pareto.png's layout checked on its figure (numbered front
labels that overlap nothing, a log axis where values span a decade, a front of more than two
objectives never joined, the legend off the axes), the summary line's status words, and an
optimizing sweep with no feasible trial. The rows are those of the README's optimizing sweep
as measured here (22 trials; calibration 16, evaluation 32 samples)."""

from __future__ import annotations

import json

import pytest

from ethosu_build.sweep import front as sweep_front
from ethosu_build.sweep import plot as sweep_plot
from ethosu_build.sweep import summary as sweep

OBJECTIVE = [["inference_ms", "min"], ["sram_kib", "min"], ["sqnr_db", "max"]]
# job: target, scheme, lowering, status, inference ms, SRAM KiB, SQNR dB, budget violation
MEASURED = {
    0: ("ethos-u85-512", "a16w8", "default", "built", 0.005525, 29.66, 30.56, None),
    1: ("ethos-u65-512", "a16w8", "default", "built", 0.01016, 384, 30.56, None),
    2: ("ethos-u85-512", "a16w8", "fast", "built", 0.005525, 29.66, 30.56, None),
    3: ("ethos-u85-256", "int8", "default", "built", 0.006163, 27.04, 29.39, None),
    4: ("ethos-u85-2048", "a16w8", "fast", "built", 0.003047, 30.83, 30.56, None),
    5: ("ethos-u85-128", "int8", "fast", "built", 0.009051, 27.02, 29.39, None),
    6: ("ethos-u85-2048", "int8", "fast", "built", 0.001853, 27.79, 29.39, None),
    7: ("ethos-u65-256", "int8", "fast", "built", 0.01165, 384, 29.39, None),
    8: ("ethos-u85-2048", "int8", "default", "built", 0.001853, 27.79, 29.39, None),
    9: ("ethos-u55-256", "a16w8", "fast", "budget", 0.03926, 8.551, 30.56, 0.309),
    10: ("ethos-u85-1024", "int8", "fast", "built", 0.00226, 27.13, 29.39, None),
    11: ("ethos-u85-1024", "a16w8", "fast", "built", 0.003732, 30.16, 30.56, None),
    12: ("ethos-u55-64", "a16w8", "fast", "budget", 0.06147, 13.39, 30.56, 1.049),
    13: ("ethos-u55-128", "int8", "fast", "budget", 0.04134, 5.488, 29.39, 0.378),
    14: ("ethos-u85-1024", "int8", "default", "built", 0.00226, 27.13, 29.39, None),
    15: ("ethos-u65-256", "a16w8", "default", "built", 0.01408, 384, 30.56, None),
    16: ("ethos-u85-1024", "a16w8", "default", "built", 0.003732, 30.16, 30.56, None),
    17: ("ethos-u55-32", "int8", "fast", "budget", 0.06595, 11.05, 29.39, 1.198),
    18: ("ethos-u85-256", "int8", "fast", "built", 0.006163, 27.04, 29.39, None),
    19: ("ethos-u65-512", "int8", "fast", "built", 0.00789, 384, 29.39, None),
    20: ("ethos-u85-128", "a16w8", "fast", "built", 0.01346, 30.05, 30.56, None),
    21: ("ethos-u55-256", "int8", "fast", "budget", 0.03994, 5.488, 29.39, 0.331),
}


def _rows(objective=OBJECTIVE, only=None) -> list[dict]:
    rows = []
    for job, (target, scheme, lowering, status, ms, sram, sqnr, over) in MEASURED.items():
        if only is not None and status not in only:
            continue
        values = {"inference_ms": ms, "sram_kib": sram, "sqnr_db": sqnr}
        rows.append(
            {
                "job": str(job),
                "status": status,
                "overrides": ["budget.max_inference_ms=0.03", f"target={target}", f"quantization={scheme}",
                              f"lowering={lowering}"],
                "inference_ms": ms,
                "sram_kib": sram,
                "sqnr_db": sqnr,
                "objective": [values[n] for n, _ in objective],
                "violations": {"max_inference_ms": over if over is not None else -0.5},
                "error": "budget breached, nothing stored" if over else "",
            }
        )  # fmt: skip
    return rows


def _drawn(chart):
    """The figure, its axes, the front's number labels and their boxes in pixels."""
    fig = sweep_plot.figure(chart)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text().replace(",", "").isdigit()]
    return fig, ax, labels, [t.get_window_extent(renderer) for t in labels], renderer


def _disjoint(a, b) -> bool:
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def test_a_three_objective_front_is_numbered_apart_on_log_axes_and_never_joined():
    import matplotlib.pyplot as plt

    rows = _rows()
    best = sweep_front.objective_front(rows, OBJECTIVE)
    assert len(best) == 12  # the README's front: 12 points, in 6 pairs that measure the same
    chart = sweep_plot.objective_chart(rows, best, {"objective": OBJECTIVE})
    fig, ax, labels, boxes, renderer = _drawn(chart)
    try:
        # every front point is numbered once (equal points share a label), no label overlaps
        # another or covers a marker, and each stays inside the axes
        numbers = sorted(int(n) for t in labels for n in t.get_text().split(","))
        assert numbers == list(range(1, 13))
        assert all(_disjoint(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        frame = ax.get_window_extent(renderer)
        for box in boxes:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            for x, y in ax.transData.transform(chart.points + chart.over):
                assert not (box.x0 < x < box.x1 and box.y0 < y < box.y1), (box, x, y)
        # U65's 384 KiB arena beside 27 KiB programs, and 0.0019 ms beside 0.066 ms: log axes
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        # three objectives: no line joins the front, and the caption says what the front is
        assert not [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
        caption = " ".join(t.get_text() for t in fig.texts)
        assert "all 3 objectives" in caption and "not joined" in caption
        # the legend hides no point: it is outside the axes
        assert _disjoint(ax.get_legend().get_window_extent(renderer), frame)
        # the table: a header and one line per number, naming its job and its overrides
        assert len(chart.table) == 13
        for k, row in enumerate(best, 1):
            line = chart.table[k]
            assert line.split()[:2] == [str(k), row["job"]] and row["overrides"][1] in line
            assert "budget.max_inference_ms" not in line  # shared by every row: it tells nothing apart
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kind", ["two objectives", "grid"])
def test_a_two_dimensional_front_is_joined_and_numbered_apart(kind):
    import matplotlib.pyplot as plt

    if kind == "grid":
        chart = sweep_plot.grid_chart(_rows(only=sweep.OK))
    else:
        pairs = OBJECTIVE[:2]
        rows = _rows(pairs)
        chart = sweep_plot.objective_chart(rows, sweep_front.objective_front(rows, pairs), {"objective": pairs})
    fig, ax, labels, boxes, _ = _drawn(chart)
    try:
        assert chart.join and [line for line in ax.get_lines() if len(line.get_xdata()) == len(chart.front)]
        assert sorted(int(n) for t in labels for n in t.get_text().split(",")) == list(range(1, len(chart.front) + 1))
        assert all(_disjoint(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    finally:
        plt.close(fig)


def test_the_summary_line_says_up_to_date_for_up_to_date_jobs(tmp_path):
    rows = [{"status": "up_to_date"}] * 3 + [{"status": "built"}, {"status": "reused"}, {"status": "failed"}]
    line = sweep.Summary(tmp_path, rows, planned=6).line()
    assert line == "5 of 6 job(s) done (1 built, 1 reused, 3 up to date), 1 failed"
    assert sweep.Summary(tmp_path, [{"status": "up_to_date"}] * 2).line() == "2 job(s) done (2 up to date), 0 failed"


def _optimizing_sweep_dir(folder, rows):
    for row in rows:
        (folder / row["job"]).mkdir(parents=True)
        (folder / row["job"] / "result.json").write_text(json.dumps(row))
    trials = [{"state": "infeasible", "job": r["job"], "repeat_of": None} for r in rows]
    plan = {"objective": OBJECTIVE, "trials": trials, "space": {}, "sampler": "tpe", "seed": 0}
    (folder / "sweep.json").write_text(json.dumps({"optimize": plan}))


def test_an_optimizing_sweep_with_no_feasible_trial_says_so_and_names_the_closest(tmp_path, capsys):
    from ethosu_build import app

    _optimizing_sweep_dir(tmp_path, _rows(only=("budget",)))
    summary = sweep.summarize(tmp_path)
    assert summary.front == [] and not (tmp_path / "recipe").exists()
    expected = "no trial met the budgets (5 over a budget): no Pareto front, and no recipe was written"
    # the overrides that tell it apart (all five are lowering=fast)
    closest = "closest: job 9 (target=ethos-u55-256 quantization=a16w8), budget.max_inference_ms over by 31%"
    assert expected in (tmp_path / "summary.md").read_text() and closest in (tmp_path / "summary.md").read_text()
    chart = sweep_plot.objective_chart(summary.rows, summary.front, summary.optimize)
    assert chart.caption.startswith("No feasible trial") and chart.front == [] and chart.table == []
    with pytest.raises(SystemExit) as exit_:
        app._exit_for_sweep("ethosu-build", summary)
    err = capsys.readouterr().err
    assert exit_.value.code == 3  # every trial over a budget, as a grid sweep would exit
    assert expected in err and closest in err and "recipes in" not in err
