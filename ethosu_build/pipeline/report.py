"""report.md: one artifact in human terms. `ethosu-artifacts show` renders the same Markdown
in the terminal, so there is one description of an artifact, not two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import markdown_table
from . import vela


def _lowering(low: dict[str, Any] | None) -> str:
    if not low:  # an artifact from before the lowering options
        return "nchw IO"
    names = sorted({r["rewrite"] for r in low["rewrites"]})
    text = f"{low['io_layout']} IO" + (f"; rewrites: {', '.join(names)} ({len(low['rewrites'])} ops)" if names else "")
    unmatched = low.get("unmatched") or []
    return text + (f"; found nothing to rewrite: {', '.join(unmatched)}" if unmatched else "")


def render(m: dict[str, Any], vela_dir: Path) -> str:
    cfg, q, d = m["config"], m["quantization"], m["delegation"]
    t = cfg["target"]
    metrics = m.get("metrics", {})
    v, acc, tosa = metrics.get("vela", {}), metrics.get("accuracy", {}), metrics.get("tosa_check", {})
    total = v.get("total", {})
    out = [f"# {m['name']}/v{m['version']}", ""]
    if not d["npu_partitions"]:
        out += [
            f"> **Nothing runs on the NPU**: the partitioner delegated no operator; all {d['cpu_op_count']} ops run "
            "on the CPU (see Delegation for its reasons).",
            "",
        ]
    out.append(
        markdown_table(
            ["", ""],
            [
                ["model", f"{cfg['model']['name']} {_inputs(cfg['model'])}"],
                ["target", f"{t['accelerator']} ({t['system_config']}, {t['memory_mode']})"],
                [
                    "quantization",
                    f"{q['scheme']}, {'per-channel' if q['per_channel'] else 'per-tensor'} weights"
                    + (f", {q['io']} IO" if q["io"] else ""),
                ],
                ["lowering", _lowering(m.get("lowering"))],
                ["recipe", m.get("recipe")],
                ["build key", f"`{m['build_key'][:16]}`"],
                [
                    "model.pte",
                    f"{m['files']['model.pte']['size']} bytes, sha256 `{m['files']['model.pte']['sha256'][:16]}`",
                ],
                ["created", m["created"]],
            ],
        )
    )
    qat = q.get("qat")
    if qat:
        out += ["", "## Quantization-aware training", ""]
        out.append(
            markdown_table(
                ["samples", "epochs", "batch", "optimizer", "lr", "loss", "loss, first epoch", "loss, last epoch"],
                [
                    [
                        qat["samples"],
                        qat["epochs"],
                        qat["batch_size"],
                        qat["optimizer"],
                        qat["lr"],
                        qat["loss"],
                        qat["loss_first_epoch"],
                        qat["loss_last_epoch"],
                    ]
                ],
            )
        )
    flow = q.get("control_flow")
    if flow:
        out += ["", "## Control flow", "", "Where it runs: see Delegation.", ""]
        out.append(
            markdown_table(
                ["op", "node", "branch", "submodule", "calibration samples reaching it"],
                [
                    [f["op"], f["node"], b["role"], b["submodule"], flow["samples_per_branch"].get(b["submodule"])]
                    for f in flow["ops"]
                    for b in f["branches"]
                ],
            )
        )
        if flow.get("captured_parameters"):
            out.append(
                f"\nWeights captured by a cond branch ({', '.join(flow['captured_parameters'])}) are quantized at the "
                'activation scale by ExecuTorch 1.5.1 (docs/quantization.md, "Control flow").'
            )
    if q["overrides"]:
        out += ["", "## Overrides (in order; a later one wins)", ""]
        out.append(
            markdown_table(
                ["name", "selector", "scheme", "ops selected"],
                [[o["name"], o["selector"], o["scheme"], o["ops_selected"]] for o in q["overrides"]],
            )
        )
    if total:
        out += ["", "## Performance (Vela estimate)", ""]
        out.append(
            markdown_table(
                [
                    "partition",
                    "cycles",
                    "inference ms",
                    "SRAM KiB",
                    "flash KiB",
                    "DRAM KiB",
                    "scratch bytes",
                    "MACs",
                    "NPU ops",
                ],
                [
                    [
                        p["partition"],
                        p["cycles"],
                        p["inference_ms"],
                        p["sram_kib"],
                        p["on_chip_flash_kib"] + p["off_chip_flash_kib"],
                        p["dram_kib"],
                        p.get("scratch_bytes"),
                        p["macs"],
                        p["npu_ops"],
                    ]
                    for p in v["partitions"]
                ]
                + [
                    [
                        "**total**",
                        total["cycles"],
                        total["inference_ms"],
                        total["sram_kib"],
                        total["flash_kib"],
                        total["dram_kib"],
                        total.get("scratch_bytes"),
                        total["macs"],
                        total["npu_ops"],
                    ]
                ],
            )
        )
        out.append(f"\nClock {total.get('core_clock_hz', 0) / 1e6:g} MHz. Figures of several partitions are summed.")
    out += _memory(m.get("memory"))
    cf = d.get("control_flow", {})
    cf_text = "".join(
        f" Control flow on the {side.upper()}: {', '.join(c['op'] + ' (' + c['node'] + ')' for c in cf[side])}."
        for side in ("npu", "cpu")
        if cf.get(side)
    )
    out += [
        "",
        "## Delegation",
        "",
        f"{d['npu_partitions']} NPU partition(s), {d['npu_ops']} NPU op(s); {d['cpu_op_count']} op(s) on the CPU, "
        f"{d.get('cpu_compute_op_count', '-')} of them compute (not boundary quantize/dequantize).{cf_text}"
        + _mac_share(d, total),
        "",
    ]
    if d["cpu_ops"]:
        out.append(
            markdown_table(
                ["CPU op", "node", "module", "partitioner's reason"],
                [[o["op"], o["node"], o["module"], o.get("reason")] for o in d["cpu_ops"]],
            )
        )
    runtime = d.get("runtime")
    if runtime:
        io = [
            [
                kind,
                x["shape"],
                x.get("layout"),
                x["dtype"],
                (
                    f"{x['quantization']['dtype']} scale {x['quantization']['scale']:.6g} zp "
                    f"{x['quantization']['zero_point']}"
                    if "quantization" in x
                    else "-"
                ),
            ]
            for kind, xs in (("input", runtime["inputs"]), ("output", runtime["outputs"]))
            for x in xs
        ]
        out += [
            "",
            "## Runtime contract",
            "",
            "CPU kernels: " + ", ".join(f"`{k}`" for k in runtime["cpu_kernels"]),
            "",
        ]
        out.append(markdown_table(["", "shape", "layout", "dtype", "quantized at the boundary as"], io))
    if acc:
        out += ["", f"## Accuracy ({acc['samples']} evaluation samples)", ""]
        out.append(
            markdown_table(
                ["float top-1 %", "quantized top-1 %", "drop (points)", "SQNR dB", "cosine", "max abs error"],
                [
                    [
                        acc["float_top1"],
                        acc["quantized_top1"],
                        acc["accuracy_drop"],
                        acc["sqnr_db"],
                        acc["cosine"],
                        acc["max_abs_error"],
                    ]
                ],
            )
        )
    out += _data(m.get("data"))
    if tosa:
        out += ["", "## TOSA reference check", ""]
        if tosa.get("status") == "done":
            out.append(
                "The program as deployed (NPU partitions on the TOSA reference model, with the flatbuffers Vela "
                "compiled; CPU ops in PyTorch), "
                f"{tosa['samples']} samples: max difference {tosa['max_lsb_diff']} output LSB "
                f"({tosa['max_abs_diff']:.4g} absolute) "
                f"from the PT2E quantized model, top-1 agreement {tosa['top1_agreement']}%."
            )
        else:
            out.append(f"{tosa.get('status')}: {tosa.get('reason')}")
    if m.get("budget"):
        out += ["", "## Budgets", ""]
        out.append(
            markdown_table(
                ["budget", "limit", "measured", "unit", "passed"],
                [[k, b["limit"], b["measured"], b["unit"], b["passed"]] for k, b in m["budget"].items()],
            )
        )
    by_op = vela.cycles_by_operator(vela_dir)
    if by_op:
        kinds: dict[str, float] = {}
        for x in by_op:
            kinds[x["kind"]] = kinds.get(x["kind"], 0.0) + x["pct"]
        out += [
            "",
            "## Where the NPU cycles go",
            "",
            "By operator (Vela's per-layer estimate, all partitions): "
            + ", ".join(f"{k} {v:.1f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            + ".",
            "",
        ]
        out.append(
            markdown_table(
                ["operator", "kind", "layers", "cycles", "% of NPU cycles"],
                [[x["op"], x["kind"], x["layers"], x["cycles"], x["pct"]] for x in by_op],
            )
        )
        low = m.get("lowering") or {}
        if kinds.get("layout") and low.get("io_layout", "nchw") == "nchw":
            out.append(
                "\nTransposes convert between PyTorch's NCHW and the NPU's NHWC layout: those at the program's "
                "inputs and outputs go with `lowering.io_layout=nhwc` (or `lowering=fast`; docs/lowering.md); "
                "others (around a reshape or flatten) stay."
            )
    if (vela_dir / vela.PER_LAYER_CSV).is_file():
        layers = vela.top_layers(vela_dir)
        if layers:
            out += ["", "## Top layers by cycles", ""]
            out.append(
                markdown_table(
                    ["partition", "op", "name", "cycles", "% of partition", "MACs"],
                    [[x["partition"], x["op"], x["name"], x["cycles"], x["network_pct"], x["macs"]] for x in layers],
                )
            )
    return "\n".join(out) + "\n"


def _mac_share(d: dict[str, Any], total: dict[str, Any]) -> str:
    """The share of the multiply-accumulates the NPU runs (Vela's count against the CPU's
    convolutions and matrix products)."""
    npu, cpu = total.get("macs", 0) or 0, d.get("cpu_macs")
    if cpu is None or not npu + cpu:
        return ""
    return f" The NPU runs {100 * npu / (npu + cpu):.1f}% of the MACs ({npu:,} of {npu + cpu:,})."


MEMORY_PARTS = {
    "pte": "model.pte (command streams, weights, program)",
    "planned": "ExecuTorch planned buffers (activations, IO)",
    "method_allocator": "ExecuTorch method allocator (values, tensors, kernels)",
    "npu_scratch": "NPU scratch (Vela tensor arena)",
    "npu_fast_scratch": "NPU fast scratch (arena cache)",
    "io": "input and output buffers (not planned)",
}


def _data(section: dict[str, Any] | None) -> list[str]:
    """Preprocessing, the samples each stage saw, and what the first layer could absorb."""
    if not section:
        return []
    out = ["", "## Data", ""]
    steps = section.get("preprocess") or []
    if steps:
        out.append("Preprocessing (model.preprocess), raw frame to the model's first input:")
        out += [""] + [f"{i}. {s['does']}" for i, s in enumerate(steps, 1)] + [""]
    rows = []
    for which in ("calibration", "evaluation"):
        seen = section.get(which)
        if not seen:
            continue
        ranges = "; ".join(f"{x['name']} [{x['min']:.4g}, {x['max']:.4g}] mean {x['mean']:.4g}" for x in seen["inputs"])
        classes = seen.get("classes")
        balance = ", ".join(f"{k}: {n}" for k, n in classes.items()) if classes else "unlabelled"
        rows.append([seen.get("source", which), seen["samples"], ranges, balance])
    if rows:
        out.append(markdown_table(["samples of", "count", "value range per input", "classes drawn"], rows))
    out += _absorb(steps, section.get("first_layer"))
    for w in section.get("warnings") or []:
        out += ["", f"> **Warning**: {w}"]
    return out


def _absorb(steps: list[dict[str, Any]], layer: dict[str, Any] | None) -> list[str]:
    affine = [s["step"]["op"] for s in steps if s["step"]["op"] in ("scale", "normalize")]
    if not affine or not layer or not layer.get("absorbs"):
        return []
    means = [s["step"]["mean"] for s in steps if s["step"]["op"] == "normalize"]
    shifts = any(v != 0 for mean in means for v in (mean if isinstance(mean, list) else [mean]))
    exact = (
        "; it zero-pads its input, and after the fold a padded raw 0 no longer stands for the normalized 0 (the "
        "mean shifts it), so the outputs at the borders change unless the device pads with the mean instead"
        if layer["padding"] and shifts
        else ", exactly"
    )
    return [
        "",
        f"The first layer ({layer['op']} `{layer['node']}`) could absorb the {' and '.join(affine)} step(s): folding "
        f"them into its weights and bias lets the device feed the raw pixels{exact}.",
    ]


def _memory(bill: dict[str, Any] | None) -> list[str]:
    if not bill:
        return []
    # In a fixed order: a bill read back from the stage cache has its keys sorted, one computed
    # in place does not, and the same build must render the same report.md.
    order = [*MEMORY_PARTS, *sorted(set(bill["parts"]) - set(MEMORY_PARTS))]
    rows = [
        [MEMORY_PARTS.get(k, k), bill["parts"][k]["region"], f"{bill['parts'][k]['bytes']:,}", bill["parts"][k]["how"]]
        for k in order
        if k in bill["parts"] and bill["parts"][k]["bytes"]
    ]
    rows += [["**total**", region, f"**{n:,}**", ""] for region, n in sorted(bill["regions"].items())]
    planned = ", ".join(f"id {b['mem_id']}: {b['bytes']:,} B" for b in bill["planned_buffers"]) or "none"
    return [
        "",
        f"## Memory bill ({bill['memory_mode']})",
        "",
        markdown_table(["part", "region", "bytes", "how"], rows),
        "",
        f"Planned buffers per memory id: {planned}. The method allocator's figure is an estimate from the "
        "program's counts; `ethosu-artifacts export --firmware` writes these sizes, with its margin, to memory.h "
        "(docs/deploying.md).",
    ]


def _inputs(model: dict[str, Any]) -> str:
    inputs = model.get("inputs") or []
    if not inputs:
        return str(model.get("input_shape"))
    return ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in inputs)
