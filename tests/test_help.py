"""`ethosu-build --help` and `ethosu-search --help`: the warm service, the optimizing sweeper,
the launchers and the environment variables, each config key with its meaning (the schema's
comments, config/help.py), without importing torch; and the error for a key of a section the
chosen option leaves unset (quantization.qat under int8)."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest
from conftest import BIN, ROOT, compose_config

from ethosu_build.config import help as config_help
from ethosu_build.config import schema
from ethosu_build.config.validate import validate
from ethosu_build.errors import ConfigError, did_you_mean

PROBE = """
import contextlib, io, sys
from ethosu_build import app
for name, entry in (("ethosu-build", app.main), ("ethosu-search", app.search_main)):
    sys.argv = [name, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            entry()
        except SystemExit:
            pass
    print(f"=== {name}")
    print(out.getvalue())
print("IMPORTED", "torch" in sys.modules, "executorch" in sys.modules)
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, str]:
    res = subprocess.run(
        [str(BIN / "python"), "-c", PROBE], cwd=tmp_path_factory.mktemp("help"), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    parts = re.split(r"^=== (ethosu-\w+)\n", res.stdout, flags=re.M)
    found = dict(zip(parts[1::2], parts[2::2]))
    found["imported"] = res.stdout.strip().splitlines()[-1]
    return found


def _schema_fields(cls, path=""):
    for f in dataclasses.fields(cls):
        yield cls, f.name, f"{path}{f.name}"
        tp = config_help.fields(cls)[f.name]
        inner = config_help._entry_class(tp) or tp
        if dataclasses.is_dataclass(inner):
            yield from _schema_fields(inner, f"{path}{f.name}.")


def test_every_schema_key_has_a_meaning():
    missing = [p for c, n, p in [*_schema_fields(schema.BuildConfig), *_schema_fields(schema.SearchConfig, "search.")]
               if not config_help.meaning(c, n)]  # fmt: skip
    assert not missing, f"schema fields without a comment (config/schema.py): {missing}"


def test_help_says_warm_sweeper_launchers_and_environment_without_torch(helps):
    text = helps["ethosu-build"]
    assert helps["imported"] == "IMPORTED False False"
    for needed in ("--warm start|stop|status", "hydra/sweeper=optimize", "hydra/launcher=joblib", "ray_cluster",
                   "submitit_slurm", "objective="):  # fmt: skip
        assert needed in text, needed
    # every ETHOSU_BUILD_* variable the code reads
    names = set()
    for path in (ROOT / "ethosu_build").rglob("*.py"):
        names |= set(re.findall(r"= \"(ETHOSU_BUILD_[A-Z_]+)\"", path.read_text()))
    assert names >= {"ETHOSU_BUILD_WARM", "ETHOSU_BUILD_KEY_FILE", "ETHOSU_BUILD_BACKGROUND"}
    for name in names:
        assert f"{name}=" in text, name


def _config_lines(text: str) -> list[str]:
    body = text.split("== Config (", 1)[1].split("\n", 1)[1]
    return body.split("\n\n", 1)[0].splitlines()


def test_help_gives_each_key_its_meaning(helps):
    lines = _config_lines(helps["ethosu-build"])
    keys = [line for line in lines if re.match(r"^ *\w+:", line)]
    # free-form arguments of a `_target_` call have no schema, so no meaning; every other key does
    bare = [line for line in keys if "  # " not in line and line.split(":")[0].strip() not in ("_target_", "split")]
    assert not bare, bare
    assert any(line.strip().startswith("# qat: unset (quantization=a8w4_qat, int8_qat set it)") for line in lines)
    assert any(line.strip().startswith("# <name>.module_name") for line in lines)  # what an overrides entry holds
    search = _config_lines(helps["ethosu-search"])
    at = next(i for i, line in enumerate(search) if line.startswith("search:"))
    for line in search[at + 1 :]:
        if line.startswith("  ") and not line.startswith("    "):
            assert "  # " in line, line


def test_a_key_of_a_section_the_scheme_leaves_null_says_so_and_how_to_set_it():
    """quantization.qat.epochs=5 under int8 (qat null): not 'did you mean qat?', but what is
    unset and the two ways to set it, both of which compose and validate."""
    with pytest.raises(ConfigError) as err:
        compose_config(["quantization.qat.epochs=5"])
    text = str(err.value)
    assert "did you mean" not in text and "quantization.qat" in text
    assert "is not set by the chosen quantization option" in text and "post-training" in text
    assert "quantization=a8w4_qat" in text and "quantization=int8_qat" in text
    whole = re.search(r"'(\+quantization\.qat=\{.*\})'", text).group(1)
    assert validate(compose_config([whole])[0]).quantization.qat.epochs == 5
    by_option = validate(compose_config(["quantization=int8_qat", "quantization.qat.epochs=5"])[0])
    assert by_option.quantization.qat.epochs == 5


def test_did_you_mean_never_suggests_the_key_itself():
    assert did_you_mean("qat", ["scheme", "qat", "io"]) == ""
    assert did_you_mean("sheme", ["scheme", "qat"]) == "; did you mean 'scheme'?"
