"""`ethosu-artifacts diff A B`: identical, equivalent or different (pipeline/diff.py), the first
cause and the inputs that changed. Either side may be a folder of another store or an
export. The program reader imports ExecuTorch, inside `run`."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK, ConfigIssue, UsageError
from ..files import printable
from ..store.artifacts import ArtifactStore, snapshot
from ..store.trust import TRUST_WORDS
from .common import ID_HELP, Command, _changed_after_check, _checked, _quiet_imports, _resolve


def run(store: ArtifactStore, args) -> int:
    """The semantic diff's verdict (pipeline/diff.py), then the inputs that changed: config,
    tools, fingerprints. Exit 0 only for identical bytes."""
    from ..pipeline.diff import diff

    _quiet_imports()  # the program reader imports ExecuTorch, whose import warnings say nothing of this
    a, b = _resolve(store, args.a, "A", foreign=True), _resolve(store, args.b, "B", foreign=True)
    # Either side may come from another store or machine (another key): compared by its bytes
    # once its files match its own manifest, and said so. The comparison reads private copies
    # of the checked bytes (store.artifacts.snapshot), which no one can swap meanwhile.
    checks = {"A": _checked(a, "A", "comparing", True), "B": _checked(b, "B", "comparing", True)}
    for side, c in checks.items():
        if "model.pte" not in c.manifest["files"]:
            raise UsageError(ConfigIssue(side, f"{(a if side == 'A' else b).id} lists no model.pte to compare"))
    ma, mb = checks["A"].manifest, checks["B"].manifest
    with tempfile.TemporaryDirectory(prefix="ethosu-diff-") as tmp:
        with _changed_after_check(a, "A"):
            sa = snapshot(a, checks["A"], Path(tmp, "A"))
        with _changed_after_check(b, "B"):
            sb = snapshot(b, checks["B"], Path(tmp, "B"))
        try:
            result = diff(sa, sb, ids=(a.id, b.id))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as exc:
            untrusted = [side for side, c in checks.items() if not c.trusted]
            if not untrusted:
                raise  # our own signed programs: a bug, with its traceback
            raise UsageError(
                ConfigIssue(untrusted[0], f"its files match its manifest but cannot be read as a build ({exc})")
            ) from exc
    result.trust = {side: c.why or TRUST_WORDS["ok"] for side, c in checks.items()}
    changed = []
    for section in ("config", "tools", "fingerprints", "platform"):
        fa, fb = _flatten(ma.get(section, {}), section), _flatten(mb.get(section, {}), section)
        changed += [
            {"key": k, "a": fa.get(k), "b": fb.get(k)}
            for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and k != "config.store.root"  # where it was stored is no input
        ]
    if args.json:
        print(json.dumps({**result.as_json(), "inputs_changed": changed}, indent=1, default=str))
    else:
        _print_diff(result, changed)
    return EXIT_OK if result.verdict == "identical" else EXIT_NOT_ALL_WELL


def _print_diff(result, changed: list[dict[str, Any]]) -> None:
    """The verdict and what changed; every line through `printable`: a side not signed here
    says what it likes in its manifest, and none of it may drive the terminal."""

    def say(line: str) -> None:
        print(printable(line))

    say(f"{result.a} vs {result.b}: {result.verdict}" + (f" (first cause: {result.cause})" if result.cause else ""))
    for side, why in (result.trust or {}).items():
        if why != TRUST_WORDS["ok"]:
            say(f"  note: {side} is not signed here ({why}): compared by its bytes, which match its own manifest")
    for d in result.differences:
        say(f"  {'-' if d.decides else '~'} {d.level}: {d.what}")
    if result.largest_qparam_change:
        q = result.largest_qparam_change
        how = "changed" if q["relative"] is None else f"{q['relative']:.3g} relative"
        say(f"  largest quantization parameter change: {q['tensor']}, {how}")
    out = result.outputs
    if out:
        say(
            "  outputs: "
            + (
                f"max {out['max_lsb']} LSB apart on {out['samples']} samples"
                if out.get("compared")
                else f"not compared: {out['reason']}"
            )
        )
    if changed:
        say("inputs that differ (config, tools, fingerprints, platform):")
        for c in changed[:40]:
            say(f"  {c['key']}: {c['a']} -> {c['b']}")
        if len(changed) > 40:
            say(f"  ... and {len(changed) - 40} more (--json lists them all)")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _arguments(p) -> None:
    p.add_argument(
        "a", metavar="A", help=f"{ID_HELP}; or a folder outside the store: another store's version, an export"
    )
    p.add_argument("b", metavar="B", help="as A")
    p.add_argument("--json", action="store_true", help="the verdict and every difference, for scripts")


COMMAND = Command(
    "diff",
    "identical, equivalent or different, the first cause and the inputs that changed",
    ("ethosu-artifacts diff digits_cnn/v1 digits_cnn/v2", "ethosu-artifacts diff digits_cnn ../ci/export"),
    _arguments,
    run,
)
