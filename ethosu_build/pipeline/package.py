"""The firmware bundle of an export (`ethosu-artifacts export ID DIR --firmware`,
docs/deploying.md): model_pte.h, model_io.h, memory.h, selected_ops.txt, model.bpte and, for a board, board.ld,
derived (pipeline/firmware.py) from a checked manifest and the verified bytes of its files.
Reading the version and writing DIR are the store's (store/export.py); the bundle is added
to the files it copies.

ExecuTorch and numpy are imported inside firmware.py's functions, as the bundle is made.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigIssue, UsageError
from ..store.artifacts import Artifact
from . import firmware


def firmware_files(
    a: Artifact, m: dict[str, Any], verified: dict[str, bytes], section: str, bundle_samples: int
) -> tuple[dict[str, bytes], list[str]]:
    """The firmware bundle, from the checked manifest `m` and the `verified` bytes of its
    files, and notes on what it lacks (a bpte with fewer test cases, or none)."""
    pte = verified["model.pte"]
    if not m.get("memory") or not (m.get("delegation") or {}).get("runtime"):
        raise UsageError(
            ConfigIssue(
                "ID",
                f"{a.id} was built before ethosu-build recorded the memory bill and IO contract; rebuild it to export "
                "firmware files",
            )
        )
    files = {
        "model_pte.h": firmware.model_pte_h(pte, section).encode(),
        "model_io.h": firmware.model_io_h(m, firmware.io_names(m)).encode(),
        "memory.h": firmware.memory_h(m).encode(),
        "selected_ops.txt": (",".join(firmware.program_operators(pte)) + "\n").encode(),
    }
    if m.get("board"):  # built for a board: its memory map, placed as the build said (docs/boards.md)
        files["board.ld"] = firmware.linker_fragment(m).encode()
    notes = []
    check_io = verified.get("check/tosa_io.npz")
    if check_io is not None:
        files["model.bpte"], n = firmware.bundled_program(pte, check_io, bundle_samples)
        if n < bundle_samples:
            notes.append(f"model.bpte holds {n} test case(s): the build's TOSA check ran on {n} sample(s)")
    else:
        reason = (m.get("metrics") or {}).get("tosa_check", {}).get("reason") or "no TOSA check outputs were stored"
        notes.append(
            f"no model.bpte: {a.id} has no TOSA check outputs ({reason}); build with evaluation.tosa_check=true"
        )
    return files, notes
