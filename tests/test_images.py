"""Calibration from image folders: the `images` source and `model.preprocess`, from PNG files
to the bytes of the digits source, through a 3-channel build to the constants of the exported
`model_io.h`, and the bad inputs a folder of images can hold."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_nothing_stored, build_in_process, published_sha, run_cli
from PIL import Image

from ethosu_build import data
from ethosu_build.data import preprocess
from ethosu_build.errors import ConfigError

CC = shutil.which("cc") or shutil.which("gcc")
EVAL = ["evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def write_digits(root, n: int) -> dict[str, int]:
    """The first `n` digits of the train split (the default calibration set) as 8x8 gray PNGs
    of their raw values 0..16, in class folders; returns the files per class."""
    ds = data.digits("train")
    counts: dict[str, int] = {}
    for i in range(n):
        x, y = ds[i]
        folder = root / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.numpy()[0] * 16).round().astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
        counts[str(int(y))] = counts.get(str(int(y)), 0) + 1
    return counts


@pytest.mark.slow
def test_digits_as_png_files_build_the_bytes_of_the_digits_source(tmp_path):
    counts = write_digits(tmp_path / "digits", 128)
    images = [
        "calibration=images",
        f"calibration.dataset.path={tmp_path / 'digits'}",
        "calibration.dataset.labels_from_subfolders=true",
        "model.preprocess=[{op: scale, divisor: 16}]",  # the digits source's x / 16
        *EVAL,
    ]
    m = build_in_process(images, tmp_path / "store").artifact.manifest()
    assert m["files"]["model.pte"]["sha256"].startswith(published_sha("ethosu-build"))  # the digits source's bytes
    seen = m["data"]["calibration"]
    assert seen["samples"] == 128 and seen["classes"] == {k: counts[k] for k in sorted(counts, key=int)}
    assert seen["inputs"][0]["min"] == 0.0 and seen["inputs"][0]["max"] == 1.0
    assert m["data"]["preprocess"] == [{"step": {"op": "scale", "divisor": 16}, "does": "scale: x / 16"}]
    assert m["data"]["first_layer"]["absorbs"] and m["data"]["warnings"] == []


def rgb_images(root) -> None:
    """Noise images of several sizes and formats, brighter in red, in two class folders."""
    rng = np.random.RandomState(0)
    sizes = [(20, 24), (30, 18), (18, 18), (25, 40)]
    for i in range(24):
        h, w = sizes[i % len(sizes)]
        pixels = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        pixels[:, :, 0] = np.maximum(pixels[:, :, 0], 128)
        folder = root / ("cat" if i % 3 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="RGB").save(folder / f"{i:02d}.{['png', 'bmp', 'png', 'jpg'][i % 4]}")


STEPS = (
    "[{op: color, mode: rgb}, {op: resize, size: 18}, {op: center_crop, size: 16}, {op: scale},"
    " {op: normalize, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}]"
)
RGB_MODEL = [
    "model.factory._target_=lowering_models.conv_features",
    "model.name=rgb_features",
    "model.input_shape=[1,3,16,16]",
    f"model.preprocess={STEPS}",
]


@pytest.mark.slow
def test_rgb_images_of_several_sizes_build_and_the_firmware_gets_the_steps(tmp_path):
    rgb_images(tmp_path / "rgb")
    source = [f"dataset.path={tmp_path / 'rgb'}", "dataset.labels_from_subfolders=true", "num_samples=16"]
    config = [
        *RGB_MODEL,
        "calibration=images",
        "evaluation=images",
        *(f"calibration.{o}" for o in source),
        *(f"evaluation.{o}" for o in source),
        "evaluation.tosa_samples=4",
    ]
    artifact = build_in_process(config, tmp_path / "store").artifact
    m = artifact.manifest()
    assert [s["step"]["op"] for s in m["data"]["preprocess"]] == [
        "color",
        "resize",
        "center_crop",
        "scale",
        "normalize",
    ]
    assert sum(m["data"]["calibration"]["classes"].values()) == 16 and set(m["data"]["calibration"]["classes"]) == {
        "cat",
        "dog",
    }
    report = (artifact.path / "report.md").read_text()
    assert "center_crop to 16x16" in report and "could absorb the scale and normalize" in report

    dest = tmp_path / "fw"
    res = run_cli(["--root", str(tmp_path / "store"), "export", artifact.id, str(dest), "--firmware"], tmp_path,
                  tool="ethosu-artifacts")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    header = (dest / "model_io.h").read_text()
    assert "#define MODEL_PREPROCESS_CROP_HEIGHT 16" in header
    assert "#define MODEL_PREPROCESS_RESIZE_SHORTER_SIDE 18" in header
    # The device's one multiply-add per channel, compiled by the host C compiler, against the
    # quantized input the build computed for one of the images.
    assert CC, "no C compiler on PATH (cc or gcc)"
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include "model_io.h"\n'
        "int main(void) {\n"
        "  const float qa[] = MODEL_INPUT_0_FROM_RAW_QA, qb[] = MODEL_INPUT_0_FROM_RAW_QB;\n"
        "  const float a[] = MODEL_PREPROCESS_A, b[] = MODEL_PREPROCESS_B;\n"
        "  const float mean[] = MODEL_PREPROCESS_MEAN, std[] = MODEL_PREPROCESS_STD;\n"
        "  for (int c = 0; c < MODEL_PREPROCESS_CHANNELS; c++)\n"
        '    printf("%.9g %.9g %.9g %.9g %.9g\\n", qa[c], qb[c], mean[c],'
        "           a[c] * MODEL_PREPROCESS_SCALE_DIVISOR * std[c], b[c] * std[c] + mean[c]);\n"
        "  return MODEL_INPUT_0_FROM_RAW_QMIN == -128 && MODEL_PREPROCESS_CROP_WIDTH == 16 ? 0 : 1;\n}\n"
    )
    exe = tmp_path / "check"
    cc = subprocess.run(
        [CC, "-Wall", "-Werror", "-I", str(dest), "-o", str(exe), str(main)], capture_output=True, text=True
    )
    assert cc.returncode == 0, cc.stderr
    rows = [[float(v) for v in line.split()] for line in subprocess.check_output([str(exe)], text=True).splitlines()]
    assert [r[2] for r in rows] == pytest.approx([0.485, 0.456, 0.406])
    assert [v for r in rows for v in r[3:]] == pytest.approx([1.0, 0.0] * 3, abs=1e-6)  # A, B: the steps folded
    q = m["delegation"]["runtime"]["inputs"][0]["quantization"]
    steps = m["config"]["model"]["preprocess"]
    image = Image.open(sorted((tmp_path / "rgb" / "cat").iterdir())[1])
    raw = preprocess.apply(image, [s for s in steps if s["op"] not in ("scale", "normalize")])  # pixels only
    on_device = np.clip(
        np.round(raw * np.array([r[0] for r in rows])[:, None, None] + np.array([r[1] for r in rows])[:, None, None]),
        -128,
        127,
    )
    in_build = np.clip(np.round(preprocess.apply(image, steps) / q["scale"]) + q["zero_point"], -128, 127)
    assert raw.shape == (3, 16, 16) and np.abs(on_device - in_build).max() <= 1


def test_preprocessing_keys_calibration_and_the_artifact_not_the_export(tmp_path):
    from conftest import compose_config

    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.keys import stage_keys

    write_digits(tmp_path / "d", 12)
    base = ["calibration=images", f"calibration.dataset.path={tmp_path / 'd'}", "calibration.num_samples=12"]

    def keys(*extra, base=base):
        return stage_keys(validate(compose_config([*base, *extra, f"store.root={tmp_path}"])[0]))

    a, b = keys("model.preprocess=[{op: scale, divisor: 16}]"), keys("model.preprocess=[{op: scale, divisor: 15}]")
    assert a.export == b.export and a.quantize != b.quantize
    # a source that does not read images: the steps reach the artifact (its manifest and headers) only
    c, d = keys(base=[]), keys("model.preprocess=[{op: scale, divisor: 16}]", base=[])
    assert c.quantize == d.quantize and c.build != d.build
    # the images are keyed by content: one changed pixel is another calibration set
    Image.fromarray(np.full((8, 8), 3, np.uint8), mode="L").save(tmp_path / "d" / "0" / "0000.png")
    assert keys("model.preprocess=[{op: scale, divisor: 16}]").quantize != a.quantize


def test_a_folder_is_read_once_while_unchanged_and_again_when_a_file_changes(tmp_path, monkeypatch):
    """The stage keys, the build's fingerprints and the provenance fingerprint the same folder:
    each file is hashed once per process while its stat stays the same (fingerprint.file_sha256),
    and a changed file is read again and changes the fingerprint."""
    from ethosu_build import fingerprint

    write_digits(tmp_path / "d", 6)
    read = []
    sha256 = fingerprint._read_sha256
    monkeypatch.setattr(fingerprint, "_read_sha256", lambda f: read.append(os.path.basename(f)) or sha256(f))
    monkeypatch.setattr(fingerprint, "RACY_NS", 0)  # trust the stat of files written just now
    dataset = {"_target_": "ethosu_build.data.images", "path": str(tmp_path / "d"), "preprocess": []}
    first = data.fingerprint(dataset)
    assert len(read) == 6
    read.clear()
    assert data.fingerprint(dataset) == first and read == []
    changed = sorted((tmp_path / "d").rglob("*.png"))[0]
    before = changed.stat()
    Image.fromarray(np.full((8, 8), 3, np.uint8), mode="L").save(changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # a later write's mtime
    assert data.fingerprint(dataset) != first and read == [changed.name]


def test_bad_steps_and_an_empty_folder_are_all_named_at_once_and_exit_2(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("not an image")
    res = run_cli(
        [
            f"store.root={tmp_path / 'store'}",
            "calibration=images",
            f"calibration.dataset.path={tmp_path / 'empty'}",
            "model.preprocess=[{op: resize, size: -3}, {op: blur}, {op: scale, divisor: 0}, {op: color, mode: cmyk}]",
        ],
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr
    for key, value in (
        ("model.preprocess.0.size", "-3"),
        ("model.preprocess.1.op", "'blur'"),
        ("model.preprocess.2.divisor", "0"),
        ("model.preprocess.3.mode", "'cmyk'"),
    ):
        assert re.search(rf"{re.escape(key)}.*{re.escape(value)}", err), (key, err)
    assert "color comes after scale" in err  # a pixel step after a number step
    assert "calibration.dataset.path" in err and "holds no image files" in err
    assert_nothing_stored(tmp_path / "store")


def test_steps_that_cannot_make_the_models_input_are_config_errors(tmp_path):
    from conftest import compose_config

    from ethosu_build.config.validate import validate

    def issues(steps: str) -> str:
        with pytest.raises(ConfigError) as e:
            validate(compose_config([f"model.preprocess={steps}", f"store.root={tmp_path}"])[0])
        return e.value.render()

    assert "3-channel images" in issues("[{op: color, mode: rgb}]")  # digits_cnn takes one channel
    assert "12x12 images" in issues("[{op: center_crop, size: 12}]")  # and 8x8
    assert "model.preprocess.0.mean" in issues("[{op: normalize, mean: [0.1, 0.2], std: 1}]")
    assert "model.preprocess.0.std" in issues("[{op: normalize, mean: 0, std: 0}]")
    assert "model.preprocess.0.sizes" in issues("[{op: resize, sizes: 8}]")


@pytest.mark.parametrize("case", ["unreadable", "mixed_sizes", "mixed_channels", "too_few", "crop_too_large"])
def test_bad_image_folders_are_config_errors_naming_the_file_or_key(case, tmp_path):
    write_digits(tmp_path / "d", 20)
    config = ["calibration=images", f"calibration.dataset.path={tmp_path / 'd'}", "calibration.num_samples=20",
              "model.preprocess=[{op: scale, divisor: 16}]", *EVAL]  # fmt: skip
    named = {
        "unreadable": "0007.png is not a readable image",
        "mixed_sizes": "images of mixed sizes",
        "mixed_channels": "gray and colour images mixed",
        "too_few": "calibration.num_samples",
        "crop_too_large": "center_crop 8x8 is larger than the image",
    }[case]
    victim = next((tmp_path / "d").rglob("0007.png"))
    if case == "unreadable":
        victim.write_bytes(b"\x89PNG\r\n but not really")
    elif case in ("mixed_sizes", "crop_too_large"):
        Image.fromarray(np.zeros((9, 7), np.uint8), mode="L").save(victim)
        if case == "crop_too_large":
            config[3] = "model.preprocess=[{op: center_crop, size: 8}, {op: scale, divisor: 16}]"
    elif case == "mixed_channels":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8), mode="RGB").save(victim)
    else:
        config[2] = "calibration.num_samples=21"
    with pytest.raises(ConfigError) as e:
        build_in_process(config, tmp_path / "store")
    assert e.value.exit_code == 2 and named in e.value.render(), e.value.render()
    assert_nothing_stored(tmp_path / "store")


def test_a_folder_of_images_draws_a_seeded_sample_across_its_classes(tmp_path):
    write_digits(tmp_path / "d", 200)
    ds = data.images(str(tmp_path / "d"), labels_from_subfolders=True, preprocess=[{"op": "scale", "divisor": 16}])
    first = [ds.labels[i] for i in data.draw(len(ds), 20, None)]
    drawn = [ds.labels[i] for i in data.draw(len(ds), 20, 0)]
    assert len(set(first)) <= 2 and len(set(drawn)) > 5  # sorted by class, the first 20 are zeros and ones
    assert data.draw(len(ds), 20, 0) == data.draw(len(ds), 20, 0) != data.draw(len(ds), 20, 1)
    x, label = ds[drawn[0]]
    assert x.shape == (1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1


def test_far_apart_calibration_and_evaluation_ranges_warn(tmp_path):
    cal = {"inputs": [{"name": "input", "min": 0.0, "max": 1.0, "mean": 0.3}]}
    near = {"inputs": [{"name": "input", "min": 0.0, "max": 1.1, "mean": 0.3}]}
    far = {"inputs": [{"name": "input", "min": -2.1, "max": 2.6, "mean": 0.0}]}  # normalized once more
    assert data.range_warnings(cal, near) == []
    assert "input 'input'" in data.range_warnings(cal, far)[0]


def test_digits_written_as_images_read_back_as_the_digits(tmp_path):
    write_digits(tmp_path / "d", 30)
    ds = data.images(str(tmp_path / "d"), preprocess=[{"op": "scale", "divisor": 16}])
    digits = data.digits("train")
    by_name = {f.name: i for i, f in enumerate(ds.files)}
    for k in (0, 7, 29):
        assert np.array_equal(ds[by_name[f"{k:04d}.png"]], digits[k][0].numpy())


def test_the_digits_are_scikit_learns_without_importing_it():
    """The digits source reads scikit-learn's file itself (importing sklearn.datasets costs
    seconds of every cold build): the arrays are load_digits()' to the bit, and a process
    that loads the digits has not imported scikit-learn."""
    from sklearn.datasets import load_digits

    images, target = data.load_digits()
    theirs = load_digits()
    assert images.dtype == theirs.images.dtype and np.array_equal(images, theirs.images)
    assert target.dtype == theirs.target.dtype and np.array_equal(target, theirs.target)
    code = "import sys; from ethosu_build import data; data.digits('all'); print('sklearn' in sys.modules)"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "False"


def class_tree(root, names: list[str], per_class: int = 2) -> None:
    """8x8 gray PNGs in one folder per class name."""
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), i, np.uint8), mode="L").save(root / name / f"{i}.png")


def test_class_folders_are_labelled_by_one_rule(tmp_path):
    """Numbered folders are their numbers; named ones are numbered in sorted order; digits
    other than ASCII's (²) make a name, not a number."""
    cases = {"numbers": ["0", "1", "10", "2"], "names": ["dog", "cat", "²"]}
    for case, names in cases.items():
        class_tree(tmp_path / case, names)
        ds = data.images(str(tmp_path / case), labels_from_subfolders=True)
        got = {f.parent.name: label for f, label in zip(ds.files, ds.labels)}
        expected = {n: int(n) for n in names} if case == "numbers" else {"cat": 0, "dog": 1, "²": 2}
        assert got == expected and ds.class_folders == expected
        assert ds.classes == (None if case == "numbers" else ["cat", "dog", "²"])


def model_config_error(args: list[str], tmp_path) -> str:
    """The config error a build reports for `args`, judged against the model (no stage runs)."""
    from conftest import compose_config

    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.keys import stage_keys
    from ethosu_build.pipeline.stage import Run

    with pytest.raises(ConfigError) as e:
        container, recipe = compose_config([*args, f"store.root={tmp_path / 'store'}"])
        cfg = validate(container, default_name=recipe)
        Run(cfg, stage_keys(cfg)).model()
    assert e.value.exit_code == 2
    assert_nothing_stored(tmp_path / "store")
    return e.value.render()


@pytest.mark.parametrize(
    "names,named",
    [
        (["0", "01", "1", "10", "cat"], ["class folders mix numbers", "'cat'"]),  # cat would take some number's place
        (["0", "01", "1", "10"], ["class folders '01' and '1' are both label 1"]),
        (["0", "1", "²"], ["class folders mix numbers", "'²'"]),
        (["0", "1", "500"], ["class folder(s) '500' (label 500)", "the model has 10 outputs", "labels 0..9"]),
        ([f"class{k:02d}" for k in range(11)], ["'class10' (label 10)", "the model has 10 outputs"]),
    ],
    ids=["mixed", "same number", "superscript", "beyond the outputs", "more names than outputs"],
)
def test_class_folders_that_cannot_be_labelled_are_config_errors_naming_them(names, named, tmp_path):
    class_tree(tmp_path / "val", names)
    text = model_config_error(
        ["evaluation=images", f"evaluation.dataset.path={tmp_path / 'val'}",
         "evaluation.dataset.labels_from_subfolders=true", "evaluation.num_samples=4",
         "model.preprocess=[{op: scale, divisor: 16}]"],
        tmp_path,
    )  # fmt: skip
    assert "evaluation.dataset" in text
    for fragment in named:
        assert fragment in text, (fragment, text)


def test_numbered_sample_folders_take_the_same_rule(tmp_path):
    """data.folder: `1` and `01`, or `²`, are errors naming them, never a merge or a crash."""
    for names, named in ((["1", "01"], "'01' and '1' are both label 1"), (["0", "²"], "'²' are not integer")):
        root = tmp_path / "-".join(names)
        for name in names:
            (root / name).mkdir(parents=True)
            np.save(root / name / "x.npy", np.zeros((1, 8, 8), np.float32))
        with pytest.raises(ValueError, match=re.escape(named)):
            data.folder(str(root), labels_from_subfolders=True)


def test_the_image_options_take_a_small_folder_whole_by_default(tmp_path):
    """The flagship command, on a folder smaller than any fixed default (it failed on 256)."""
    from conftest import compose_config

    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.model_checks import check_model, load_model

    write_digits(tmp_path / "d", 12)
    cfg = validate(
        compose_config(
            [
                "calibration=images",
                f"calibration.dataset.path={tmp_path / 'd'}",
                "evaluation=images",
                f"evaluation.dataset.path={tmp_path / 'd'}",
                "evaluation.dataset.labels_from_subfolders=true",
                "model.preprocess=[{op: scale, divisor: 16}]",
                f"store.root={tmp_path / 'store'}",
            ]
        )[0]
    )
    assert cfg.calibration.num_samples is None and cfg.evaluation.num_samples is None
    check_model(cfg, load_model(cfg))  # the model checks: the sizes fit (raises a ConfigError otherwise)
