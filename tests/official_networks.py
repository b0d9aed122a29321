"""The official PyTorch networks of the published checkpoints, for the converter's tests.

score_sde_pytorch's ``NCSNpp`` / ``DDPM`` and DLSM's ``resnet_cond`` classifier are built from
checkouts of those repositories beside this one (``../score_sde_pytorch``, ``../dlsm``, or the
folders named by ``SCORE_SDE_PYTORCH`` / ``DLSM_SOURCE``), with torch. Each case runs in its own
process (both repositories have top-level modules called ``models`` and ``configs``):

    python tests/official_networks.py layouts           # rewrites tests/data/torch_layouts.json
    python tests/official_networks.py checkpoint CASE DIR

``layouts`` records each case's state-dict names, shapes and kinds in order (what the fast tests
build their synthetic files from); ``checkpoint`` writes ``DIR/checkpoint.pth`` in the official
training-checkpoint layout, with random weights and a different random EMA, and
``DIR/reference.npz``: inputs ``x`` (NCHW) and ``t`` and the official output on them (the score
of ``models.utils.get_score_fn`` with the EMA weights, or the classifier's logits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = os.path.join(ROOT, "tests", "data", "torch_layouts.json")
SOURCES = {
    "score_sde_pytorch": os.environ.get("SCORE_SDE_PYTORCH",
                                        os.path.join(os.path.dirname(ROOT), "score_sde_pytorch")),
    "dlsm": os.environ.get("DLSM_SOURCE", os.path.join(os.path.dirname(ROOT), "dlsm")),
}
#: case: (repository, its config module, the library's config file, config fields set in both,
#: SDE). The DDPM case keeps nf = 128: its PyTorch GroupNorm always has 32 groups, the library's
#: min(C // 4, 32), the same from 128 channels on (sgm_jax.models.ddpm). "ve_ncsnpp_deep_one_level"
#: is the NCSN++ deep layout at a width and depth the default test suite can afford.
CASES = {
    "ve_ncsnpp_continuous": ("score_sde_pytorch", "configs.ve.cifar10_ncsnpp_continuous",
                             "configs/ve/cifar10_ncsnpp_continuous.py", {"model.nf": 16}, "vesde"),
    "ve_ncsnpp_deep_continuous": ("score_sde_pytorch",
                                  "configs.ve.cifar10_ncsnpp_deep_continuous",
                                  "configs/ve/cifar10_ncsnpp_deep_continuous.py", {"model.nf": 16},
                                  "vesde"),
    "ve_ncsnpp_deep_one_level": ("score_sde_pytorch",
                                 "configs.ve.cifar10_ncsnpp_deep_continuous",
                                 "configs/ve/cifar10_ncsnpp_deep_continuous.py",
                                 {"model.nf": 8, "model.ch_mult": (1,), "model.num_res_blocks": 1,
                                  "model.attn_resolutions": (), "data.image_size": 16}, "vesde"),
    "vp_ddpmpp_continuous": ("score_sde_pytorch", "configs.vp.cifar10_ddpmpp_continuous",
                             "configs/vp/cifar10_ddpmpp_continuous.py", {"model.nf": 16}, "vpsde"),
    "subvp_ddpmpp_deep_continuous": ("score_sde_pytorch",
                                     "configs.subvp.cifar10_ddpmpp_deep_continuous",
                                     "configs/subvp/cifar10_ddpmpp_deep_continuous.py",
                                     {"model.nf": 16}, "subvpsde"),
    "vp_ddpm_continuous": ("score_sde_pytorch", "configs.vp.ddpm.cifar10_continuous",
                           "configs/vp/cifar10_ddpm_continuous.py", {"model.nf": 128}, "vpsde"),
}
BATCH, SEED = 3, 0


def available() -> str | None:
    """None when torch and both checkouts are there, else why the tests cannot run."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install -e '.[test,parity]')"
    for name, path in SOURCES.items():
        if not os.path.isdir(os.path.join(path, "models")):
            return (f"no checkout of {name} at {path} (clone it beside this repository or set "
                    f"{'SCORE_SDE_PYTORCH' if name == 'score_sde_pytorch' else 'DLSM_SOURCE'})")
    return None


def _official_model(case: str):
    """The official network of ``case`` (wrapped in DataParallel as the official code does), its
    config and its SDE, built in this process from the checkout."""
    import torch
    import torch.utils.cpp_extension

    repo, module, _, fields, sde_name = CASES[case]
    torch.utils.cpp_extension.load = lambda *args, **kwargs: None  # CUDA kernels: unused on CPU
    sys.path.insert(0, SOURCES[repo])
    import importlib

    import sde_lib
    from models import ddpm, ncsnpp  # noqa: F401 (they register the models)
    from models import utils as mutils

    config = importlib.import_module(module).get_config()
    for path, value in fields.items():
        section, field = path.split(".")
        config[section][field] = value
    config.device = torch.device("cpu")
    torch.manual_seed(SEED)
    model = mutils.create_model(config)
    if sde_name == "vesde":
        sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
    else:
        cls = sde_lib.VPSDE if sde_name == "vpsde" else sde_lib.subVPSDE
        sde = cls(config.model.beta_min, config.model.beta_max, config.model.num_scales)
    return model, config, sde, mutils


def layout(case: str) -> list[tuple[str, list[int], str]]:
    """The state dict of ``case`` in order: name, shape and kind, "param" (a parameter with
    ``requires_grad``, in the EMA's list), "frozen" (a parameter without) or "buffer"."""
    model, *_ = _official_model(case)
    params = dict(model.named_parameters())
    return [(name, list(value.shape), "buffer" if name not in params else
             "param" if params[name].requires_grad else "frozen")
            for name, value in model.state_dict().items()]


def checkpoint(case: str, directory: str) -> None:
    """``checkpoint.pth`` and ``reference.npz`` of ``case`` in ``directory`` (module docstring)."""
    import numpy as np
    import torch

    model, config, sde, mutils = _official_model(case)
    from models.ema import ExponentialMovingAverage

    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():  # every weight random, so no layer is the zero its init makes it
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    for shadow in ema.shadow_params:
        shadow.add_(0.05 * torch.randn(shadow.shape, generator=generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    torch.save({"optimizer": optimizer.state_dict(), "model": model.state_dict(),
                "ema": ema.state_dict(), "step": 26}, os.path.join(directory, "checkpoint.pth"))

    rng = np.random.default_rng(SEED)
    shape = (BATCH, config.data.num_channels, config.data.image_size, config.data.image_size)
    x = rng.uniform(size=shape).astype(np.float32)
    if config.data.centered:
        x = 2 * x - 1
    t = rng.uniform(0.05, 1.0, BATCH).astype(np.float32)
    ema.copy_to(model.parameters())
    score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
    with torch.no_grad():
        out = score_fn(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    np.savez(os.path.join(directory, "reference.npz"), x=x, t=t, out=out)


def main(argv: list[str]) -> None:
    if argv[:1] == ["layouts"]:
        layouts = {}
        for case in CASES:
            out = subprocess.run([sys.executable, __file__, "layout", case], check=True,
                                 capture_output=True, text=True).stdout
            layouts[case] = json.loads(out.strip().splitlines()[-1])
        os.makedirs(os.path.dirname(LAYOUTS), exist_ok=True)
        with open(LAYOUTS, "w") as f:
            f.write("{\n" + ",\n".join(
                f"{json.dumps(case)}: [\n" + ",\n".join(json.dumps(entry) for entry in entries)
                + "\n]" for case, entries in layouts.items()) + "\n}\n")
    elif argv[:1] == ["layout"]:
        print(json.dumps(layout(argv[1])))
    elif argv[:1] == ["checkpoint"]:
        checkpoint(argv[1], argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
