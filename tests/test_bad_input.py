"""Every bad input ends in exit code 2 with a message naming the key, the bad value and what
is accepted, no traceback, and nothing in the store. A configuration Vela cannot compile
exits 1, names the configuration, and stores nothing either."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_nothing_stored, build_in_process, compose_config, run_cli

from ethosu_build.config.errors import ConfigError
from ethosu_build.config.validate import validate
from ethosu_build.pipeline.keys import stage_keys
from ethosu_build.pipeline.stage import Run

# (command-line overrides, fragments the message must contain)
CONFIG_ONLY = [
    (["target=ethos-u99-1"], ["target", "ethos-u99-1", "ethos-u55-128"]),
    (["quantization=int4"], ["quantization", "int4", "a16w8"]),
    (["target.accelerator=ethos-u99"], ["target.accelerator", "'ethos-u99'", "accepted", "ethos-u85-256"]),
    (["quantization.scheme=int4"], ["quantization.scheme", "'int4'", "accepted: int8, a16w8"]),
    (["calibration.num_sample=5"], ["calibration.num_sample", "num_samples"]),
    (["+model.inptu_shape=[1]"], ["model.inptu_shape", "unknown key", "did you mean 'input_shape'"]),
    (["+overrides.x={scheme: int8}"], ["overrides.x", "exactly one selector", "module_name, module_type, io"]),
    (
        ["+overrides.x={module_name: head, module_type: torch.nn.Linear, scheme: int8}"],
        ["overrides.x", "exactly one selector", "module_name='head'"],
    ),
    (["+overrides.x={module_name: head, scheme: int4}"], ["overrides.x.scheme", "'int4'", "int8, a16w8, a8w4, float"]),
    (
        ["quantization.scheme=a8w4"],
        ["quantization.scheme", "'a8w4'", "quantization.qat is null", "a8w4_qat", "int8, a16w8"],
    ),
    (
        ["+overrides.x={module_name: head, scheme: a8w4}"],
        ["overrides.x.scheme", "'a8w4'", "quantization-aware training"],
    ),
    (
        ["quantization=int8_qat", "+overrides.x={io: true, scheme: a8w4}"],
        ["overrides.x.scheme", "'a8w4' is not an IO scheme", "int8, float"],
    ),
    (
        ["quantization=int8_qat", "quantization.qat.optimizer=adamw"],
        ["quantization.qat.optimizer", "'adamw'", "adam, sgd", "did you mean 'adam'"],
    ),
    (
        ["quantization=int8_qat", "quantization.qat.lr=0", "quantization.qat.epochs=0"],
        ["quantization.qat.lr", "quantization.qat.epochs", "accepted: an integer >= 1", "e.g. 1e-4"],
    ),
    (
        ["quantization=int8_qat", "quantization.qat.loss=hinge"],
        ["quantization.qat.loss", "'hinge'", "auto, cross_entropy, distill"],
    ),
    (["model.checkpoint=missing.pt"], ["model.checkpoint", "missing.pt", "does not exist"]),
    (
        ["calibration=tensors", "calibration.dataset.path=nope.npz"],
        ["calibration.dataset.path", "nope.npz", ".pt or .npz"],
    ),
    (["calibration=tensors"], ["calibration.dataset.path", "missing"]),
    (
        ["evaluation=folder", "evaluation.dataset.path=no_such_dir"],
        ["evaluation.dataset.path", "no_such_dir", "does not exist"],
    ),
    (["calibration.num_samples=0"], ["calibration.num_samples", "0", "not positive"]),
    (["calibration.num_samples=abc"], ["calibration.num_samples", "'abc'", "integer"]),
    (["target.system_config=Nope"], ["target.system_config", "'Nope'", "Ethos_U55_High_End_Embedded"]),
    (["target.memory_mode=Shared_Sramm"], ["target.memory_mode", "did you mean 'Shared_Sram'"]),
    (["target.vela_flags=['--accelerator-config=ethos-u55-64']"], ["target.vela_flags.0", "target.accelerator"]),
    (["model.input_shape=[0,1]"], ["model.input_shape", "[0, 1]", "positive integers"]),
    (["lowering.io_layout=nhw"], ["lowering.io_layout", "'nhw'", "nchw, nhwc", "did you mean 'nhwc'"]),
    (["lowering.rewrites=[avg_pool]"], ["lowering.rewrites.0", "'avg_pool'", "avg_pool_crop"]),
    (
        ["model=deep_autoencoder", "lowering=fast"],
        ["lowering.io_layout", "'nhwc'", "4-D model input", "[1, 640]", "nchw"],
    ),
    (["target.optimise=Speed"], ["target.optimise", "'Speed'", "Performance, Size"]),
    (["target.arena_cache_size=0"], ["target.arena_cache_size", "0", "bytes"]),
    (["target.vela_flags=['--optimise=Size']"], ["target.vela_flags.0", "target.optimise"]),
    (["recipe=no_such_recipe"], ["recipe", "no_such_recipe", "digits_u55"]),
    (["model.factory._target_=notdotted"], ["model.factory._target_", "notdotted", "dotted path"]),
    ([f"name={'n' * 300}"], ["name", "up to 100"]),
    (["target.system_config=''"], ["target.system_config", "'' is empty", "null"]),
    (["target.config_ini=''"], ["target.config_ini", "'' is empty"]),
    (["budget.max_sram_kib=nan"], ["budget.max_sram_kib", "nan", "not a finite number"]),
    (["quantization=int8_qat", "quantization.qat.lr=inf"], ["quantization.qat.lr", "inf", "not a finite number"]),
    (["target.arena_cache_size=99999999999999999999"], ["target.arena_cache_size", "out of range"]),
    (["target.arena_cache_size=4294967297"], ["target.arena_cache_size", "4294967297", "from 1 to 4294967296"]),
    (["calibration.seed=99999999999999999999"], ["calibration.seed", "out of range", "64 bits"]),
    (["target.vela_flags=['--optim=Size']"], ["target.vela_flags.0", "abbreviates --optimise", "target.optimise"]),
    # a key removed that another key interpolates: named as the key the command line removed
    (["~model.input_shape", "model=ds_cnn"], ["model.input_shape", "is not set", "calibration.dataset.shape"]),
]

# These need the model (torch) to be judged, still before any stage runs.
MODEL_CHECKS = [
    (
        ["+overrides.x={module_name: blocks.9, scheme: a16w8}"],
        ["overrides.x.module_name", "'blocks.9'", "not found", "did you mean", "'blocks.0'"],
    ),
    (
        ["+overrides.x={module_type: torch.Tensor, scheme: float}"],
        ["overrides.x.module_type", "torch.Tensor", "not a module class"],
    ),
    (
        ["+overrides.x={module_type: torch.nn.Linearr, scheme: float}"],
        ["overrides.x.module_type", "torch.nn.Linearr", "cannot be imported"],
    ),
    (
        ["+overrides.x={module_type: torch.nn.LSTM, scheme: float}"],
        ["overrides.x.module_type", "no module of type torch.nn.LSTM", "torch.nn.modules.conv.Conv2d"],
    ),
    (["model.input_shape=[1,3,8,8]"], ["model.input_shape", "[1, 3, 8, 8]", "rejected by the model"]),
    (["calibration.num_samples=5000"], ["calibration.num_samples", "5000", "larger than the dataset", "1..1437"]),
    (["evaluation.num_samples=361"], ["evaluation.num_samples", "361", "1..360"]),
    (
        ["quantization=int8_qat", "quantization.qat.num_samples=5000"],
        ["quantization.qat.num_samples", "5000", "null or 1..1437"],
    ),
    (
        ["quantization=int8_qat", "calibration=random", "quantization.qat.loss=cross_entropy"],
        ["quantization.qat.loss", "needs labels", "distill or auto"],
    ),
    (
        ["model.factory._target_=ethosu_build.models.no_such_model"],
        ["model.factory", "no_such_model", "could not be called"],
    ),
]


def config_error(args: list[str], fragments: list[str], cwd: Path, *, against_the_model: bool = False) -> None:
    """The config error `ethosu-build ARGS` reports, found in-process as the CLI finds it:
    composed, validated, and (for checks that need it) judged against the model; each
    fragment appears in the message and nothing is stored."""
    root = cwd / "store"
    with pytest.raises(ConfigError) as error:
        container, recipe = compose_config([*args, f"store.root={root}"])
        cfg = validate(container, default_name=recipe)
        if against_the_model:
            Run(cfg, stage_keys(cfg)).model()
    text = error.value.render()
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert_nothing_stored(root)


@pytest.mark.parametrize("args,fragments", CONFIG_ONLY, ids=[" ".join(a) for a, _ in CONFIG_ONLY])
def test_config_error(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the folder a build runs in
    config_error(args, fragments, tmp_path)


@pytest.mark.parametrize("args,fragments", MODEL_CHECKS, ids=[" ".join(a) for a, _ in MODEL_CHECKS])
def test_config_error_found_against_the_model(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config_error(args, fragments, tmp_path, against_the_model=True)


# A handful through the CLI: the exit code, a message without a traceback, nothing stored.
THROUGH_THE_CLI = [
    CONFIG_ONLY[0],
    CONFIG_ONLY[3],
    CONFIG_ONLY[20],
    MODEL_CHECKS[0],
    MODEL_CHECKS[5],
    (["overrides=[1]"], ["overrides", "[1]", "head_float"]),
    CONFIG_ONLY[-1],
]


@pytest.mark.parametrize("args,fragments", THROUGH_THE_CLI, ids=[" ".join(a) for a, _ in THROUGH_THE_CLI])
def test_the_cli_exits_2_with_the_message(args, fragments, tmp_path):
    res = run_cli([*args, "store.root=store"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    for fragment in fragments:
        assert fragment in res.stderr, (fragment, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) <= 6
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_all_errors_reported_at_once(tmp_path):
    res = run_cli(
        ["quantization.scheme=int4", "calibration.batch_size=0", "target.accelerator=u55", "store.root=store"], tmp_path
    )
    assert res.returncode == 2
    assert "config errors (3)" in res.stderr
    for key in ("quantization.scheme", "calibration.batch_size", "target.accelerator"):
        assert key in res.stderr


def test_a_key_of_the_wrong_type_hides_no_other_error(tmp_path):
    config_error(
        ["calibration.batch_size=abc", "quantization.scheme=int4"],
        ["config errors (2)", "calibration.batch_size: 'abc' is not an integer", "quantization.scheme: 'int4'"],
        tmp_path,
    )


@pytest.mark.parametrize("content", [b"\x00\x01\xff binary", b"[System_Config.x\nfoo", b"no sections at all\n"])
def test_a_vela_ini_that_is_not_one(content, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.ini").write_bytes(content)
    config_error(
        ["target.config_ini=./my.ini"], ["target.config_ini", "'./my.ini' is not a readable Vela .ini"], tmp_path
    )


def test_a_user_source_keeps_its_reason(tmp_path):
    """Hydra's first line only names the target; the reason must reach the user."""
    config_error(
        ["+calibration.dataset.bogus=1"],
        ["calibration.dataset", "unexpected keyword argument 'bogus'"],
        tmp_path,
        against_the_model=True,
    )


@pytest.mark.parametrize("kind", ["complex", "strings", "nan", "shape", "string labels"])
def test_calibration_data_that_no_quantizer_can_take(kind, tmp_path):
    """Each is named with the dataset and the item, never truncated or crashed on."""
    import numpy as np

    x = np.random.RandomState(0).rand(16, 1, 8, 8).astype("float32")
    labels = np.arange(16) % 10
    fragments = {
        "complex": "complex numbers",
        "strings": "strings",
        "nan": "NaN",
        "shape": "has shape [1, 4, 4]",
        "string labels": "has label",
    }[kind]
    if kind == "complex":
        x = x + 1j * x
    elif kind == "strings":
        x = np.array(["a"] * 16)
    elif kind == "nan":
        x[3, 0, 0, 0] = np.nan
    elif kind == "shape":
        x = x[:, :, :4, :4]
    elif kind == "string labels":
        labels = np.array(["cat"] * 16)
    np.savez(tmp_path / "data.npz", inputs=x, labels=labels)
    with pytest.raises(ConfigError) as error:
        build_in_process(
            ["calibration=tensors", f"calibration.dataset.path={tmp_path / 'data.npz'}", "calibration.num_samples=16"],
            tmp_path / "store",
        )
    for fragment in ("calibration.dataset", "item", fragments):
        assert fragment in error.value.render(), (fragment, error.value.render())
    assert_nothing_stored(tmp_path / "store")


def test_checkpoint_that_does_not_fit(tmp_path):
    import torch

    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    config_error(
        [f"model.checkpoint={tmp_path / 'other.pt'}"],
        ["model.checkpoint", "other.pt", "does not load", "state_dict", "Missing key"],
        tmp_path,
        against_the_model=True,
    )


def test_override_on_a_module_never_called(user_repo):
    """A module that exists but never runs in forward() selects no operator: an error, not a
    silent no-op."""
    nets = user_repo / "mymodels" / "nets.py"
    nets.write_text(
        nets.read_text().replace(
            "self.classifier = nn.Linear(width, 4)",
            "self.classifier = nn.Linear(width, 4)\n        self.unused = nn.Linear(4, 4)",
        )
    )
    cli_config_error(
        ["hydra.searchpath=[file://conf]", "model=tiny_net", "+overrides.u={module_name: unused, scheme: float}"],
        ["overrides.u", "module_name=unused", "selects no operator"],
        user_repo,
    )


def test_vela_rejects_the_configuration(user_repo):
    """A transposed convolution compiles int8 on Ethos-U55 but not with 16-bit activations."""
    args = ["hydra.searchpath=[file://conf]", "model=upsampler", "target=ethos-u55-128", "store.root=store"]
    res = run_cli([*args, "quantization=a16w8"], user_repo)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "build failed, nothing was stored" in res.stderr
    assert "ethos-u55-128" in res.stderr and "a16w8" in res.stderr
    assert "Traceback" not in res.stderr
    assert_nothing_stored(user_repo / "store")
    # the same model and target build with int8: it is the pair that fails
    ok = run_cli([*args, "quantization=int8"], user_repo)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (user_repo / "store" / "artifacts" / "upsampler" / "v1" / "model.pte").is_file()


def cli_config_error(args: list[str], fragments: list[str], cwd: Path) -> None:
    res = run_cli([*args, "store.root=store"], cwd)
    assert res.returncode == 2, res.stderr[-2000:]
    for fragment in fragments:
        assert fragment in res.stderr, (fragment, res.stderr)
    assert "Traceback" not in res.stderr
    assert_nothing_stored(cwd / "store")
