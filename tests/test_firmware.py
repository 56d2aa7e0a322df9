"""From artifact to firmware: the memory bill against ExecuTorch's own figures, a budget on
the planned pools, `export --firmware` compiled by the host C and C++ compilers, the bundled
program against the stored TOSA check, bad input, and a program with nothing on the NPU."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from conftest import build_in_process, manifest, run_cli

from ethosu_build.config.schema import TargetConfig
from ethosu_build.errors import BudgetBreached
from ethosu_build.fingerprint import file_sha256
from ethosu_build.pipeline.memory import bill

QUICK = ["calibration.num_samples=16", "evaluation.num_samples=32", "evaluation.tosa_samples=6"]
CC = shutil.which("cc") or shutil.which("gcc")  # .ci/run installs one where missing
ARM_CC = shutil.which("arm-none-eabi-gcc")  # the firmware's compiler, where installed


def cli(args, root, cwd=None):
    return run_cli(["--root", str(root), *args], cwd or root.parent, tool="ethosu-artifacts")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("firmware") / "store"
    return build_in_process(QUICK, root).artifact


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    dest = tmp_path_factory.mktemp("fw") / "bundle"
    res = cli(["export", built.id, str(dest), "--firmware"], built.path.parents[2])
    assert res.returncode == 0, res.stderr[-3000:]
    return dest


def _flatc_json(pte: bytes) -> dict:
    """The program as ExecuTorch's flatc renders it: no code of ours in the way."""
    from executorch.exir._serialize._flatbuffer import _program_flatbuffer_to_json

    return json.loads(_program_flatbuffer_to_json(pte))


def test_the_planned_buffers_are_executorchs_and_a_budget_below_them_exits_3(built, tmp_path):
    m = built.manifest()
    plan = _flatc_json((built.path / "model.pte").read_bytes())["execution_plan"][0]
    sizes = [int(n) for n in plan["non_const_buffer_sizes"]]
    assert [b["bytes"] for b in m["memory"]["planned_buffers"]] == sizes[1:] and sum(sizes) > 0
    assert m["memory"]["parts"]["planned"]["bytes"] == sum(sizes)
    # the runtime sees the IO inside the planned buffers, with the sizes the bill names
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program((built.path / "model.pte").read_bytes()).metadata("forward")
    assert m["memory"]["io"]["inside_planned"] and m["memory"]["io"]["inputs"] == [meta.input_tensor_meta(0).nbytes()]
    # SRAM and flash judge the whole bill of the memory mode (u55 default: Shared_Sram)
    regions, parts = m["memory"]["regions"], m["memory"]["parts"]
    assert regions["flash"] == parts["pte"]["bytes"] == built.path.joinpath("model.pte").stat().st_size
    assert regions["sram"] == sum(p["bytes"] for p in parts.values() if p["region"] == "sram") > sum(sizes)
    assert m["budget"] == {}
    limit = round(sum(sizes) / 1024 - 0.01, 3)
    with pytest.raises(BudgetBreached) as breach:
        build_in_process([*QUICK, f"budget.max_planned_kib={limit}"], tmp_path)
    assert breach.value.exit_code == 3 and "max_planned_kib" in breach.value.render()
    ok = build_in_process([*QUICK, f"budget.max_planned_kib={round(sum(sizes) / 1024, 3) + 0.01}"], tmp_path)
    assert ok.artifact.manifest()["budget"]["max_planned_kib"]["passed"]


def test_each_memory_mode_places_the_bill_where_its_ini_says(built):
    """The same program, placed for two other memory modes of Vela's .ini."""
    pte = (built.path / "model.pte").read_bytes()
    sram_only = bill(pte, TargetConfig(accelerator="ethos-u85-256", memory_mode="Sram_Only"))
    assert set(sram_only["regions"]) == {"sram"}  # everything, the program too
    dedicated = bill(pte, TargetConfig(accelerator="ethos-u65-256", memory_mode="Dedicated_Sram_384KB"))
    assert dedicated["parts"]["npu_fast_scratch"] == {"bytes": 384 * 1024, "region": "sram", "how": "configured"}
    assert dedicated["regions"]["sram"] == 384 * 1024  # the SRAM is the NPU's alone
    assert {dedicated["parts"][k]["region"] for k in ("planned", "method_allocator", "npu_scratch")} == {"dram"}


def _main_c(runtime: dict) -> str:
    """A firmware's main: writes model_pte to argv[1], prints the counts, then a line per
    input and output (name, last dimension, numel, and scale and zero point where quantized),
    the array's alignment and the pool sizes."""
    lines = [
        "#include <stdio.h>",
        "unsigned char first_byte(void);",
        '#include "model_pte.h"',
        '#include "model_io.h"',
        '#include "memory.h"',
        "int main(int argc, char **argv) {",
        '  FILE *f = fopen(argv[1], "wb");',
        "  fwrite(model_pte, 1, MODEL_PTE_SIZE, f);",
        "  fclose(f);",
        '  printf("%d %d\\n", MODEL_INPUT_COUNT, MODEL_OUTPUT_COUNT);',
    ]
    for kind in ("INPUT", "OUTPUT"):
        for i in range(len(runtime[kind.lower() + "s"])):
            p = f"MODEL_{kind}_{i}"
            lines += [
                "  {",
                f"    int shape[] = {p}_SHAPE;",
                f'    printf("%s %d %lu", {p}_NAME, shape[{p}_RANK - 1], (unsigned long){p}_NUMEL);',
                f"#if {p}_QUANTIZED",
                f'    printf(" %.17g %d", (double){p}_SCALE, {p}_ZERO_POINT);',
                "#endif",
                '    printf("\\n");',
                "  }",
            ]
    lines += [
        '  printf("%lu %u %u\\n", (unsigned long)((size_t)model_pte % 16),',
        "         ET_ARM_BAREMETAL_METHOD_ALLOCATOR_POOL_SIZE, ET_ARM_BAREMETAL_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE);",
        "  return argc == 2 && first_byte() == model_pte[0] ? 0 : 1;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def check_headers(m: dict, folder, pte, tmp_path) -> list[list[str]]:
    """Compiles the bundle's headers into two translation units with the host C and C++
    compilers (-Wall -Wextra -Werror; and for a Cortex-M55 with arm-none-eabi-gcc where
    installed), runs them, and checks what they print against the manifest: every input's and
    output's shape and quantization, the array's bytes and alignment, the pools. Returns the
    printed line of each input and output (the C build's), split."""
    runtime = m["delegation"]["runtime"]
    main = tmp_path / "main.c"
    main.write_text(_main_c(runtime))
    # A second translation unit including every header links beside the first (model_pte.h
    # defines the array in one file only: MODEL_PTE_EXTERN elsewhere).
    other = tmp_path / "other.c"
    other.write_text(
        '#define MODEL_PTE_EXTERN\n#include "model_pte.h"\n#include "model_io.h"\n#include "memory.h"\n'
        "unsigned char first_byte(void) { return model_pte[0]; }\n"
    )
    assert CC, "no C compiler on PATH (cc or gcc)"
    if ARM_CC:  # the firmware's own compiler, object files only (no board's startup code here)
        for source in (main, other):
            cc = subprocess.run(
                [ARM_CC, "-mcpu=cortex-m55", "-mthumb", "-Wall", "-Wextra", "-Werror", "-I", str(folder), "-c",
                 "-o", str(source.with_suffix(".o")), str(source)],
                capture_output=True, text=True,
            )  # fmt: skip
            assert cc.returncode == 0, cc.stderr
    printed = []
    for compiler, source in ((CC, main), (shutil.which("c++") or shutil.which("g++"), main.with_suffix(".cpp"))):
        if compiler is None:  # C++ too where the machine has it
            continue
        source.write_text(main.read_text())
        second = other if source == main else other.with_suffix(".cpp")
        if source != main:  # C linkage, as a C++ firmware would declare the C file's function
            second.write_text(
                other.read_text().replace("unsigned char first_byte", 'extern "C" unsigned char first_byte')
            )
            source.write_text(
                source.read_text().replace(
                    "unsigned char first_byte(void);", 'extern "C" unsigned char first_byte(void);'
                )
            )
        exe = tmp_path / f"check_{source.suffix[1:]}"
        cc = subprocess.run(
            [compiler, "-Wall", "-Wextra", "-Werror", "-I", str(folder), "-o", str(exe), str(source), str(second)],
            capture_output=True,
            text=True,
        )
        assert cc.returncode == 0, cc.stderr
        out = subprocess.run([str(exe), str(tmp_path / "bytes.bin")], capture_output=True, text=True, check=True)
        assert (tmp_path / "bytes.bin").read_bytes() == pte.read_bytes()
        counts, *entries, last = [line.split() for line in out.stdout.splitlines()]
        assert counts == [str(len(runtime["inputs"])), str(len(runtime["outputs"]))]
        for line, x in zip(entries, runtime["inputs"] + runtime["outputs"]):
            assert int(line[1]) == x["shape"][-1] and int(line[2]) == math.prod(x["shape"])
            q = x.get("quantization")
            if q:
                assert (float(line[3]), int(line[4])) == (q["scale"], q["zero_point"])
            else:
                assert len(line) == 3
        misalign, method_pool, scratch_pool = last
        assert misalign == "0"
        parts = m["memory"]["parts"]
        assert int(method_pool) >= parts["planned"]["bytes"] + parts["method_allocator"]["bytes"]
        assert int(scratch_pool) >= parts["npu_scratch"]["bytes"] > 0
        printed = printed or entries
    return printed


def test_the_headers_compile_and_hold_the_artifact(built, exported, tmp_path):
    m = built.manifest()
    entries = check_headers(m, exported, built.path / "model.pte", tmp_path)
    assert [e[0] for e in entries] == ["input", "output_0"]  # one output: no names of its own
    assert all(len(e) == 5 for e in entries)  # both quantized at the boundary
    ops = (exported / "selected_ops.txt").read_text().strip().split(",")
    assert ops and all("::" in op and op.endswith(".out") for op in ops)


def test_a_new_export_folder_is_made_as_mkdir_would(exported, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    assert exported.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777


def check_bundle(artifact, folder) -> int:
    """model.bpte holds the artifact's program and, per test case, every input and every
    expected output of the stored TOSA check, in order; returns the number of outputs."""
    from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

    bundle = deserialize_from_flatbuffer_to_bundled_program((folder / "model.bpte").read_bytes())
    assert bytes(bundle.program) == (artifact.path / "model.pte").read_bytes()
    (suite,) = bundle.method_test_suites
    assert suite.method_name == "forward" and len(suite.test_cases) == 4  # the default of --bundle-samples
    with np.load(io.BytesIO((artifact.path / "check" / "tosa_io.npz").read_bytes())) as z:
        stored = {k: z[k] for k in z.files}
    outputs = len(artifact.manifest()["delegation"]["runtime"]["outputs"])
    assert sorted(stored) == sorted(
        [f"input_{k}" for k in range(len(stored) - outputs)] + [f"output_{k}" for k in range(outputs)]
    )

    def array(value):
        t = value.val
        dtype = {6: np.float32, 1: np.int8, 0: np.uint8, 3: np.int32}[int(t.scalar_type)]
        return np.frombuffer(bytes(t.data), dtype=dtype).reshape(t.sizes)

    for i, case in enumerate(suite.test_cases):
        assert len(case.expected_outputs) == outputs
        for k, value in enumerate(case.inputs):
            np.testing.assert_array_equal(array(value), stored[f"input_{k}"][i : i + 1])
        for k, value in enumerate(case.expected_outputs):
            np.testing.assert_array_equal(array(value), stored[f"output_{k}"][i : i + 1])
    return outputs


def test_the_bundled_program_checks_what_the_tosa_check_computed(built, exported):
    assert check_bundle(built, exported) == 1


def test_export_refuses_bad_input_and_writes_nothing(built, tmp_path):
    root = built.path.parents[2]
    fw = tmp_path / "fw"
    for args, fragment in (
        (["export", "digits_cnn/v99", str(fw), "--firmware"], "digits_cnn/v99"),
        (["export", built.id, str(fw), "--firmware", "--section", "bad section"], "--section"),
        (["export", built.id, str(fw), "--firmware", "--bundle-samples", "0"], "--bundle-samples: 0 is not a count"),
    ):
        res = cli(args, root, tmp_path)
        assert res.returncode == 2 and fragment in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
        assert not fw.exists()
    fw.mkdir()
    (fw / "main.c").write_text("int main(void) { return 0; }\n")
    res = cli(["export", built.id, str(fw), "--firmware"], root, tmp_path)
    assert res.returncode == 2 and "is not empty (main.c)" in res.stderr and "--force" in res.stderr
    assert sorted(p.name for p in fw.iterdir()) == ["main.c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fw.export-")]  # no staging left behind
    # a damaged artifact is refused before anything is written
    copy = tmp_path / "store"
    shutil.copytree(root, copy, symlinks=True)
    pte = copy / "artifacts" / built.id / "model.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    res = cli(["export", built.id, str(tmp_path / "fw2"), "--firmware"], copy, tmp_path)
    assert res.returncode == 2 and "sha256 differs" in res.stderr and not (tmp_path / "fw2").exists()
    assert file_sha256(root / "artifacts" / built.id / "model.pte") == built.manifest()["files"]["model.pte"]["sha256"]


def test_a_program_with_nothing_on_the_npu_says_so(tmp_path, caplog):
    """ExecuTorch's InstanceNorm2d on U85: the partitioner takes none of its ops."""
    overrides = [
        "model.factory._target_=torch.nn.InstanceNorm2d",
        "+model.factory.num_features=1",
        "target=ethos-u85-256",
        *QUICK,
    ]
    with caplog.at_level("WARNING"):
        a = build_in_process(overrides, tmp_path).artifact
    m = a.manifest()
    assert m["delegation"]["npu_partitions"] == 0
    assert any("nothing runs on the NPU" in r.getMessage() for r in caplog.records)
    report = (a.path / "report.md").read_text().splitlines()
    assert report[2].startswith("> **Nothing runs on the NPU**")
    assert m["memory"]["parts"]["npu_scratch"]["bytes"] == 0
    assert manifest(a.path)["memory"]["regions"]
