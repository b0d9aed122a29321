"""sgm_jax.host_memory: with glibc's defaults a freed buffer above the mmap threshold is faulted in
again when the next one is allocated; after ``keep_freed_host_memory`` the next one reuses it
without a page fault. Each setting in a process of its own (the setting is for the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
