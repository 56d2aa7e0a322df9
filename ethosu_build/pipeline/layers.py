"""Where the accuracy goes: a per-layer table of the PT2E quantized model against the float one
(`ethosu-artifacts layers ID`, docs/measurements.md "Per layer").

Every activation the quantizer quantizes (a quantize -> dequantize pair in the converted
graph) is a point. At each point, on the evaluation samples:

- accumulated SQNR: the quantized model's value there against the float model's (the error
  of everything before it);
- local SQNR: the point's own quantization: the float model's value there, quantized and
  dequantized with the point's scale and zero point (rounding and clipping, nothing before it).
  What the layer's weights add is the weights column; what the layer's arithmetic on quantized
  inputs adds shows in the accumulated drop of the points after it;
- rmse/scale: that error's RMS in units of the point's scale (about 0.289 where rounding alone
  is the error, as TFLite's QuantizationDebugger notes; more: clipping);
- the share of the 8- or 16-bit codes the float values use, and the share clipped by the
  calibrated range;
- for a convolution or linear layer feeding it, its weights' worst per-channel SQNR (a batch
  norm the quantizer folded is folded into the float weights first).

Points are matched to the float program (the export stage's) by node name, which the
quantizer keeps; a node the quantizer folded away (a batch norm) is followed to the float
node that stands for it. Points of nodes the quantizer's own transforms created have no float
counterpart and are counted, not compared. torch is imported inside functions.
"""

from __future__ import annotations

import math
from typing import Any

from ..files import markdown_table
from .fused_qdq import quantize_dequantize

VERSION = 1  # of the table's method: part of the evaluate stage's key when evaluation.per_layer is on
Q = "quantize_per_tensor"
DQ = "dequantize_per_tensor"


def _is(node, name: str) -> bool:
    """A call of quantized_decomposed's `name` with its scale and zero point as numbers (the
    .default overload, what PT2E's convert writes); other overloads are not points."""
    return node.op == "call_function" and getattr(node.target, "__name__", "") == f"{name}.default"


def _sqnr(ref, test) -> float:
    ref, test = ref.detach().double(), test.detach().double()
    noise = float(((ref - test) ** 2).sum())
    signal = float((ref**2).sum())
    return math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)


def _capture(module, args) -> dict[str, Any]:
    """Every node's value of `module` on `args`."""
    import torch

    values: dict[str, Any] = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, n):
            values[n.name] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Capture(module).run(*args)
    return values


def _path(node) -> str:
    """The innermost module of a node (nn_module_stack), or ""."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _same_origin(f, q) -> bool:
    """The same op, traced from the same source line, module path and torch function: a name
    alone may be reused by the quantizer's transforms."""

    def origin(n) -> tuple:
        stack = n.meta.get("nn_module_stack") or {}
        return n.target, n.meta.get("stack_trace"), tuple(v[0] for v in stack.values()), n.meta.get("torch_fn")

    return origin(f) == origin(q)


def _float_twin(fnodes: dict[str, Any], name: str, qnames: set[str]) -> str | None:
    """The float node that stands for quantized node `name`: itself, followed through the
    single-user nodes the quantizer folded away (conv2d -> batch_norm)."""
    node = fnodes.get(name)
    if node is None:
        return None
    while len(node.users) == 1 and next(iter(node.users)).name not in qnames:
        nxt = next(iter(node.users))
        if nxt.op != "call_function":
            break
        node = nxt
    return node.name


def _module(node) -> str:
    """The module a point belongs to: its node's, or for a functional op in a parent's forward
    (torch.relu after a conv), the nearest producing op's that has one."""
    while (
        node is not None
        and hasattr(node, "meta")
        and node.op == "call_function"
        and not (_is(node, Q) or _is(node, DQ))
    ):
        if _path(node):
            return _path(node)
        node = node.args[0] if node.args and hasattr(node.args[0], "op") else None
    return ""


def _weight_sqnr(qnode, fnodes: dict[str, Any], fvals: dict[str, Any], qvals: dict[str, Any]) -> float | None:
    """The worst per-output-channel SQNR of the weights of the conv/linear that feeds `qnode`'s
    input chain, against the float weights (a folded batch norm folded in)."""
    import torch

    op = qnode
    while op is not None and op.op == "call_function" and not any(k in str(op.target) for k in ("conv", "linear")):
        if _is(op, DQ) or _is(op, Q):
            return None  # its weights belong to an earlier point
        op = op.args[0] if op.args and hasattr(op.args[0], "op") else None
    if op is None or op.op != "call_function" or op.name not in fnodes or len(op.args) < 2:
        return None
    fop = fnodes[op.name]
    w_q, w_f = qvals.get(op.args[1].name), fvals.get(getattr(fop.args[1], "name", None))
    if w_q is None or w_f is None or w_q.shape != w_f.shape:
        return None
    user = next(iter(fop.users)) if len(fop.users) == 1 else None
    if user is not None and "batch_norm" in str(user.target):  # folded by the quantizer: fold it here too
        args = user.args
        gamma, var = (
            (fvals.get(getattr(a, "name", None)) for a in (args[1], args[4])) if len(args) > 4 else (None, None)
        )
        eps = args[-1] if isinstance(args[-1], float) else 1e-5
        if gamma is not None and var is not None:
            w_f = w_f * (gamma / torch.sqrt(var + eps)).reshape(-1, *([1] * (w_f.dim() - 1)))
    worst = min(_sqnr(w_f[c], w_q[c]) for c in range(w_f.shape[0]))
    return round(worst, 3)


def diagnose(float_program, quantized_program, batches, samples: int) -> dict[str, Any]:
    """The per-layer table on `batches` (argument tuples, one per forward call) of `samples`
    samples in all."""
    import torch

    fmod, qmod = float_program.module(), quantized_program.module()
    fnodes = {n.name: n for n in fmod.graph.nodes}
    qnodes = {n.name: n for n in qmod.graph.nodes}
    qnames = set(qnodes)
    points = [n for n in qmod.graph.nodes if _is(n, Q) and hasattr(n.args[0], "name")]
    acc: dict[str, list] = {n.name: [[], []] for n in points}  # float and quantized values
    for args in batches:
        fvals = _capture(fmod, args)
        qvals = _capture(qmod, args)
        twins = {p.args[0].name: _float_twin(fnodes, p.args[0].name, qnames) for p in points}
        # A twin counts only where it is the same op with a tensor of the same shape: the
        # quantizer's transforms may reuse a name for another node.
        twins = {
            name: t
            for name, t in twins.items()
            if t is not None
            and _same_origin(fnodes[name], qnodes[name])
            and isinstance(fvals.get(t), torch.Tensor)
            and isinstance(qvals.get(name), torch.Tensor)
            and fvals[t].shape == qvals[name].shape
        }
        for p in points:
            twin = twins.get(p.args[0].name)
            dq = next((u for u in p.users if _is(u, DQ)), None)
            if twin is None or dq is None:
                continue
            acc[p.name][0].append(fvals[twin].detach().flatten())
            acc[p.name][1].append(qvals[dq.name].detach().flatten())
    weights_from = (fvals, qvals) if batches else ({}, {})
    rows, previous = [], {}
    for p in points:
        f, q = (torch.cat(v) if v else None for v in acc[p.name])
        source = p.args[0]
        if f is None:
            continue
        scale, zp, qmin, qmax = (float(p.args[1]), int(p.args[2]), int(p.args[3]), int(p.args[4]))
        local = quantize_dequantize(f, *p.args[1:6])  # the point's own quantization of the float value
        codes = torch.round(f * (1.0 / scale)) + zp
        clipped = float(((codes < qmin) | (codes > qmax)).double().mean())
        used = int(torch.unique(codes.clamp(qmin, qmax)).numel())
        accumulated = _sqnr(f, q)
        before = [previous[a.name] for a in _inputs_of(source) if a.name in previous]
        rows.append(
            {
                "point": source.name,
                "op": str(getattr(source.target, "__name__", source.target)).split(".")[0]
                if source.op != "placeholder"
                else "input",
                "module": _module(source) if source.op == "call_function" else "(input)",
                "bits": 16 if qmax - qmin > 255 else 8,
                "scale": scale,
                "accumulated_sqnr_db": round(accumulated, 3),
                "drop_db": round(min(before) - accumulated, 3) if before else 0.0,
                "local_sqnr_db": round(_sqnr(f, local), 3),
                "rmse_per_scale": round(float(torch.sqrt(((local - f).double() ** 2).mean())) / scale, 4),
                "codes_used": round(used / (qmax - qmin + 1), 4),
                "clipped": round(clipped, 6),
                "weight_worst_channel_sqnr_db": _weight_sqnr(source, fnodes, *weights_from),
                # the modules whose ops compute the point and read it: what a fix selects (search/fixes.py)
                "computed_in": _leaf_modules(_producers(source)),
                "read_by": _leaf_modules(u for d in p.users if _is(d, DQ) for u in d.users),
            }
        )
        previous[source.name] = accumulated
    return {"samples": samples, "points": len(points), "compared": len(rows), "layers": rows}


def _producers(node) -> list:
    """The ops that compute a point: its node and, back through its inputs, every op up to the
    dequantize nodes of the points it reads."""
    out, todo, seen = [], [node], set()
    while todo:
        a = todo.pop()
        if not hasattr(a, "op") or a.name in seen or a.op != "call_function" or _is(a, DQ) or _is(a, Q):
            continue
        seen.add(a.name)
        out.append(a)
        todo += [x for x in a.args if hasattr(x, "op")]
    return out


def _leaf_modules(nodes) -> list[str]:
    """The innermost module of each node (nn_module_stack), in order, once each."""
    out: list[str] = []
    for n in nodes:
        if _path(n) and _path(n) not in out:
            out.append(_path(n))
    return out


def _inputs_of(node) -> list:
    """The quantized points a node's value is computed from: back through its inputs to the
    dequantize nodes that read a point (a quantize node), whose input is the point."""
    out, todo, seen = [], list(node.args), set()
    while todo:
        a = todo.pop()
        if isinstance(a, (list, tuple)):
            todo += list(a)
            continue
        if not hasattr(a, "op") or a.name in seen or a.op != "call_function":
            continue
        seen.add(a.name)
        if _is(a, DQ) and hasattr(a.args[0], "op") and _is(a.args[0], Q):
            out.append(a.args[0].args[0])
        elif not _is(a, DQ):
            todo += list(a.args)
    return out


def worst(d: dict[str, Any], n: int = 5) -> dict[str, list[dict[str, Any]]]:
    """The sorted views: where the accumulated SQNR falls most, and the largest local errors."""
    rows = [r for r in d["layers"] if math.isfinite(r["accumulated_sqnr_db"])]
    return {
        "largest_drops": sorted(rows, key=lambda r: -r["drop_db"])[:n],
        "largest_local_errors": sorted(d["layers"], key=lambda r: r["local_sqnr_db"])[:n],
    }


# --- shown ------------------------------------------------------------------------------


def report_section(d: dict[str, Any] | None, plotted: bool = False) -> list[str]:
    if not d:
        return []
    cols = ["point", "module", "bits", "accumulated SQNR dB", "drop dB", "local SQNR dB", "rmse/scale",
            "codes used", "clipped", "weights' worst channel SQNR dB"]  # fmt: skip
    keys = ["point", "module", "bits", "accumulated_sqnr_db", "drop_db", "local_sqnr_db", "rmse_per_scale",
            "codes_used", "clipped", "weight_worst_channel_sqnr_db"]  # fmt: skip
    views = worst(d)
    out = [
        "",
        f"## Per layer ({d['samples']} evaluation samples; {d['compared']} of {d['points']} quantized points compared)",
        "",
        markdown_table(cols, [[r[k] for k in keys] for r in d["layers"]]),
        "",
        "Where the accumulated SQNR falls most: "
        + ", ".join(f"`{r['point']}` ({r['module'] or '-'}, -{r['drop_db']} dB)" for r in views["largest_drops"]),
        "",
        "Largest local errors: "
        + ", ".join(
            f"`{r['point']}` ({r['module'] or '-'}, {r['local_sqnr_db']} dB)" for r in views["largest_local_errors"]
        ),
    ]
    if plotted:
        out += ["", "![accumulated and local SQNR along the network](layers.png)"]
    return out + ["", "`ethosu-artifacts layers ID --fixes N` measures the quantizer's fixes for the worst, priced."]


def plot(d: dict[str, Any], path) -> None:
    """Accumulated and local SQNR along the network, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = d["layers"]
    x = range(len(rows))
    clip = lambda v: v if math.isfinite(v) else 100.0  # noqa: E731  (an exact point plots at the top)
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.35), 4))
    ax.plot(x, [clip(r["accumulated_sqnr_db"]) for r in rows], marker="o", label="accumulated SQNR")
    ax.plot(x, [clip(r["local_sqnr_db"]) for r in rows], marker="x", linestyle="--", label="local SQNR")
    ax.set_xticks(list(x), [r["point"] for r in rows], rotation=70, fontsize=7)
    ax.set_ylabel("dB")
    ax.set_title(f"Per layer: quantized vs float ({d['samples']} samples)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- a stored artifact ------------------------------------------------------------------


def of_stages(cfg, stages: dict[str, Any], samples) -> dict[str, Any]:
    """The per-layer table of a stored artifact: its config, its export and quantize results
    (stored_stages) and its evaluation samples (evaluation_samples)."""
    from .. import numerics

    with numerics.numeric_stage():
        return on_samples(stages["export"], stages["quantize"], samples, cfg.evaluation.batch_size)


def stored_stages(m: dict[str, Any], root) -> tuple[Any, dict[str, Any]]:
    """A checked artifact's config and its export and quantize results, from the stage cache
    under `root` (UsageError if the cache no longer holds them: nothing is rebuilt)."""
    from ..config.schema import BuildConfig
    from ..config.validate import convert
    from ..errors import ConfigIssue, UsageError
    from ..store.cache import StageCache
    from .export import Exported
    from .quantize import Quantized

    issues: list = []
    cfg = convert(BuildConfig, m["config"], "", issues)
    if issues or not isinstance(m.get("stage_keys"), dict):
        raise UsageError(
            ConfigIssue("ID", f"{m['name']}/v{m['version']}: its manifest's config or stage keys do not read")
        )
    cache = StageCache(root)
    results = {}
    for stage, result in (("export", Exported), ("quantize", Quantized)):
        entry = cache.get(m["stage_keys"][stage])
        if entry is None:
            raise UsageError(
                ConfigIssue(
                    "ID",
                    f"{m['name']}/v{m['version']}: the stage cache under {root} holds no {stage} entry for it "
                    "(another store's artifact, or its cache was removed); rebuild it here and run again",
                )
            )
        results[stage] = result.load(entry)
    return cfg, results


def evaluation_samples(cfg, limit: int | None = None):
    """The build's evaluation samples, or the first `limit` of them."""
    from .. import data

    ev = cfg.evaluation
    dataset = data.instantiate(ev.dataset)
    total = ev.num_samples or len(dataset)  # null: the whole dataset, as the build took it (stage.py)
    return data.take(dataset, min(limit or total, total), cfg.model.input_specs(), "evaluation.dataset", ev.seed)


def on_samples(exported, quantized, samples, batch: int) -> dict[str, Any]:
    """The table for an export and a quantize stage's results (export.py, quantize.py): in
    batches on their batch-dynamic programs, or one sample at a time if a batch fails there."""
    if exported.dynamic is not None and quantized.batched is not None:
        try:
            batched = [tuple(c) for c in samples.chunks(batch)]
            return diagnose(exported.dynamic, quantized.batched, batched, len(samples))
        except Exception:  # noqa: BLE001  (the batch-1 programs below are what the build itself falls back to)
            pass
    return diagnose(exported.static, quantized.program, [tuple(c) for c in samples.chunks(1)], len(samples))
