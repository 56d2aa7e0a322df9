"""Typed schema of every config group.

The dataclasses here are the single description of what a composed config may contain:
`validate.py` walks them to report every unknown key, wrong type and bad value at once,
and the build stages receive instances of them, never raw dicts. They import nothing heavy.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigIssue, accepted

# An artifact name is a folder name: `artifacts/<name>/v<N>/`. At most NAME_MAX characters
# leaves room for `.staging-<id>` and the version inside a file system's 255-byte names.
# ASCII only and matched whole (\Z, not $, which also matches before a final newline).
NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
NAME_MAX = 100

# All Ethos-U configurations Vela accepts for `--accelerator-config`.
TARGETS: tuple[str, ...] = (
    "ethos-u55-32",
    "ethos-u55-64",
    "ethos-u55-128",
    "ethos-u55-256",
    "ethos-u65-256",
    "ethos-u65-512",
    "ethos-u85-128",
    "ethos-u85-256",
    "ethos-u85-512",
    "ethos-u85-1024",
    "ethos-u85-2048",
)
SCHEMES: tuple[str, ...] = ("int8", "a16w8", "a8w4")
OVERRIDE_SCHEMES: tuple[str, ...] = ("int8", "a16w8", "a8w4", "float")
# 4-bit weights only through quantization-aware training (the quantizer offers a8w4 for QAT).
QAT_ONLY_SCHEMES: tuple[str, ...] = ("a8w4",)
# How calibration sets an activation's range: histogram (EthosUQuantizer's own: the range with
# the least squared quantization error, which may clip rare values) or minmax (the observed
# minimum and maximum: nothing clipped, coarser codes). Post-training only.
DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")  # a dotted Python path, e.g. torch.nn.Linear
OBSERVERS: tuple[str, ...] = ("histogram", "minmax")
QAT_OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
# auto: cross_entropy against the labels when the dataset has them, else distill (mean
# squared error against the float model's outputs).
QAT_LOSSES: tuple[str, ...] = ("auto", "cross_entropy", "distill")
IO_DTYPES: tuple[str | None, ...] = (None, "uint8")
# The CPU side of the program: keep the boundary (de)quantize ops as portable quantized
# kernels, or turn them into cortex_m:: ops as ExecuTorch's own aot_arm_compiler does.
CPU_QDQ_KERNELS: tuple[str, ...] = ("cortex_m", "portable")
VELA_OPTIMISE: tuple[str | None, ...] = (None, "Performance", "Size")  # null: Vela's default
# Layout of the program's 4-D inputs (and the outputs that follow it): nhwc (channels-last)
# lets the NPU read and write its own layout, with no transposes at the graph's edges.
IO_LAYOUTS: tuple[str, ...] = ("nchw", "nhwc")
# Graph rewrites that compute the same function (rewrites.py); applied before quantization.
REWRITES: tuple[str, ...] = ("avg_pool_crop", "conv_space_to_depth")


# dtypes a model input may have (model.inputs); float32 inputs are the ones quantized.
INPUT_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "bool")


@dataclass
class InputSpec:
    """One input of the model's forward, in argument order."""

    name: str = ""  # the forward argument's name
    shape: list[int] = field(default_factory=list)  # batch 1 first
    dtype: str = "float32"  # float32 inputs are quantized; int and bool inputs pass as they are


@dataclass
class ModelConfig:
    name: str = "model"  # the model's name: the artifact's, unless the top-level name is set
    factory: dict[str, Any] = field(default_factory=dict)  # Hydra `_target_` + kwargs
    checkpoint: str | None = None  # state_dict file loaded into the factory's module
    input_shape: list[int] | None = field(default_factory=list)  # one float32 input, batch 1 (shorthand)
    inputs: list[InputSpec] = field(default_factory=list)  # several inputs, or one of another dtype
    # raw frame -> the first input: steps the `images` source applies and the firmware repeats (preprocess.py)
    preprocess: list[dict[str, Any]] = field(default_factory=list)

    def input_specs(self) -> list[InputSpec]:
        """The model's inputs: model.inputs, or the one float32 `input` of input_shape."""
        return list(self.inputs) or [InputSpec("input", list(self.input_shape or []), "float32")]


@dataclass
class TargetConfig:
    accelerator: str = "ethos-u55-128"  # Vela --accelerator-config (the target option sets it)
    system_config: str | None = None  # null: ExecuTorch's default for the family
    memory_mode: str | None = None  # a memory mode of the .ini; null: ExecuTorch's default for the family
    config_ini: str | None = None  # null: Vela's bundled Arm/vela.ini
    optimise: str | None = None  # Vela --optimise: Performance | Size (null: Vela's default, Performance)
    arena_cache_size: int | None = None  # Vela --arena-cache-size in bytes (null: the memory mode's)
    vela_flags: list[str] = field(default_factory=list)  # any other Vela compile flag, in full: --name=value
    cpu_qdq_kernels: str = "cortex_m"  # the (de)quantize at the NPU graph's edges: cortex_m:: or portable kernels


@dataclass
class LoweringConfig:
    """How the quantized graph reaches the NPU, without changing what it computes."""

    io_layout: str = "nchw"  # nhwc: the firmware feeds (and reads) 4-D tensors channels-last
    rewrites: list[str] = field(default_factory=list)  # equivalent graph rewrites before quantization, in order


@dataclass
class QatConfig:
    """Quantization-aware training: prepare_qat_pt2e, this many epochs, then convert."""

    dataset: dict[str, Any] = field(default_factory=dict)  # as calibration.dataset
    num_samples: int | None = None  # null: the whole dataset
    batch_size: int = 32  # samples per training step
    seed: int = 0  # sample order
    epochs: int = 3  # passes over the training samples
    optimizer: str = "adam"  # sgd: with momentum 0.9
    lr: float = 1e-4  # learning rate
    loss: str = "auto"  # auto: cross_entropy with labels, else distill (MSE against the float model)


@dataclass
class QuantizationConfig:
    scheme: str = "int8"  # the global scheme (a8w4 needs qat)
    per_channel: bool = True  # a weight scale per output channel; false: one per tensor
    io: str | None = None  # null: the model's inputs and outputs follow the scheme; uint8: uint8 there
    qat: QatConfig | None = None  # quantization-aware training; null: post-training quantization (calibration)
    observer: str = "histogram"  # activation ranges in calibration: histogram (EthosUQuantizer's) or minmax


@dataclass
class OverrideEntry:
    """One per-module override; exactly one selector is set."""

    module_name: str | None = None  # a module's qualified name and its children, e.g. blocks.1
    module_type: str | None = None  # dotted class path, e.g. torch.nn.Linear
    io: bool | None = None  # true: the model inputs and outputs
    scheme: str = "int8"  # what the selected modules get (float: left unquantized, on the CPU)
    observer: str | None = None  # the selected modules' activation observer; null: quantization.observer

    SELECTORS = ("module_name", "module_type", "io")

    def selector(self) -> tuple[str, Any]:
        for key in self.SELECTORS:
            value = getattr(self, key)
            if value is not None and value is not False:
                return key, value
        raise AssertionError("validated entries always have a selector")

    def describe(self) -> str:
        key, value = self.selector()
        return f"{key}={value}" if key != "io" else "io"


@dataclass
class DatasetConfig:
    """Where samples come from: `dataset` is a Hydra `_target_` call (see data/)."""

    dataset: dict[str, Any] = field(default_factory=dict)  # the source: a `_target_` and its arguments
    num_samples: int | None = 128  # null: the whole dataset (the image and folder options' default)
    batch_size: int = 32  # calibration: samples per observer call; evaluation: per forward pass (speed only)
    seed: int | None = None  # null: the first num_samples items in order; an int: a seeded random draw


@dataclass
class EvaluationConfig(DatasetConfig):
    num_samples: int | None = 256
    tosa_check: bool = True  # run the TOSA given to Vela on the TOSA reference model
    tosa_samples: int = 16  # evaluation samples the TOSA check runs
    per_layer: bool = False  # the per-layer table (accuracy per quantized point) in the report, with its plot


@dataclass
class BudgetConfig:
    max_cpu_ops: int | None = None  # compute ops left on the CPU
    max_sram_kib: float | None = None  # the memory bill's SRAM (pipeline/memory.py)
    max_flash_kib: float | None = None  # the memory bill's flash
    max_planned_kib: float | None = None  # ExecuTorch's planned activation buffers alone
    max_accuracy_drop: float | None = None  # top-1 points below float (labelled evaluation data)
    max_inference_ms: float | None = None  # Vela's estimated inference time


# A board's memory (board=NAME, conf/board/; placement: pipeline/placement.py).
REGION_KINDS: tuple[str, ...] = ("tcm", "sram", "mram", "flash", "ddr")
READ_ONLY_KINDS: tuple[str, ...] = ("mram", "flash")  # at run time: the program may sit there, no buffer may
# Vela's two AXI areas (the memory mode's const/arena/cache_mem_area): on a U85, Axi0 is its
# AXI_SRAM ports and Axi1 its AXI_EXT port.
NPU_PORTS: tuple[str, ...] = ("axi0", "axi1")
CPUS: tuple[str, ...] = ("cortex-m55", "cortex-m85")  # the CPUs whose kernel costs are known (pipeline/cpu_cost.py)
AUTO = "auto"  # target.memory_mode / board.memory_mode: the build chooses among board.memory_modes


@dataclass
class RegionConfig:
    """One memory region of a board, as its linker script and the NPU see it."""

    kind: str = "sram"  # tcm | sram | mram | flash | ddr (mram and flash are read-only at run time)
    size: int = 0  # bytes
    cpu_address: int = 0  # where the CPU sees it (the linker script's ORIGIN)
    npu_address: int | None = None  # where the NPU sees it, if not there (an Alif TCM's global alias)
    npu_ports: list[str] = field(default_factory=list)  # Vela's AXI areas that reach it (axi0, axi1); []: none
    reserved: dict[str, int] = field(default_factory=dict)  # what the firmware keeps here (code, stack, heap: bytes)


@dataclass
class BoardConfig:
    """A board: its NPU (a target), CPU and memory regions (board=NAME; docs/boards.md)."""

    name: str = ""  # the board's name
    npu: str = ""  # its Ethos-U configuration: target.accelerator must be this
    cpu: str = "cortex-m55"  # the CPU that runs what stays off the NPU
    cpu_clock_hz: int = 0  # its clock, for the CPU estimate
    # the memory mode to build for, or auto: the fastest of memory_modes that fits (target.memory_mode follows it)
    memory_mode: str = ""
    memory_modes: list[str] = field(default_factory=list)  # the modes the board's firmware supports
    regions: dict[str, RegionConfig] = field(default_factory=dict)  # by the linker script's name, in its order
    sources: list[str] = field(default_factory=list)  # where every number came from


TRACKING_BACKENDS: tuple[str, ...] = ("none", "mlflow")


@dataclass
class TrackingConfig:
    """Where builds and sweeps are logged (tracking.py); in no build key."""

    backend: str = "none"  # none | mlflow (tracking=mlflow sets it)
    uri: str | None = None  # null: the embedded store under store.root
    experiment: str | None = None  # null: the artifact's name (a sweep: the config's name)
    log_model: bool = True  # model.pte among the run's artifacts


@dataclass
class StoreConfig:
    root: str = "outputs"  # artifacts/, cache/, runs/ and sweeps/ live here


@dataclass
class BuildConfig:
    name: str | None = None  # the artifact's name; null: the recipe name, else model.name
    model: ModelConfig = field(default_factory=ModelConfig)  # the network and its example input
    target: TargetConfig = field(default_factory=TargetConfig)  # the Ethos-U configuration and Vela's settings
    board: BoardConfig | None = None  # the board it ships on (board=NAME): fit region by region; null: none
    lowering: LoweringConfig = field(default_factory=LoweringConfig)  # how the graph reaches the NPU
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)  # the global scheme
    # per-module schemes: named entries, each with one selector, applied in order after the global scheme
    overrides: dict[str, OverrideEntry] = field(default_factory=dict)
    calibration: DatasetConfig = field(default_factory=DatasetConfig)  # the samples the quantizer observes
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)  # held-out samples: accuracy, TOSA check
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # build gates: a breach stores nothing (exit 3)
    store: StoreConfig = field(default_factory=StoreConfig)  # versioned artifacts and the stage cache
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow runs (docs/tracking.md); in no build key
    allow_dirty: bool = False  # build a recipe whose file has uncommitted changes
    strict: bool = False  # fail (not warn) when tools or inputs drift from the recipe's lock
    # {metric: min|max, ...}: what a job returns to an optimizing sweeper (hydra/sweeper=optimize, docs/sweeps.md)
    objective: Any = None


SEARCH_SCHEMES: tuple[str, ...] = ("a16w8", "int8", "float")  # what a module chosen by ethosu-search may get


@dataclass
class SearchConfig:
    """ethosu-search: which modules get 16-bit activations (docs/search.md)."""

    modules: list[str] | None = None  # candidates; null: every Conv/Linear module
    depth: int | None = None  # group candidates by the first `depth` parts of their names
    scheme: str = "a16w8"  # the scheme a chosen module gets: a16w8 | int8 | float
    max_accuracy_drop: float | None = None  # goal of the quick answer: top-1 points below float at most
    min_sqnr_db: float | None = None  # and/or: SQNR against float (dB) at least
    max_cycles: float | None = None  # points over this Vela cycle budget are not built
    trials: int = 0  # Optuna NSGA-II trials after the greedy pass (0: greedy only)
    front: int = 4  # at most this many mixed configurations are built
    seed: int = 0  # seeds the Optuna trials


# Values a key may take, where the set is closed. validate.py reports these as "accepted".
CHOICES: dict[str, tuple] = {
    "target.accelerator": TARGETS,
    "model.inputs.*.dtype": INPUT_DTYPES,
    "target.cpu_qdq_kernels": CPU_QDQ_KERNELS,
    "target.optimise": VELA_OPTIMISE,
    "lowering.io_layout": IO_LAYOUTS,
    "lowering.rewrites.*": REWRITES,
    "quantization.scheme": SCHEMES,
    "quantization.io": IO_DTYPES,
    "overrides.*.scheme": OVERRIDE_SCHEMES,
    "quantization.observer": OBSERVERS,
    "overrides.*.observer": OBSERVERS,
    "quantization.qat.optimizer": QAT_OPTIMIZERS,
    "quantization.qat.loss": QAT_LOSSES,
}


def choice(issues: list[ConfigIssue], key: str, value: Any, choices_key: str | None = None) -> bool:
    """Whether `value` is one of the CHOICES for `key` (or `choices_key`, for a `*` pattern);
    if not, an issue naming the key, the value and what is accepted."""
    choices = CHOICES[choices_key or key]
    if value not in choices:
        issues.append(ConfigIssue(key, f"{value!r} is not supported; {accepted(choices, value)}"))
        return False
    return True


def accepted_keys(dotted: str) -> list[str] | None:
    """The keys the schema accepts at the parent of `dotted` (for Hydra's override errors)."""
    tp: Any = BuildConfig
    for part in dotted.split(".")[:-1]:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else None


def type_name(tp: Any) -> str:
    """How an error names a schema type: "an integer", "a list of a string", ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))
