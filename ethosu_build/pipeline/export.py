"""Stage `export`: torch.export of the float model, and the program format of the cache.

Always the static batch-1 program (what is lowered), and also one with a dynamic batch
dimension when torch can keep the batch symbolic, so calibration and evaluation can run in
batches (observer cost is per call). Key: the model factory, its source, the checkpoint's
content and the inputs' shapes and dtypes (keys.py).

torch is imported inside functions: pipeline/build.py imports this module on the up-to-date path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import BuildConfig
from ..errors import first_line
from ..fingerprint import file_sha256, source_fingerprint, tool_versions_for_key
from ..store.cache import Entry
from .model_checks import example_inputs
from .stage import Run, Stage

log = logging.getLogger("ethosu_build.build")
BATCH_DIM_MAX = 4096


def export_program(module, specs: list, dynamic_batch: bool = False):
    """torch.export of `module` on zeros of its inputs (model.input_specs()), or with their
    batch dimension kept symbolic (traced at batch 2, so torch cannot specialize it to 1)."""
    import torch

    if not dynamic_batch:
        return torch.export.export(module, example_inputs(specs))
    batch = torch.export.Dim("batch", min=1, max=BATCH_DIM_MAX)
    return torch.export.export(module, example_inputs(specs, 2), dynamic_shapes=tuple({0: batch} for _ in specs))


def batch_dynamic(module, specs: list, what: str) -> Any | None:
    """`module` exported with a dynamic batch, or None (then it runs sample by sample)."""
    return batch_dynamic_or_why(module, specs, what)[0]


def batch_dynamic_or_why(module, specs: list, what: str) -> tuple[Any | None, str | None]:
    """(`module` exported with a dynamic batch, None), or (None, why not): one line in the
    log, what torch printed on the way in the build log only (`printed_to_log`)."""
    try:
        with printed_to_log(what):
            return export_program(module, specs, dynamic_batch=True), None
    except Exception as exc:  # torch raises several types for a batch it cannot keep symbolic
        why = f"the batch dimension could not be exported as dynamic ({type(exc).__name__}: {first_line(exc)})"
        log.info("%s: %s", what, why)
        log.debug("%s: the batch-dynamic export failed", what, exc_info=True)
        return None, why


@contextlib.contextmanager
def printed_to_log(what: str):
    """For a step the build recovers from if it fails (the batch-dynamic path): what Python
    code prints to sys.stderr meanwhile, and what torch's own loggers write there, is held
    back, written to stderr after all if the step succeeds (warnings are the user's), else
    sent to the build log at debug level. torch.fx prints a failing GraphModule's whole
    generated code to stderr before it raises (torch/fx/graph_module.py, _WrappedCall), and
    torch's fake tensors log a traceback for an operator whose shapes do not hold at a
    symbolic batch; a path we recover from keeps both off the console. No progress bar may
    run inside (it writes to sys.stderr too)."""
    printed = io.StringIO()
    handlers = _torch_stderr_handlers()
    try:
        with contextlib.redirect_stderr(printed):
            streams = [h.setStream(printed) for h in handlers]
            try:
                yield
            finally:
                for h, stream in zip(handlers, streams):
                    h.setStream(stream)
    except BaseException:
        if printed.getvalue():
            log.debug("%s printed before it failed:\n%s", what, printed.getvalue())
        raise
    sys.stderr.write(printed.getvalue())


def _torch_stderr_handlers() -> list[logging.StreamHandler]:
    """The handlers torch's logging puts on its loggers (which do not propagate) that write
    to stderr."""
    found: dict[int, logging.StreamHandler] = {}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (name == "torch" or name.startswith("torch.")) and isinstance(logger, logging.Logger):
            for h in logger.handlers:
                if isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.__stderr__):
                    found[id(h)] = h
    return list(found.values())


def program_bytes(program) -> bytes:
    """An ExportedProgram as torch.export.save writes it (a zip archive)."""
    import torch

    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def load_program(data: bytes):
    """torch.export.load of bytes from a verified cache entry (store/cache.py Entry.read):
    the archive may unpickle, so only entries this user's key signed ever reach it."""
    import torch

    # A quantized program holds quantized_decomposed ops, which exist only once torchao's
    # PT2E module is imported; a fresh process that reads the cache must import it first.
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401

    return torch.export.load(io.BytesIO(data))


@dataclass
class Exported:
    static: Any  # the batch-1 ExportedProgram
    dynamic: Any | None  # the same with a dynamic batch, or None
    dynamic_reason: str | None = None  # why there is none (for the manifest's calibration.unbatched_reason)

    def save(self, folder: Path) -> None:
        (folder / "static.pt2").write_bytes(program_bytes(self.static))
        if self.dynamic is not None:
            (folder / "dynamic.pt2").write_bytes(program_bytes(self.dynamic))
        elif self.dynamic_reason:
            (folder / "dynamic_reason.txt").write_text(self.dynamic_reason)

    @classmethod
    def load(cls, entry: Entry) -> Exported:
        dynamic = load_program(entry.read("dynamic.pt2")) if entry.has("dynamic.pt2") else None
        # entries written before the reason was kept have none: the quantize stage then says it generally
        why = entry.read("dynamic_reason.txt").decode() if entry.has("dynamic_reason.txt") else None
        return cls(load_program(entry.read("static.pt2")), dynamic, why)


class Export(Stage[Exported]):
    name = "export"
    version = 3
    result = Exported
    write_behind = True  # programs take 0.2-0.6 s each to serialize

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        m = cfg.model
        return {
            "tools": tool_versions_for_key(),
            "factory": m.factory,
            "source": source_fingerprint(m.factory["_target_"]),
            "checkpoint": file_sha256(m.checkpoint) if m.checkpoint else None,
            # shapes and dtypes, however given (input_shape or inputs); names reach no program
            "inputs": [{"shape": list(s.shape), "dtype": s.dtype} for s in m.input_specs()],
        }

    @classmethod
    def compute(cls, run: Run) -> Exported:
        from .control_flow import control_flow

        specs = run.cfg.model.input_specs()
        static = export_program(run.model(), specs)
        if control_flow(static.graph_module):
            # A branch predicate on the data holds for one sample; calibration runs sample by
            # sample through the quantizer's submodule-aware path (control_flow.py).
            log.info("export: the model has control flow; no batch-dynamic export")
            return Exported(static, None, "control flow: branch predicates hold per sample")
        return Exported(static, *batch_dynamic_or_why(run.model(), specs, "export"))
