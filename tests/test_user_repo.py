"""A user's own repo: their config groups and recipes on Hydra's search path, their model
code outside the package, and a store of their choosing."""

from __future__ import annotations

import pytest
from conftest import manifest, run_cli


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_recipe_and_model_from_a_user_repo(user_repo, tmp_path):
    store = tmp_path / "elsewhere"
    res = run_cli(["hydra.searchpath=[file://conf]", "recipe=tiny_u85", f"store.root={store}"], user_repo)
    assert res.returncode == 0, res.stderr[-3000:]
    m = manifest(store / "artifacts" / "tiny_u85" / "v1")
    assert m["recipe"] == "tiny_u85"
    assert m["config"]["target"]["accelerator"] == "ethos-u85-256"
    assert m["config"]["model"]["factory"] == {"_target_": "mymodels.nets.tiny_net", "width": 12}
    assert m["fingerprints"]["model_source"]["target"] == "mymodels.nets.tiny_net"
    assert m["quantization"]["applied"]["modules"]["stem.0"] == "a16w8"
    assert m["quantization"]["applied"]["modules"]["body.0"] == "int8"
    assert not (user_repo / "outputs" / "artifacts").exists()

    # The user's model code is part of the build's identity: editing it makes a new version.
    nets = user_repo / "mymodels" / "nets.py"
    nets.write_text(
        nets.read_text().replace(
            "torch.manual_seed(seed)\n    return TinyNet", "torch.manual_seed(seed + 1)\n    return TinyNet"
        )
    )
    again = run_cli(["hydra.searchpath=[file://conf]", "recipe=tiny_u85", f"store.root={store}"], user_repo)
    assert again.returncode == 0, again.stderr[-3000:]
    v2 = manifest(store / "artifacts" / "tiny_u85" / "v2")
    assert v2["fingerprints"]["model_source"] != m["fingerprints"]["model_source"]
    assert v2["files"]["model.pte"]["sha256"] != m["files"]["model.pte"]["sha256"]


def test_user_recipe_lists_among_builtin_ones(user_repo):
    res = run_cli(["hydra.searchpath=[file://conf]", "recipe=nope"], user_repo)
    assert res.returncode == 2
    assert "tiny_u85" in res.stderr and "digits_u55" in res.stderr


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_models_with_batch_specific_shape_code_still_build(user_repo):
    """A mean whose decomposition by the quantizer names the batch's symbol calibrates in
    batches all the same (quantizer.bind_symbolic_sizes); a model with no dynamic batch at all
    calibrates one sample at a time, evaluates so too, and the manifest says why. Neither
    prints generated code or a traceback."""
    for name, why in (("mean_head", None), ("batch_one", "could not be exported as dynamic")):
        res = run_cli(
            [
                f"model.name={name}",
                f"model.factory={{_target_: mymodels.nets.{name}}}",
                "model.checkpoint=null",
                "model.input_shape=[1,3,8,8]",
                "calibration=random",
                "evaluation=random",
                "calibration.num_samples=8",
                "evaluation.num_samples=8",
                "evaluation.tosa_samples=2",
                "store.root=store",
            ],
            user_repo,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        m = manifest(user_repo / "store" / "artifacts" / name / "v1")
        assert "generated forward function" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
        cal = m["quantization"]["calibration"]
        if why is None:
            assert cal["batched"] is True and cal["calls"] == 1 and cal["unbatched_reason"] is None
        else:
            assert cal["batched"] is False and cal["calls"] == 8 and why in cal["unbatched_reason"]
        assert m["metrics"]["accuracy"]["samples"] == 8
