"""The facts targets.py repeats so that configs validate without importing executorch or
Vela still agree with the installed ExecuTorch and Vela."""

from __future__ import annotations

import argparse

import pytest

from ethosu_build.config import targets
from ethosu_build.config.schema import TARGETS


@pytest.mark.parametrize("accelerator", TARGETS)
def test_family_defaults_and_tosa_spec_match_executorch(accelerator):
    from executorch.backends.arm.ethosu import EthosUCompileSpec

    system, memory = EthosUCompileSpec._default_system_config_and_memory_mode(accelerator, None, None)
    assert targets.FAMILY_DEFAULTS[targets.family(accelerator)] == (system, memory)
    assert targets.tosa_spec_string(accelerator) == str(EthosUCompileSpec._tosa_spec_for_target(accelerator))


def _vela_parser() -> argparse.ArgumentParser:
    """Vela builds its parser inside main(): take it at the moment it would parse."""
    import ethosu.vela.vela as vela

    class Captured(Exception):
        pass

    def capture(self, *args, **kwargs):
        raise Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        vela.main([])
    except Captured as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError("vela.main did not parse its arguments")


def test_every_vela_option_is_either_accepted_or_refused_with_a_reason():
    options = {o for action in _vela_parser()._actions for o in action.option_strings}
    ours = set(targets.VELA_SWITCHES) | set(targets.VELA_VALUES) | set(targets.REFUSED_VELA_FLAGS)
    assert options == ours, (sorted(options - ours), sorted(ours - options))


def test_switches_take_no_value_and_valued_options_do():
    by_name = {o: a for a in _vela_parser()._actions for o in a.option_strings}
    for name in targets.VELA_SWITCHES:
        assert by_name[name].nargs == 0, name
    for name in targets.VELA_VALUES:
        assert by_name[name].nargs is None, name


@pytest.mark.parametrize(
    "flag,ok",
    [
        ("--cpu-tensor-alignment=32", True),
        ("--cpu-tensor-alignment=48", False),
        ("--cpu-tensor-alignment", False),
        ("--tensor-allocator=Greedy", True),
        ("--tensor-allocator=greedy", False),
        ("--verbose-weights", True),
        ("--verbose-weights=1", False),
        ("--experimental-softmax-int16-neg-exp-range=10", True),
        ("--experimental-softmax-int16-neg-exp-range=0", False),
        ("--optimise=Size", False),
        ("--optim=Size", False),
        ("--verbose-weight", False),
        ("-h", False),
        ("x", False),
    ],
)
def test_a_flag_the_table_accepts_is_one_vela_parses(flag, ok):
    """Where the table says yes, Vela's own parser agrees (the reverse is the point of the
    table: Vela would take abbreviations and options that exit or write files)."""
    assert (targets.vela_flag_issue(flag) is None) == ok, targets.vela_flag_issue(flag)
    if ok:
        _vela_parser().parse_args([flag, "net.tosa"])
