"""Every bad input ends in exit code 2 with a message naming the key, the bad value and what
is accepted, no traceback, and nothing in the store. A configuration Vela cannot compile
exits 1, names the configuration, and stores nothing either."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_nothing_stored, build_in_process, compose_config, run_cli

from ethosu_build.config.validate import validate
from ethosu_build.errors import ConfigError
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
    (["quantization.observer=min_max"], ["quantization.observer", "'min_max'", "histogram, minmax"]),
    (
        ["+overrides.x={module_name: head, scheme: float, observer: minmax}"],
        ["overrides.x.observer", "'minmax'", "scheme float", "null"],
    ),
    (
        ["quantization=int8_qat", "+overrides.x={module_name: head, observer: minmax}"],
        ["overrides.x.observer", "'minmax'", "quantization.qat is set", "histogram"],
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
    # Hydra reads it as a number: the message says how to keep it text
    (["name=2024"], ["name", "2024 is not a string", "as a number", "quote it", "'name=\"2024\"'"]),
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
        ["quantization.qat.num_samples", "5000", "null (all of it) or 1..1437"],
    ),
    (
        ["quantization=int8_qat", "calibration=random", "quantization.qat.loss=cross_entropy"],
        ["quantization.qat.loss", "needs labels", "distill or auto"],
    ),
    (
        ["model.factory._target_=ethosu_build.models.no_such_model"],
        ["model.factory", "no_such_model", "could not be called", "No module named"],
    ),
    (
        ["+overrides.x={module_type: torch.nn.Module, scheme: float}"],
        [
            "overrides.x.module_type",
            "'torch.nn.Module' is the base class of every module",
            "a concrete class",
            "torch.nn.Linear",
        ],
    ),  # fmt: skip
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
    assert "HYDRA_FULL_ERROR" not in text  # ethosu-build sets it itself; the message carries the cause
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
    assert "Error executing job" not in res.stderr  # Hydra's own line: ours says it all
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


@pytest.mark.parametrize("body", ["raise RuntimeError('boom at import')", "def broken(:\n", "import sys; sys.exit(3)"])
def test_an_override_type_whose_module_fails_to_import(body, tmp_path, monkeypatch):
    """A user's module is user code: raising, a syntax error or sys.exit at import is a config
    error naming the key, never a crash."""
    package = f"usermods_{abs(hash((body, str(tmp_path)))) % 10**8}"  # fresh: not in sys.modules
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "layers.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config_error(
        [f"+overrides.x={{module_type: {package}.layers.Mod, scheme: a16w8}}"],
        ["overrides.x.module_type", f"{package}.layers.Mod", "cannot be imported", "torch.nn.Module subclass"],
        tmp_path,
        against_the_model=True,
    )


def test_an_empty_dataset_names_its_path(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "empty.npz", inputs=np.zeros((0, 1, 8, 8), np.float32))
    config_error(
        ["calibration=tensors", f"calibration.dataset.path={tmp_path / 'empty.npz'}"],
        ["calibration.dataset", "empty.npz", "holds no samples", "accepted: a dataset of at least one sample"],
        tmp_path,
        against_the_model=True,
    )
    with pytest.raises(ConfigError) as error:
        container, recipe = compose_config(
            ["calibration=tensors", f"calibration.dataset.path={tmp_path / 'empty.npz'}", f"store.root={tmp_path}"]
        )
        cfg = validate(container, default_name=recipe)
        Run(cfg, stage_keys(cfg)).model()
    assert "1..0" not in error.value.render()


def test_a_store_root_whose_parent_cannot_be_created(tmp_path):
    """Hydra makes its run folder right after the config check: a root it cannot make is named
    before, not a traceback of Hydra's mkdir."""
    for sweep in ([], ["-m", "quantization=int8,a16w8"]):
        res = run_cli([*sweep, "store.root=/proc/nope/out"], tmp_path)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "store.root: '/proc/nope/out' cannot be created" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "a bug in ethosu-build" not in res.stderr


@pytest.mark.parametrize(
    "args,named",
    [
        (
            ["hydra.run.dir=store/artifacts/mine"],
            "hydra.run.dir: 'store/artifacts/mine' lies in the store's artifacts/",
        ),
        (
            ["-m", "hydra.sweep.dir=store/artifacts/sw", "quantization=int8,a16w8"],
            "hydra.sweep.dir: 'store/artifacts/sw'",
        ),
        (["hydra.run.dir=store/cache/run"], "hydra.run.dir: 'store/cache/run' lies in the store's cache/"),
    ],
)
def test_a_run_or_sweep_dir_inside_the_stores_own_trees_is_refused(args, named, tmp_path):
    """A run's build.log and .hydra/ inside artifacts/ would make a half-present version."""
    res = run_cli([*args, "store.root=store"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert named in res.stderr and "which only ethosu-build writes" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_the_joblib_launcher_with_no_jobs_is_a_config_error(tmp_path):
    res = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "quantization=int8,a16w8",
                   "store.root=store"], tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "hydra.launcher.n_jobs: 0" in res.stderr and "-1: one per core" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list((tmp_path / "store").rglob("result.json"))


def test_a_working_folder_removed_under_the_command(tmp_path):
    import subprocess

    from conftest import BIN

    for command in (f"ethosu-build store.root={tmp_path / 'store'}", f"ethosu-artifacts --root {tmp_path} ls"):
        gone = tmp_path / "gone"
        gone.mkdir()
        res = subprocess.run(
            ["sh", "-c", f"cd {gone} && rmdir {gone} && exec {BIN}/{command}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 2, res.stderr[-2000:]
        assert "working folder" in res.stderr and "no longer exists" in res.stderr
        assert "Traceback" not in res.stderr


def test_a_file_size_limit_is_a_failed_build_not_a_config_error(tmp_path):
    """`ulimit -f`: Hydra's first file of the run (its .hydra/config.yaml) cannot be written.
    Run in its own process (a warm build service would not have the limit)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    import subprocess

    from conftest import BIN

    res = subprocess.run(
        [str(BIN / "ethosu-build"), "store.root=store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "ETHOSU_BUILD_WARM": "off"},
        preexec_fn=limit,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "build failed, nothing was stored" in res.stderr and "File too large" in res.stderr, res.stderr
    assert "config error" not in res.stderr and "Traceback" not in res.stderr
    assert_nothing_stored(tmp_path / "store")


def test_an_io_error_during_a_build_is_a_failed_build(tmp_path, monkeypatch):
    import contextlib
    import errno

    from ethosu_build.errors import EXIT_BUILD_FAILED, BuildError
    from ethosu_build.store.cache import StageCache

    @contextlib.contextmanager
    def failing(self, key, stage):
        raise OSError(errno.EIO, "Input/output error", str(self.path(key)))
        yield

    monkeypatch.setattr(StageCache, "put", failing)
    with pytest.raises(BuildError) as error:
        build_in_process(["calibration.num_samples=8"], tmp_path / "store")
    assert error.value.exit_code == EXIT_BUILD_FAILED
    assert "Input/output error" in error.value.render() and "build failed, nothing was stored" in error.value.render()
    assert_nothing_stored(tmp_path / "store")


@pytest.mark.parametrize(
    "recipe",
    [
        "calibration:\n  num_samples: 8\n",
        "defaults:\n  - override /target: ethos-u85-256\ncalibration:\n  num_samples: 8\n",
    ],
    ids=["keys", "defaults"],
)
def test_a_user_recipe_without_its_package_header(recipe, user_repo):
    (user_repo / "conf" / "recipe" / "headless.yaml").write_text(recipe)
    cli_config_error(
        ["hydra.searchpath=[file://conf]", "recipe=headless"],
        ["recipe", "'# @package _global_'", "first line"],
        user_repo,
    )


@pytest.mark.parametrize(
    "sweep,named",
    [
        ("calibration.num_samples=range(10,5)", "'calibration.num_samples=range(10,5)' holds no value"),
        ("calibration.num_samples=tag(int, interval(64, 8))", "is not an interval to sample"),
        ("calibration.batch_size=tag(log, int, interval(0, 8))", "0 < low < high (a log scale)"),
    ],
)
def test_an_optimizing_sweeps_empty_space_is_named(sweep, named, tmp_path):
    from ethosu_build.sweep import optimize

    with pytest.raises(ConfigError) as error:
        optimize.parse_space([sweep], None)
    assert named in error.value.render() and sweep.split("=")[0] in error.value.render()
    if "range" in sweep:  # and through the CLI, before any trial
        res = run_cli(["-m", "hydra/sweeper=optimize", "objective={inference_ms: min}", sweep, "store.root=store"],
                      tmp_path)  # fmt: skip
        assert res.returncode == 2 and named in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "content",
    [b"[1, 2]", b'"done"', b'{"status": 5}', b'{"status": "built", "inference_ms": "fast"}',
     b'{"status": "built", "overrides": "quantization=int8"}', b'{"status": "built", "objective": {"a": 1}}',
     b"\xff\xfe not text", b"{"],
)  # fmt: skip
def test_summarize_reports_a_malformed_result_as_an_unreadable_row(content, tmp_path):
    import json

    sweep = tmp_path / "sweep"
    for job, body in (("0", content), ("1", b'{"status": "built", "overrides": ["quantization=int8"]}')):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / "result.json").write_bytes(body)
    res = run_cli(["summarize", str(sweep), "--json"], tmp_path, tool="ethosu-artifacts")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["job"]: r for r in json.loads(res.stdout)}
    assert rows["0"]["status"] == "incomplete" and rows["0"]["error"].startswith("unreadable result.json"), rows
    assert rows["1"]["status"] == "built"
    assert (sweep / "summary.md").is_file() and "Traceback" not in res.stderr
