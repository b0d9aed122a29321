"""QCSGM Table 1, spirals: QC-SGM, the unconstrained score trained with DSM plus the exact 2-D QC
regulariser (official QCSBM config, reg_type "lqc", λ = 0.1, 2000 iterations).

qc_weight = 0.05 is the official λ = 0.1: the official toy loss is ‖σs + z‖² + λσ²(tr JJᵀ − tr JJ),
twice this library's ½‖σs + z‖² + (λ/2)σ²·½‖J − Jᵀ‖²_F (see configs/default_toy.py)."""

from configs.default_toy import get_default_configs


def get_config():
    config = get_default_configs()
    config.data.dataset = "spirals"
    config.training.qc_weight = 0.05
    config.training.qc_estimator = "exact"
    config.training.n_iters = 2000
    return config
