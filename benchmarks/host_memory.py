"""The benchmarks' processes set host memory as ``main.py`` does for the config they time: glibc's
``malloc`` keeps the memory a program frees (:mod:`sgm_jax.host_memory`) where the config's
``keep_freed_host_memory`` says so, unless ``--glibc-malloc-defaults``. (No JAX import:
score_sde_pytorch's worker process reads this module too.)"""

from __future__ import annotations

import argparse


def add_host_memory_argument(parser: argparse.ArgumentParser) -> None:
    """``--glibc-malloc-defaults`` / ``--keep-freed-host-memory``: set glibc's ``malloc`` so, as
    ``main.py``'s ``--nokeep_freed_host_memory`` / ``--keep_freed_host_memory`` do, instead of as
    ``main.py`` sets it for the benchmarked config (:func:`set_host_memory_as_main`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--glibc-malloc-defaults", action="store_true",
                       help="leave glibc's malloc at its defaults (main.py "
                            "--nokeep_freed_host_memory) instead of setting it as main.py does "
                            "for the benchmarked config")
    group.add_argument("--keep-freed-host-memory", action="store_true",
                       help="keep freed host memory (main.py --keep_freed_host_memory) whatever "
                            "the benchmarked config says")


def set_host_memory_as_main(args: argparse.Namespace, config=None) -> bool:
    """Keep freed host memory in this process as ``main.py`` does for ``config``
    (:func:`sgm_jax.host_memory.configured`; None: a config without the field, which keeps it),
    or as ``args`` forces (``glibc_malloc_defaults``, ``keep_freed_host_memory``); call it before
    JAX starts its threads (before the first computation). Returns whether it was applied.
    Without it a large program's buffers are faulted in again at every execution, and inside a
    compiled loop at every pass (docs/benchmarks.md), so the timings would not be those of the
    programs ``main.py`` runs."""
    from sgm_jax import host_memory

    forced = False if args.glibc_malloc_defaults else True if args.keep_freed_host_memory else None
    wanted = forced is not False if config is None else host_memory.configured(config, forced)
    return host_memory.keep_freed_host_memory() if wanted else False
