"""Boards (board=NAME, conf/board/, docs/boards.md): a board sets the target and its Vela
settings, is checked like every group, and a build is placed in its memory regions: one that
does not fit is a budget breach naming the pool, the region and the bytes over; with
target.memory_mode=auto the fastest memory mode that fits is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import build_in_process, compose_config, csv_rows, run_cli

from ethosu_build.config import objective
from ethosu_build.config.validate import validate
from ethosu_build.errors import BudgetBreached, ConfigError
from ethosu_build.pipeline.cpu_cost import COSTS

BOARDS = sorted(p.stem for p in (Path(__file__).parents[1] / "ethosu_build" / "conf" / "board").glob("*.yaml"))
FEW = ["calibration.num_samples=16", "evaluation.num_samples=16", "evaluation.tosa_samples=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("boards") / "store"  # shared: boards of one TOSA spec share the lowering


def _issues(overrides: list[str]) -> dict[str, str]:
    container, _ = compose_config(overrides)
    with pytest.raises(ConfigError) as refused:
        validate(container)
    return {i.key: i.message for i in refused.value.issues}


def test_the_shipped_boards_are_the_ones_the_docs_list():
    assert {"corstone-300", "corstone-300-u55-256", "corstone-300-u65-256", "corstone-320", "alif-e7-hp",
            "alif-e7-he", "himax-we2"} <= set(BOARDS)  # fmt: skip
    table = (Path(__file__).parents[1] / "docs" / "boards.md").read_text()
    for name in BOARDS:
        assert f"`{name}`" in table, name


@pytest.mark.parametrize("board", BOARDS)
def test_the_digits_cnn_fits_every_shipped_board(board, store):
    """In the board's own memory mode: every pool in a region of the board, on the port its
    memory mode needs, within the region's size after the firmware's reserve."""
    artifact = build_in_process([f"board={board}", *FEW], store).artifact
    m = artifact.manifest()
    cfg = validate(compose_config([f"board={board}"])[0])
    assert m["config"]["target"]["accelerator"] == cfg.board.npu
    fit = m["board"]
    assert fit["board"] == board and fit["fits"] and fit["over"] == 0 and not fit["problems"]
    assert fit["memory_mode"] == cfg.board.memory_mode == m["memory"]["memory_mode"]
    regions = {r["name"]: r for r in fit["regions"]}
    for pool in fit["pools"]:
        region = cfg.board.regions[pool["region"]]
        if pool["port"]:
            assert pool["port"] in region.npu_ports, pool
    for name, r in regions.items():
        placed = sum(p["bytes"] for p in fit["pools"] if p["region"] == name)
        assert r["used"] == r["reserved"] + placed and r["headroom"] == r["size"] - r["used"] >= 0
    assert m["budget"]["board_fit"]["passed"] is True
    # What the CPU adds: the program's own kernel calls (the boundary quantize and dequantize
    # here), each at its stated cost, beside Vela's NPU time; latency objectives read the sum.
    cpu = fit["cpu"]
    assert cpu["cpu"] == cfg.board.cpu and cpu["clock_hz"] == cfg.board.cpu_clock_hz
    kernels = {k["op"].split(".")[0].replace("::", ".") for k in cpu["kernels"]}
    assert kernels == {op.rsplit(".", 1)[0] for op in m["delegation"]["runtime"]["cpu_kernels"]}
    for k in cpu["kernels"]:
        assert k["cycles"] == round(k["calls"] * COSTS[cfg.board.cpu]["call"] + k["per_unit"] * k["elements"])
    assert cpu["cycles"] == sum(k["cycles"] for k in cpu["kernels"])
    assert cpu["npu_ms"] == m["metrics"]["vela"]["total"]["inference_ms"]
    assert cpu["total_ms"] == pytest.approx(cpu["npu_ms"] + 1000 * cpu["cycles"] / cpu["clock_hz"], abs=1e-5)
    assert objective.METRICS["inference_ms"].read(m) == cpu["total_ms"]
    assert f"## Board: {board} ({fit['memory_mode']}): fits" in (artifact.path / "report.md").read_text()


def test_a_program_that_does_not_fit_is_a_breach_naming_pool_region_and_bytes(store):
    shrunk = ["board=corstone-320", "board.regions.SRAM.size=20000", *FEW]
    with pytest.raises(BudgetBreached) as breached:
        build_in_process(shrunk, store)
    (breach,) = breached.value.breaches
    assert breach["budget"] == "board_fit" and breach["measured"] > 0
    text = str(breached.value)
    over = int(re.search(r"over by ([\d,]+) B in SRAM", text).group(1).replace(",", ""))
    assert over == breach["measured"]
    assert "model.pte" in text and "Sram_Only" in text and "memory_mode=auto" in text
    # auto: Sram_Only is tried and rejected, a mode that reads the program over AXI1 is kept
    m = build_in_process([*shrunk, "target.memory_mode=auto"], store).artifact.manifest()
    fit = m["board"]
    assert fit["fits"] and fit["memory_mode"] != "Sram_Only" and m["memory"]["memory_mode"] == fit["memory_mode"]
    tried = {t["memory_mode"]: t for t in fit["tried"]}
    assert set(tried) == {"Sram_Only", "Dedicated_Sram_384KB", "Shared_Sram"}
    assert not tried["Sram_Only"]["fits"] and "over by" in tried["Sram_Only"]["problems"][0]
    fitting = [t for t in fit["tried"] if t["fits"]]
    assert tried[fit["memory_mode"]]["cycles"] == min(t["cycles"] for t in fitting)


def test_board_errors_are_reported_at_once_naming_each_key():
    issues = _issues(
        [
            "board=corstone-320",
            "board.regions.DDR.cpu_address=0x31100000",  # inside SRAM (hex: as typed)
            "board.regions.BRAM.reserved.code=0x300000",  # more than BRAM holds
            "board.regions.QSPI.kind=eeprom",
            "board.regions.SRAM.npu_ports=[axi7]",
        ]
    )
    assert "lies inside region SRAM" in issues["board.regions.DDR.cpu_address"]
    assert "more than the region's" in issues["board.regions.BRAM.reserved"]
    assert "'eeprom' is not supported" in issues["board.regions.QSPI.kind"]
    assert "'axi7' is not supported" in issues["board.regions.SRAM.npu_ports.0"]
    # a memory mode whose NPU data no region reaches
    issues = _issues(["board=corstone-320", "board.regions.SRAM.npu_ports=[]"])
    assert any(
        "no writable region" in m and "axi0" in m for k, m in issues.items() if k.startswith("board.memory_modes")
    )
    # a target that contradicts the board names both
    issues = _issues(["board=corstone-320", "target=ethos-u55-128"])
    assert (
        "contradicts board=corstone-320" in issues["target.accelerator"]
        and "ethos-u85-256" in issues["target.accelerator"]
    )
    issues = _issues(["board=corstone-300", "target.memory_mode=Dedicated_Sram_384KB"])
    assert "contradicts board=corstone-300" in issues["target.memory_mode"]
    assert "auto" in _issues(["target.memory_mode=auto"])["target.memory_mode"]


def test_a_users_board_on_the_searchpath_builds_and_is_checked(tmp_path, store):
    """A board of one's own is a YAML file on hydra.searchpath: the same group, the same checks."""
    shipped = yaml.safe_load(
        (Path(__file__).parents[1] / "ethosu_build" / "conf" / "board" / "corstone-300.yaml").read_text()
    )
    mine = {**shipped, "board": {**shipped["board"], "name": "my-board"}}
    mine["board"]["regions"] = {
        "RAM": {"kind": "sram", "size": 0x100000, "cpu_address": 0x20000000, "npu_ports": ["axi0", "axi1"]}
    }
    (tmp_path / "conf" / "board").mkdir(parents=True)
    (tmp_path / "conf" / "board" / "my-board.yaml").write_text(
        "# @package _global_\n# my board\n" + yaml.safe_dump(mine)
    )
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    res = run_cli(["board=my-board", searchpath, f"store.root={store}", *FEW], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    bad = run_cli(["board=my-board", searchpath, "board.regions.RAM.size=0", f"store.root={store}"], tmp_path)
    assert bad.returncode == 2 and "board.regions.RAM.size: 0 is not a size" in bad.stderr, bad.stderr[-2000:]


# --- firmware that links (arm-none-eabi-gcc: .ci/run installs Debian's gcc-arm-none-eabi) -------------

ARM_CC, ARM_SIZE = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
# Debian's GCC 12 knows no -mcpu=cortex-m85: its architecture, Armv8.1-M with Helium, stands in.
CPU_FLAGS = {"cortex-m55": ["-mcpu=cortex-m55"], "cortex-m85": ["-march=armv8.1-m.main+mve.fp+fp.dp"]}
MAIN_C = """#include "memory.h"
#include "model_pte.h"
/* The runner's pools, in the sections memory.h names (board.ld places them). */
__attribute__((section(ETHOSU_BUILD_METHOD_POOL_SECTION), aligned(16)))
unsigned char method_allocation_pool[ET_ARM_BAREMETAL_METHOD_ALLOCATOR_POOL_SIZE];
__attribute__((section(ETHOSU_BUILD_TEMP_POOL_SECTION), aligned(16)))
unsigned char temp_allocation_pool[ET_ARM_BAREMETAL_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE];
#ifdef ET_ARM_BAREMETAL_FAST_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE
__attribute__((section(ETHOSU_BUILD_FAST_SCRATCH_SECTION), aligned(16)))
unsigned char ethosu_fast_scratch[ET_ARM_BAREMETAL_FAST_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE];
#endif
void Reset_Handler(void) {
    volatile unsigned char sink = model_pte[0] ^ method_allocation_pool[0] ^ temp_allocation_pool[0];
    (void)sink;
    for (;;) {}
}
"""


def _link(folder: Path, fit: dict, cpu: str) -> subprocess.CompletedProcess:
    """A minimal image: board.ld included first, the firmware's own sections in the region
    its board reserves code in."""
    code = next(r["name"] for r in fit["regions"] if r["reserved"] and "code" in _reserved(fit["board"], r["name"]))
    (folder / "main.c").write_text(MAIN_C)
    (folder / "image.ld").write_text(
        "INCLUDE board.ld\nENTRY(Reset_Handler)\nSECTIONS\n{\n"
        f"  .text : {{ *(.text*) *(.rodata*) }} > {code}_FIRMWARE\n"
        f"  .data : {{ *(.data*) }} > {code}_FIRMWARE\n"
        f"  .bss (NOLOAD) : {{ *(.bss*) *(COMMON) }} > {code}_FIRMWARE\n}}\n"
    )
    command = [ARM_CC, *CPU_FLAGS[cpu], "-mthumb", "-O1", "-nostartfiles", "-nostdlib", "-I", str(folder)]
    command += [
        "-L",
        str(folder),
        "-T",
        str(folder / "image.ld"),
        str(folder / "main.c"),
        "-o",
        str(folder / "image.elf"),
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=folder)


def _reserved(board: str, region: str) -> dict:
    cfg = validate(compose_config([f"board={board}"])[0])
    return cfg.board.regions[region].reserved


@pytest.mark.slow  # two builds, an export and two links per board
@pytest.mark.skipif(ARM_CC is None and not os.environ.get("CI"), reason="arm-none-eabi-gcc is not installed")
@pytest.mark.parametrize("board", ["corstone-300", "corstone-320"])
def test_the_export_links_where_the_report_says_and_overflows_exactly_when_it_does_not_fit(board, store, tmp_path):
    """`export --firmware` of a board build: the image links, each pool's section at an address
    in the region the report named. The same program's placement on the board with a smaller
    region (what the build reported as not fitting, and by how many bytes) fails to link, by
    those bytes."""
    assert ARM_CC and ARM_SIZE, "CI installs gcc-arm-none-eabi (.ci/run)"
    artifact = build_in_process([f"board={board}", *FEW], store).artifact
    exported = tmp_path / "fw"
    res = run_cli(
        ["--root", str(store), "export", artifact.id, str(exported), "--firmware"], tmp_path, tool="ethosu-artifacts"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = artifact.manifest()
    cpu = validate(compose_config([f"board={board}"])[0]).board.cpu
    linked = _link(exported, m["board"], cpu)
    assert linked.returncode == 0, linked.stderr
    sections = {}
    for line in subprocess.run(
        [ARM_SIZE, "-A", str(exported / "image.elf")], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".ethosu_build."):
            sections[parts[0].removeprefix(".ethosu_build.")] = (int(parts[1]), int(parts[2]))
    regions = {r["name"]: r for r in m["board"]["regions"]}
    assert set(sections) == {p["pool"] for p in m["board"]["pools"]}
    for p in m["board"]["pools"]:
        size, address = sections[p["pool"]]
        r = regions[p["region"]]
        assert size == p["bytes"]
        assert r["cpu_address"] + r["reserved"] <= address and address + size <= r["cpu_address"] + r["size"], p

    # Shrink the one region on the NPU's arena port below the NPU's pools there: the build says
    # the program does not fit, by N bytes ...
    where = next(p["region"] for p in m["board"]["pools"] if p["pool"] == "temp_pool")
    size = sum(p["bytes"] for p in m["board"]["pools"] if p["region"] == where and p["port"]) - 1000
    with pytest.raises(BudgetBreached) as breached:
        build_in_process([f"board={board}", f"board.regions.{where}.size={size}", *FEW], store)
    over = breached.value.breaches[0]["measured"]
    # ... and the same placement, as board.ld, overflows that region by the same N bytes.
    from ethosu_build.pipeline import firmware, placement

    shrunk = validate(compose_config([f"board={board}", f"board.regions.{where}.size={size}"])[0])
    fit = placement.place(m["memory"], shrunk.board, shrunk.target, m["board"]["memory_mode"])
    assert not fit["fits"] and fit["over"] == over
    (exported / "board.ld").write_text(firmware.linker_fragment({**m, "board": fit}))
    failed = _link(exported, fit, cpu)
    assert failed.returncode != 0
    assert f"region `{where}' overflowed by {over} bytes" in failed.stderr, failed.stderr


@pytest.mark.slow  # a real Hydra multirun of four builds
def test_a_sweep_over_boards_says_which_fit_and_with_what_room(tmp_path, store):
    """-m over boards: the summary's fits and headroom_kib columns; a point that does not fit is
    a breached job with its negative headroom, as the optimizing sweep's constraint reads it."""
    res = run_cli(
        ["-m", "board=corstone-300,corstone-320", "board.regions.SRAM.size=20000,4194304", f"store.root={store}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", *FEW],
        tmp_path,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr[-2000:]  # one job breached a budget, nothing else failed
    rows = {
        (r["overrides"].split()[0], r["overrides"].split()[1]): r for r in csv_rows(tmp_path / "sweep" / "summary.csv")
    }
    small, large = "board.regions.SRAM.size=20000", "board.regions.SRAM.size=4194304"
    assert rows[("board=corstone-320", small)]["status"] == "budget"
    assert (
        rows[("board=corstone-320", small)]["fits"] == "False"
        and float(rows[("board=corstone-320", small)]["headroom_kib"]) < 0
    )
    for key in [("board=corstone-300", small), ("board=corstone-300", large), ("board=corstone-320", large)]:
        assert rows[key]["status"] in ("built", "reused", "up_to_date") and rows[key]["fits"] == "True", rows[key]
        assert float(rows[key]["headroom_kib"]) > 0
    assert float(rows[("board=corstone-320", large)]["headroom_kib"]) > float(
        rows[("board=corstone-300", small)]["headroom_kib"]
    )
    assert "| fits | headroom KiB |" in (tmp_path / "sweep" / "summary.md").read_text()
