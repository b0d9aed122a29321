"""XLA:CPU's library fusions: the elementwise work of a program through YNNPACK too, where the
config asks for it.

XLA:CPU hands a program's dots, convolutions and reductions to YNNPACK (its default
``xla_cpu_experimental_ynn_fusion_type``: ``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``,
``INDIVIDUAL_CONVOLUTION``, ``REDUCE``) and compiles the other fusions, the elementwise ones,
itself. With ``LIBRARY_FUSION_TYPE_ELTWISE`` added, YNNPACK runs those as well: the NCSN++ deep
U step (nf 128, batch 4, the 2-core CPU) took 0.925× (0.85–1.01×) the time of the default's,
compiled and timed in one process over 5 interleaved rounds, and 0.96× score_sde_pytorch's train
step at batch 4 and 8 against 1.08× and 1.11× without it; the QC step took 0.66× (0.63–0.71×)
the time (10.2 against 15.2 s/step, 4 interleaved rounds) with 1.3× the XLA memory. Small
programs slowed down: the digits U step (``configs/ve/digits_u.py``) 32.5–36.7 ms against
27.9–28.6 ms, the toy QC step 59–65 ms against 47–49 ms (docs/benchmarks.md). The network
computes the same function: its output differed from a float64 evaluation by 4.6e-7 (relative
norm) with the option and 4.7e-7 without.

A config says which its programs want (:func:`configured`: the top-level field
``xla_cpu_ynn_elementwise``, False where absent; the image defaults set True, the digits
configs False), and ``main.py`` applies it before JAX starts its backends, when XLA reads
``XLA_FLAGS`` (``--xla_cpu_ynn_elementwise`` / ``--noxla_cpu_ynn_elementwise`` override the
config). An ``XLA_FLAGS`` that names the option already is left as it is. Accelerator programs
ignore it.
"""

from __future__ import annotations

import os

from sgm_jax import config_fields as cf

#: The config field that says whether a run's CPU programs run elementwise fusions in YNNPACK.
FIELD = "xla_cpu_ynn_elementwise"
#: XLA's option: the kinds of fusion XLA:CPU hands to YNNPACK.
OPTION = "xla_cpu_experimental_ynn_fusion_type"
#: XLA's default kinds and the elementwise fusions.
FUSION_TYPES = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT", "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
                "LIBRARY_FUSION_TYPE_REDUCE", "LIBRARY_FUSION_TYPE_ELTWISE")


def configured(config, override: bool | None = None) -> bool:
    """Whether a run of ``config`` runs elementwise fusions in YNNPACK: ``override`` unless None
    (``main.py``'s ``--[no]xla_cpu_ynn_elementwise``), else the config's top-level boolean
    ``xla_cpu_ynn_elementwise`` (``ValueError`` for anything but True or False; False for a
    config without the field). The field is read (and checked) either way."""
    return cf.setting(config, FIELD, False, override)


def use_ynn_elementwise_fusions() -> bool:
    """Adds ``--xla_cpu_experimental_ynn_fusion_type`` with :data:`FUSION_TYPES` to ``XLA_FLAGS``
    (kept otherwise); call it before JAX starts its backends (before the first computation).
    Returns False, changing nothing, when ``XLA_FLAGS`` names the option already."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"--{OPTION}" in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --{OPTION}={','.join(FUSION_TYPES)}".strip()
    return True
