"""Fill a lowered program's Vela payloads in for one target, at the .pte level.

The lower stage partitions and lowers to TOSA once per TOSA specification, leaving a
placeholder payload per NPU partition (vela_files.placeholder). For each target, Vela compiles the
partitions and `retarget` swaps the payloads and the delegate compile specs (the Vela flags
and target name: the only entries that differ between targets of one TOSA specification) in
the serialized program. The result is byte-identical to lowering for that target directly
(tests/test_metrics.py), because nothing else in the program depends on the target.

ExecuTorch's serializer is imported inside functions: the vela stage's module imports this one
on the up-to-date path.
"""

from __future__ import annotations

from collections.abc import Iterable

# Compile-spec entries that may differ between targets sharing one lowering.
PER_TARGET_SPECS = frozenset({"compile_flags", "target"})
BACKEND = "EthosUBackend"


class RetargetError(RuntimeError):
    pass


def _serialize(pte_file) -> bytes:
    from executorch.exir._serialize._program import serialize_pte_binary

    # As ExecutorchBackendConfig(extract_delegate_segments=False), which lower.run_lower uses.
    return bytes(serialize_pte_binary(pte_file, extract_delegate_segments=False))


def _deserialize(data: bytes):
    from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(data)


def round_trips(data: bytes) -> bool:
    """Whether deserializing and serializing gives the same bytes (retargeting needs it)."""
    return _serialize(_deserialize(data)) == data


def payloads(data: bytes) -> list[bytes]:
    """The delegate payloads of the program, in the order of its delegate data table."""
    return [bytes(d.data) for d in _deserialize(data).program.backend_delegate_data]


def retarget(template: bytes, payloads: dict[bytes, bytes], compile_specs: Iterable) -> bytes:
    """`template` with every delegate payload p replaced by payloads[p] and every Ethos-U
    delegate's compile specs set to `compile_specs` (ExecuTorch CompileSpec entries)."""
    pte = _deserialize(template)
    program = pte.program
    new = {c.key: bytes(c.value) for c in compile_specs}
    for plan in program.execution_plan:
        for delegate in plan.delegates:
            if delegate.id != BACKEND:
                raise RetargetError(f"delegate {delegate.id!r} is not {BACKEND}")
            old = {c.key: bytes(c.value) for c in delegate.compile_specs}
            differ = sorted(
                k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in PER_TARGET_SPECS
            )
            if differ:
                raise RetargetError(f"compile spec entries {differ} differ from the shared lowering's")
            for c in delegate.compile_specs:
                c.value = new[c.key]
    for entry in program.backend_delegate_data:
        data = bytes(entry.data)
        if data not in payloads:
            raise RetargetError("a delegate payload is not a placeholder of the shared lowering")
        entry.data = payloads[data]
    return _serialize(pte)
