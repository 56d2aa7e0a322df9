"""Random and mutated command-line overrides: every one either validates or is a config
error with a short message (exit 2 in the CLI), never a crash."""

from __future__ import annotations

import string

import pytest
from conftest import compose_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ethosu_build.config.validate import validate
from ethosu_build.errors import ConfigError

GROUPS = {
    "target": ["ethos-u55-128", "ethos-u65-256", "ethos-u85-2048"],
    "quantization": ["int8", "a16w8", "int8_per_tensor", "uint8_io"],
    "model": ["digits_cnn", "ds_cnn", "resnet8"],
    "calibration": ["digits", "random", "tensors", "folder"],
    "overrides": ["none", "head_float", "[head_float,linear_a16w8]"],
    "budget": ["none", "small_mcu"],
    "lowering": ["default", "fast"],
    "recipe": ["digits_u55", "kws_u85_a16w8"],
}
KEYS = [
    "name",
    "target.accelerator",
    "target.system_config",
    "target.memory_mode",
    "target.config_ini",
    "target.vela_flags",
    "target.cpu_qdq_kernels",
    "target.optimise",
    "target.arena_cache_size",
    "lowering.io_layout",
    "lowering.rewrites",
    "quantization.scheme",
    "quantization.io",
    "quantization.per_channel",
    "model.input_shape",
    "model.checkpoint",
    "model.factory._target_",
    "calibration.num_samples",
    "calibration.batch_size",
    "calibration.dataset.path",
    "evaluation.num_samples",
    "evaluation.tosa_samples",
    "evaluation.tosa_check",
    "budget.max_sram_kib",
    "budget.max_cpu_ops",
    "store.root",
    "allow_dirty",
]


def mutate(word: str, data) -> str:
    if not word:
        return "x"
    i = data.draw(st.integers(0, len(word) - 1))
    op = data.draw(st.sampled_from(["drop", "swap", "insert"]))
    ch = data.draw(st.sampled_from(string.ascii_lowercase + "_-."))
    if op == "drop":
        return word[:i] + word[i + 1 :] or "x"
    if op == "insert":
        return word[:i] + ch + word[i:]
    return word[:i] + ch + word[i + 1 :]


values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: f"{f:g}"),
    st.sampled_from(
        ["null", "true", "false", "[]", "[1,2]", "[1,1,8,8]", "[0]", "{}", "'--optimise=Size'", "???", "${oops}", "a b"]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "_-./", min_size=0, max_size=12),
)


@st.composite
def override(draw):
    kind = draw(st.sampled_from(["group", "group_mutated", "key", "key_mutated", "add", "delete"]))
    if kind.startswith("group"):
        group = draw(st.sampled_from(sorted(GROUPS)))
        option = draw(st.sampled_from(GROUPS[group]))
        if kind == "group_mutated":
            option = mutate(option, draw(st.data()))
        return f"{group}={option}"
    key = draw(st.sampled_from(KEYS))
    if kind == "key_mutated":
        key = mutate(key, draw(st.data()))
    if kind == "delete":
        return f"~{key}"
    return f"{'+' if kind == 'add' else ''}{key}={draw(values)}"


def _touched(override: str) -> str:
    """The config key (or group) an override names: `+a.b=1` -> a.b, `~x.y` -> x.y."""
    return override.lstrip("+~").split("=", 1)[0]


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(override(), min_size=1, max_size=4))
@example(["~model.input_shape", "model=ds_cnn"])  # found here once: an interpolated key removed
def test_overrides_validate_or_fail_as_config_errors(overrides):
    """Every random command line either validates or is one config error whose issues each
    name a key the command line touched (or that key's parent or child), never a crash."""
    touched = [_touched(o) for o in overrides]

    def related(key: str) -> bool:
        parts = key.split(".")
        return any(
            t == key or key.startswith(t + ".") or t.startswith(key + ".") or parts[0] == t.split(".")[0]
            for t in touched
        ) or key in ("recipe", "command line")  # a recipe or group option the override chose

    try:
        container, recipe = compose_config(overrides)
        validate(container, default_name=recipe)
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert related(issue.key), (issue, overrides)
            assert len(issue.message.splitlines()) <= 3, issue.message  # a message, not a dump
