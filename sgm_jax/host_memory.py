"""Host memory on CPU: keep the memory a program frees in the process, for its next execution.

XLA:CPU allocates the buffers of a compiled program at every execution and frees them after it.
glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MiB) with fresh
pages from ``mmap`` and gives them back to the system on ``free``, and memory freed at the top of
a heap is trimmed away; so each train step of a large network faults its whole working set in
again. NCSN++ deep at batch 4 on the 2-core CPU: 1.1 million page faults and 2.4–3.0 s of system
time in a 6.0 s step. With ``mmap`` off for ``malloc``, one arena for all threads and no
trimming, the freed buffers stay in the heap and the next step reuses them: no page faults,
0.05 s of system time, 4.2–4.6 s per step (docs/benchmarks.md). Without the single arena
(``mmap`` and trimming off alone) 0.34 million faults and 0.7 s of system time remained, and the
step was not measurably faster at batch 8. Inside a compiled loop (a sampler) the faults recur at
every pass through the network: NCSN++ deep at nf 32, batch 64, 2.99 s per pass with glibc's
defaults against 2.09 s with this setting. For some programs it costs instead: the 8×8 digits
network's train step took 43–51 ms with it against 27–28 ms with the defaults, its sampling
1.18–1.22× longer (separate runs; the single arena is the part that costs), while the toy QC step
ran at 46–55 ms against 69–77 ms (docs/benchmarks.md, "Samplers").

The price is that the process keeps its peak heap until it exits, which a training or evaluation
process, whose every step has the same peak, pays anyway; and XLA's compiler threads share one
heap (a single compile of that step took 107 s with it against 93–122 s without, within this
machine's spread; a run of the test suite with it in its workers, all compilation, took 15.5
min of CPU time against 13.4–14.2 min without, so the tests leave it off).

A config says which its programs want (:func:`configured`: the top-level field
``keep_freed_host_memory``, True where absent; the digits configs set False), and ``main.py``
applies it before JAX starts its threads (``--keep_freed_host_memory`` /
``--nokeep_freed_host_memory`` override the config); a script of its own calls
:func:`keep_freed_host_memory` first thing. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

from sgm_jax import config_fields as cf

#: The config field that says whether a run keeps freed host memory.
FIELD = "keep_freed_host_memory"

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
    """Set glibc's ``malloc`` to serve every allocation from its heap (``M_MMAP_MAX`` 0), from
    one arena (``M_ARENA_MAX`` 1: threads that have no arena yet share the main heap) and never
    to trim it (``M_TRIM_THRESHOLD`` −1, the largest size); returns whether it was applied (False
    where the C library is not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    settings = ((M_MMAP_MAX, 0), (M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, -1))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)


def configured(config, override: bool | None = None) -> bool:
    """Whether a run of ``config`` keeps freed host memory: ``override`` unless None (``main.py``'s
    ``--[no]keep_freed_host_memory``), else the config's top-level boolean
    ``keep_freed_host_memory`` (``ValueError`` for anything but True or False; True for a config
    without the field). The field is read (and checked) either way."""
    return cf.setting(config, FIELD, True, override)
