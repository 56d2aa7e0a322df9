"""The stage keys of today's configs, pinned: a refactor of how keys are declared must not
change one (stored cache entries would be orphaned and every build would recompute), and a
change that means to change a stage's output bumps that stage's version and re-pins here
(`python tests/test_stage_keys.py --repin`), saying so in its commit.

The data sources' fingerprints are replaced here by a hash of their config: they hash the
sources' code (data/), which may change without changing what a stage is keyed on; a
recipe's lock (tests/test_provenance.py) is what notices them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import FIXTURES, compose_config

PINNED = FIXTURES / "stage_keys.json"

# Each recipe, each model, targets of each family, each quantization scheme, the data sources
# that need no files, the lowering and budget options: every block of keys.stage_keys is hit.
CASES = {
    "default": [],
    **{f"recipe={r}": [f"recipe={r}"] for r in (
        "digits_u55", "digits_gated_u85", "digits_u55_a8w4_qat", "kws_u55_fast", "kws_u85_a16w8",
        "resnet8_u55_stage3_float",
    )},
    **{f"model={m}": [f"model={m}"] for m in (
        "deep_autoencoder", "digits_cnn", "digits_gated", "digits_masked", "ds_cnn", "mobilenet_v1_025", "resnet8",
    )},
    **{f"target={t}": [f"target={t}"] for t in ("ethos-u55-64", "ethos-u65-256", "ethos-u85-256")},
    **{f"quantization={q}": [f"quantization={q}"] for q in ("a16w8", "int8_per_tensor", "int8_qat", "uint8_io")},
    "overrides=linear_a16w8": ["overrides=linear_a16w8"],
    "calibration=random": ["calibration=random", "evaluation=random"],
    "lowering=fast": ["lowering=fast"],
    "budget=small_mcu": ["budget=small_mcu"],
    "evaluation.tosa_check=false": ["evaluation.tosa_check=false"],
}  # fmt: skip


def current_keys() -> dict[str, dict[str, str]]:
    import hashlib

    from ethosu_build import data
    from ethosu_build.config.validate import validate
    from ethosu_build.fingerprint import canonical_json
    from ethosu_build.pipeline.keys import stage_keys

    real = data.fingerprint
    data.fingerprint = lambda dataset: hashlib.sha256(canonical_json(dataset).encode()).hexdigest()
    try:
        out = {}
        for name, overrides in CASES.items():
            container, recipe = compose_config(overrides)
            out[name] = stage_keys(validate(container, default_name=recipe)).as_dict()
        return out
    finally:
        data.fingerprint = real


def test_stage_keys_are_the_pinned_ones():
    pinned = json.loads(PINNED.read_text())
    current = current_keys()
    assert current.keys() == pinned.keys(), "the cases changed: re-pin (python tests/test_stage_keys.py --repin)"
    changed = {
        case: [stage for stage, key in keys.items() if pinned[case].get(stage) != key]
        for case, keys in current.items()
        if keys != pinned[case]
    }
    assert not changed, f"stage keys changed (case: stages): {changed}"


def test_a_file_is_hashed_once_while_unchanged(tmp_path, monkeypatch):
    """The keys, the lock's drift check and the manifest hash the same inputs: one read per
    process while the file's stat stays the same; a new read once it changes, even when its
    size and mtime are put back (ctime cannot be), and for a file written just now."""
    import os
    import time

    from ethosu_build import fingerprint

    f = tmp_path / "weights.pt"
    f.write_bytes(b"a" * 1000)
    reads = []
    real = fingerprint._read_sha256
    monkeypatch.setattr(fingerprint, "_read_sha256", lambda p: reads.append(p) or real(p))
    fingerprint.file_sha256(f)
    fingerprint.file_sha256(f)
    assert len(reads) == 2  # written within RACY_NS: its stat may not show a second write yet
    monkeypatch.setattr(fingerprint, "RACY_NS", 0)
    first = fingerprint.file_sha256(f)
    assert fingerprint.file_sha256(f) == first and len(reads) == 3
    st = f.stat()
    time.sleep(0.05)  # a later timestamp tick (ctime ticks by a few ms)
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint.file_sha256(f) == real(f) != first
    assert len(reads) == 4


if __name__ == "__main__":
    if sys.argv[1:] != ["--repin"]:
        sys.exit("usage: python tests/test_stage_keys.py --repin")
    sys.path.insert(0, str(Path(__file__).parent))
    PINNED.write_text(json.dumps(current_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")
