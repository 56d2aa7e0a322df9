"""ethosu-search: sensitivity, greedy quick answer, a built Pareto front whose recipes rebuild
the same bytes, and config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import csv_rows, run_cli
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from ethosu_build.config.schema import SearchConfig
from ethosu_build.config.validate import search_config
from ethosu_build.errors import ConfigError
from ethosu_build.fingerprint import file_sha256
from ethosu_build.search.points import layer_cycles
from ethosu_build.search.search import Search


def compose_search(overrides: list[str]) -> tuple[dict, SearchConfig, dict]:
    with initialize_config_module("ethosu_build.conf", version_base="1.3"):
        cfg = compose("search", overrides=overrides, return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        container = OmegaConf.to_container(cfg, resolve=True)
    return container, search_config(container.pop("search")), choices


@pytest.mark.slow
def test_search_finds_the_quick_answer_and_builds_a_front_whose_recipes_rebuild_the_same_bytes(tmp_path):
    container, options, choices = compose_search(
        [
            f"store.root={tmp_path / 'store'}",
            "search.modules=[blocks.0.0,blocks.1.0,head]",
            "search.max_accuracy_drop=0.5",
            "search.front=1",
        ]
    )
    out = tmp_path / "search"
    result = Search(container, options, choices, out, "ethosu-search (test)").run()

    assert [s["module"] for s in result["sensitivity"]] == ["blocks.0.0", "blocks.1.0", "head"]
    assert all(s["status"] == "ok" and s["cost_measured"] for s in result["sensitivity"])
    # the uniform builds bracket the cost model: all candidates at a16w8 is the real build
    assert result["uniform_all"]["est_cycles"] == pytest.approx(result["uniform_all"]["cycles"])
    assert result["uniform_base"]["est_cycles"] == result["uniform_base"]["cycles"]
    assert result["uniform_all"]["cycles"] > result["uniform_base"]["cycles"]

    quick = result["quick_answer"]
    assert quick is not None and result["float_top1"] - quick["top1"] <= 0.5

    front = [p for p in result["front"] if p["status"] == "ok"]
    assert front, result["front"]
    # lowerings: the two uniform builds and the front, not one per candidate configuration
    assert result["lowerings"] == 2 + len(result["front"])
    assert result["points_measured"] > result["lowerings"] - 2
    for p in front:
        assert 0 < p["n"] < 3  # mixed: some modules a16w8, the rest int8
    for name in ("search.json", "search.md", "sensitivity.csv", "sensitivity.png", "points.csv", "front.png"):
        assert (out / name).is_file(), name
    assert len(csv_rows(out / "sensitivity.csv")) == 3

    # every recipe rebuilds its artifact's bytes, in a fresh store, from the command it states
    point = front[0]
    recipe = Path(point["recipe"])
    assert f"hydra.searchpath=[file://{out}] recipe={recipe.stem}" in recipe.read_text()
    rebuilt = run_cli(
        [
            f"hydra.searchpath=[file://{out}]",
            f"recipe={recipe.stem}",
            "store.root=fresh",
            "evaluation.tosa_check=false",
        ],
        tmp_path,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    fresh = tmp_path / "fresh" / "artifacts" / recipe.stem / "v1"
    assert file_sha256(fresh / "model.pte") == point["pte_sha256"]
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert [o["selector"] for o in manifest["quantization"]["overrides"]] == [
        f"module_name={m}" for m in point["modules"].split()
    ]


def test_vela_layers_are_matched_to_modules_by_mac_count_in_order(tmp_path):
    rows = [("Conv2D", 100, 10), ("Conv2D", 50, 7), ("Add", 0, 3), ("Conv2D", 100, 12), ("FullyConnected", 20, 2)]
    path = tmp_path / "per_layer.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["partition", "Original Operator", "MAC Count", "Op Cycles"])
        w.writerows([[0, op, macs, cycles] for op, macs, cycles in rows])
    # the shortcut (50 MACs) runs after both 100-MAC convs in PyTorch, before the second in Vela
    by_module, other = layer_cycles(path, [("a", 100), ("b", 100), ("skip", 50), ("fc", 20), ("missing", 999)])
    assert by_module == {"a": 10.0, "b": 12.0, "skip": 7.0, "fc": 2.0}
    assert other == 3.0


def test_bad_search_keys_exit_2(tmp_path):
    res = run_cli(["search.scheme=int4", "search.front=0"], tmp_path, tool="ethosu-search")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "search.scheme" in res.stderr and "'int4'" in res.stderr and "a16w8" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_search_module_is_a_config_error(tmp_path):
    container, options, choices = compose_search([f"store.root={tmp_path}", "search.modules=[blocks.9]"])
    with pytest.raises(ConfigError) as info:
        Search(container, options, choices, tmp_path / "out", "test").run()
    assert info.value.issues[0].key == "search.modules.0" and "blocks.9" in str(info.value)


@pytest.mark.slow
def test_what_vela_rejects_is_recorded_and_the_search_goes_on(user_repo, tmp_path, monkeypatch):
    """The user repo's transposed convolution cannot be built with a16w8 on Ethos-U55."""
    monkeypatch.syspath_prepend(str(user_repo))
    container, options, choices = compose_search(
        [
            f"hydra.searchpath=[file://{user_repo / 'conf'}]",
            "model=upsampler",
            f"store.root={tmp_path / 'store'}",
            "calibration.num_samples=8",
            "evaluation.num_samples=8",
            "evaluation.tosa_check=false",
        ]
    )
    result = Search(container, options, choices, tmp_path / "out", "test").run()
    assert result["uniform_all"]["status"] == "failed" and "a16w8" in result["uniform_all"]["error"]
    assert [s["module"] for s in result["sensitivity"]] == ["conv", "up"]
    assert not any(s["cost_measured"] for s in result["sensitivity"])  # no uniform build to measure against
    for p in result["front"]:  # built points: an artifact and a recipe, or the reason they failed
        assert (p["status"] == "ok" and p.get("recipe")) or (p["status"] == "failed" and p["error"])
    report = (tmp_path / "out" / "search.md").read_text()
    assert "failed" in report and "could not run on NPU" in report
