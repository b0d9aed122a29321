"""The benchmarks' processes are set as ``main.py`` sets its own for the config they time: glibc's
``malloc`` keeps the memory a program frees where the config's ``keep_freed_host_memory`` says so
(:mod:`sgm_jax.host_memory`), and XLA:CPU runs elementwise fusions through YNNPACK where its
``xla_cpu_ynn_elementwise`` says so (:mod:`sgm_jax.xla_cpu`); the arguments force either. (No JAX
import: score_sde_pytorch's worker process reads this module too.)"""

from __future__ import annotations

import argparse


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """``--glibc-malloc-defaults`` / ``--keep-freed-host-memory`` and
    ``--[no-]xla-cpu-ynn-elementwise``: set the process so, as ``main.py``'s
    ``--nokeep_freed_host_memory`` / ``--keep_freed_host_memory`` and
    ``--[no]xla_cpu_ynn_elementwise`` do, instead of as ``main.py`` sets it for the benchmarked
    config (:func:`set_process_as_main`)."""
    memory = parser.add_mutually_exclusive_group()
    memory.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="leave glibc's malloc at its defaults (main.py "
                             "--nokeep_freed_host_memory) instead of setting it as main.py does "
                             "for the benchmarked config")
    memory.add_argument("--keep-freed-host-memory", action="store_true",
                        help="keep freed host memory (main.py --keep_freed_host_memory) whatever "
                             "the benchmarked config says")
    parser.add_argument("--xla-cpu-ynn-elementwise", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="run XLA:CPU's elementwise fusions through YNNPACK (main.py "
                             "--[no]xla_cpu_ynn_elementwise) whatever the benchmarked config says")


def set_process_as_main(args: argparse.Namespace, config=None) -> dict[str, bool]:
    """Sets this process as ``main.py`` does for ``config`` (None: a config without the fields:
    freed memory kept, XLA's default fusions), or as ``args`` forces; call it before JAX starts
    its threads and backends (before the first computation). Returns what was applied:
    ``{"freed_host_memory_kept": …, "xla_cpu_ynn_elementwise": …}``. Without it a large
    program's buffers are faulted in again at every execution, and inside a compiled loop at
    every pass (docs/benchmarks.md), so the timings would not be those of the programs
    ``main.py`` runs."""
    from sgm_jax import host_memory, xla_cpu

    forced = False if args.glibc_malloc_defaults else True if args.keep_freed_host_memory else None
    keep = forced is not False if config is None else host_memory.configured(config, forced)
    ynn = (bool(args.xla_cpu_ynn_elementwise) if config is None else
           xla_cpu.configured(config, args.xla_cpu_ynn_elementwise))
    return {"freed_host_memory_kept": keep and host_memory.keep_freed_host_memory(),
            "xla_cpu_ynn_elementwise": ynn and xla_cpu.use_ynn_elementwise_fusions()}
