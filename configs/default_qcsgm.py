"""QCSGM's real-world experiments (Chao et al., ICML 2023, §5 and A.5.3;
``shared/reference/official_code_facts.md`` §1a): NCSN++ deep continuous on the VE SDE with
σ ∈ [0.01, 50], batch 128, Adam 2e-4 with 5,000 warm-up steps, clipping 1, EMA 0.999, t ~ U(1e-5, 1).

* ``u``: U-NCSN++, s = f/σ_t (score_sde's NCSN++), plain DSM.
* ``c``: C-NCSN++, the official energy h = −½‖f‖²/σ_t, s = ∇ₓh ("c_norm"), plain DSM.
* ``qc``: QC-NCSN++, U-NCSN++ with the regulariser: λ = 1e-4 and K = 1 Rademacher probe, as the
  official flags. The official real-world DSM is ½Σ(σs + z)², i.e. this library's σ²·``dsm_loss``,
  and its regulariser (vᵀJJᵀv − vᵀJJv)·σ² has no ½, i.e. σ²·``qc_loss``: so λ maps to
  ``training.qc_weight`` unchanged (the 2-D toy code differs, see ``configs/default_toy.py``).

The official schedule is two-stage: stage 1 trains U with DSM for 600,000 steps (300,000 on SVHN),
stage 2 restores it (parameters, Adam state, step; the warm-up is long over) and adds the
regulariser up to 750,000 (450,000). The ``u`` and ``c`` configs train to the total, keeping the
stage-1 checkpoint (``keep_every`` 50,000); the ``qc`` config starts from it when
``training.init_from`` names the stage-1 workdir:

    python main.py --config=configs/ve/cifar10_u.py --mode=train --workdir=runs/cifar10_u
    python main.py --config=configs/ve/cifar10_qc.py --mode=train --workdir=runs/cifar10_qc \
        --config.training.init_from=runs/cifar10_u

Without ``init_from`` the ``qc`` config trains with the regulariser from the first step.
"""

from configs.default_cifar10 import get_default_configs

#: config name -> (tfds data set, stage-1 steps, total steps)
DATASETS = {
    "cifar10": ("cifar10", 600000, 750000),
    "cifar100": ("cifar100", 600000, 750000),
    "svhn": ("svhn_cropped", 300000, 450000),
    "imagenet32": ("imagenet32", 600000, 750000),
}
VARIANTS = ("u", "c", "qc")


def get_qcsgm_config(dataset: str, variant: str):
    tfds_name, stage1, total = DATASETS[dataset]
    config = get_default_configs()
    config.data.dataset = tfds_name
    config.model.num_res_blocks = 8  # NCSN++ deep continuous
    config.training.n_iters = total
    if variant == "c":
        config.model.parameterisation = "c_norm"
    elif variant == "qc":
        config.training.qc_weight = 1e-4
        config.training.qc_num_vectors = 1
        config.training.init_step = stage1
    elif variant != "u":
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}.")
    return config
