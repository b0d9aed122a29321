"""sgm_jax.host_memory: with glibc's defaults a freed buffer above the mmap threshold is faulted in
again when the next one is allocated; after ``keep_freed_host_memory`` the next one reuses it
without a page fault. Each setting in a process of its own (the setting is for the process). Which
configs want it, and ``main.py``'s flag over the config."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from benchmarks.process_settings import add_process_arguments, set_process_as_main
from sgm_jax import host_memory, xla_cpu
from sgm_jax.host_memory import configured
from tests.config_files import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHILD = """
import json, resource, sys
import numpy as np
from sgm_jax.host_memory import keep_freed_host_memory

applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None


def faults_of_a_fresh_buffer():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = np.ones(2**25)  # 256 MiB, every page written
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


first = faults_of_a_fresh_buffer()
print(json.dumps({"applied": applied, "first": first, "second": faults_of_a_fresh_buffer()}))
"""


def _faults(setting: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, setting], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120, env={**os.environ,
                                                                    "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert kept["applied"] is True
    # 65,536 pages of 4 KiB (fewer with transparent huge pages); both settings fault the first
    # buffer in, only glibc's defaults the second one as well
    assert default["second"] >= default["first"] // 2 > 0
    assert kept["first"] > 0 and kept["second"] <= kept["first"] // 100


@pytest.mark.parametrize("path, wanted", [
    ("configs/toy/checkerboard_qc.py", True), ("configs/ve/cifar10_u.py", True),
    ("configs/ve/digits_u.py", False), ("configs/dlsm/digits_dlsm.py", False)])
def test_each_config_says_whether_its_runs_keep_freed_memory_and_the_flag_overrides(path, wanted):
    config = load(path, {})
    assert configured(config) is wanted
    assert configured(config, override=True) is True
    assert configured(config, override=False) is False


def test_a_config_without_the_field_keeps_and_a_bad_value_is_refused():
    config = load("configs/ve/digits_u.py", {})
    del config["keep_freed_host_memory"]
    assert configured(config) is True
    config.keep_freed_host_memory = "yes"
    with pytest.raises(ValueError, match="keep_freed_host_memory must be True or False; got 'yes'"):
        configured(config, override=True)


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
