"""The process settings of a config (sgm_jax.host_memory, sgm_jax.xla_cpu): which configs want
which, main.py's flags over the config, a config without the fields, a bad value; and the
benchmarks, which set their process as main.py does for the config they time."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.process_settings import add_process_arguments, set_process_as_main
from sgm_jax import host_memory, xla_cpu
from tests.config_files import load

#: config: (keep_freed_host_memory, xla_cpu_ynn_elementwise)
WANTED = {"configs/toy/checkerboard_qc.py": (True, False),
          "configs/ve/cifar10_u.py": (True, True),
          "configs/vp/cifar10_ddpmpp_continuous.py": (True, True),
          "configs/ve/digits_u.py": (False, False),
          "configs/dlsm/digits_dlsm.py": (False, False)}
SETTINGS = ((host_memory, "keep_freed_host_memory", True),  # module, field, where absent
            (xla_cpu, "xla_cpu_ynn_elementwise", False))


@pytest.mark.parametrize("path", sorted(WANTED))
def test_each_config_says_which_settings_it_wants_and_the_flags_override(path):
    config = load(path, {})
    for (module, _, _), wanted in zip(SETTINGS, WANTED[path]):
        assert module.configured(config) is wanted
        assert module.configured(config, override=True) is True
        assert module.configured(config, override=False) is False


@pytest.mark.parametrize("module, field, absent", SETTINGS)
def test_a_config_without_the_field_gets_the_default_and_a_bad_value_is_refused(module, field,
                                                                                 absent):
    config = load("configs/ve/cifar10_u.py", {})
    del config[field]
    assert module.configured(config) is absent
    config[field] = "yes"
    with pytest.raises(ValueError, match=f"{field} must be True or False; got 'yes'"):
        module.configured(config, override=True)


def test_benchmarks_set_their_process_as_main_does_for_their_config_unless_told(monkeypatch):
    kept, ynn = [], []
    monkeypatch.setattr(host_memory, "keep_freed_host_memory", lambda: kept.append(1) or True)
    monkeypatch.setattr(xla_cpu, "use_ynn_elementwise_fusions", lambda: ynn.append(1) or True)
    parser = argparse.ArgumentParser()
    add_process_arguments(parser)
    digits, cifar = load("configs/ve/digits_u.py", {}), load("configs/ve/cifar10_u.py", {})

    def applied(argv, config):
        return set_process_as_main(parser.parse_args(argv), config)

    neither = {"freed_host_memory_kept": False, "xla_cpu_ynn_elementwise": False}
    both = {"freed_host_memory_kept": True, "xla_cpu_ynn_elementwise": True}
    assert applied([], digits) == neither
    assert applied([], cifar) == both
    assert applied([], None) == {"freed_host_memory_kept": True, "xla_cpu_ynn_elementwise": False}
    assert applied(["--keep-freed-host-memory", "--xla-cpu-ynn-elementwise"], digits) == both
    assert applied(["--glibc-malloc-defaults", "--no-xla-cpu-ynn-elementwise"], cifar) == neither
    assert len(kept) == 3 and len(ynn) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--glibc-malloc-defaults", "--keep-freed-host-memory"])
