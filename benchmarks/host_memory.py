"""The benchmarks' processes set host memory as ``main.py`` does: glibc's ``malloc`` keeps the
memory a program frees (:mod:`sgm_jax.host_memory`), unless ``--glibc-malloc-defaults``. (No
JAX import: score_sde_pytorch's worker process reads this module too.)"""

from __future__ import annotations

import argparse


def add_host_memory_argument(parser: argparse.ArgumentParser) -> None:
    """``--glibc-malloc-defaults``: leave glibc's ``malloc`` at its defaults instead of setting it
    as ``main.py`` does (:func:`set_host_memory_as_main`)."""
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="leave glibc's malloc at its defaults (main.py "
                             "--nokeep_freed_host_memory) instead of keeping freed host memory "
                             "as main.py does")


def set_host_memory_as_main(args: argparse.Namespace) -> bool:
    """Keep freed host memory in this process as ``main.py`` does
    (:func:`sgm_jax.host_memory.keep_freed_host_memory`), unless ``args.glibc_malloc_defaults``;
    call it before JAX starts its threads (before the first computation). Returns whether it was
    applied. Without it a large program's buffers are faulted in again at every execution, and
    inside a compiled loop at every pass (docs/benchmarks.md), so the timings would not be those
    of the programs ``main.py`` runs."""
    if args.glibc_malloc_defaults:
        return False
    from sgm_jax.host_memory import keep_freed_host_memory

    return keep_freed_host_memory()
