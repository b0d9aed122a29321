"""The official networks of the published checkpoints, for the converter's tests.

score_sde_pytorch's ``NCSNpp`` / ``DDPM`` (torch) and score_sde's Flax ``NCSNpp`` are built from
checkouts of those repositories beside this one (``../score_sde_pytorch``, ``../score_sde``, or
the folders named by ``SCORE_SDE_PYTORCH`` / ``SCORE_SDE``). Each case runs in its own process
(the repositories have top-level modules called ``models`` and ``configs``, as this one):

    python tests/official_networks.py layouts           # rewrites tests/data/torch_layouts.json
    python tests/official_networks.py checkpoint CASE DIR
    python tests/official_networks.py flax_checkpoint CASE DIR

``layouts`` records each case's state-dict names, shapes and kinds in order (what the fast tests
build their synthetic files from); ``checkpoint`` writes ``DIR/checkpoint.pth`` in the official
training-checkpoint layout, with random weights and a different random EMA, and
``DIR/reference.npz``: inputs ``x`` (NCHW) and ``t`` and the official output on them (the score
of ``models.utils.get_score_fn`` with the EMA weights). ``flax_checkpoint`` does the same with
score_sde's Flax network (modern Flax runs it once ``flax.optim``, removed from Flax and used only
in a type annotation, is stubbed): ``DIR/checkpoint_26`` is the msgpack of its training state's
fields, as ``flax.training.checkpoints`` writes them.
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
    "score_sde": os.environ.get("SCORE_SDE", os.path.join(os.path.dirname(ROOT), "score_sde")),
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


def available(repository: str) -> str | None:
    """None when ``repository`` ("score_sde_pytorch" or "score_sde") can run here, else why
    not."""
    if repository == "score_sde_pytorch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed (pip install -e '.[test,parity]')"
    path = SOURCES[repository]
    if not os.path.isdir(os.path.join(path, "models")):
        return (f"no checkout of {repository} at {path} (clone it beside this repository or set "
                f"{repository.upper()})")
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


def flax_checkpoint(case: str, directory: str) -> None:
    """``checkpoint_26`` and ``reference.npz`` of ``case`` from score_sde's Flax network (module
    docstring), random parameters and a different random EMA."""
    import types

    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import serialization

    flax.optim = sys.modules["flax.optim"] = types.SimpleNamespace(Optimizer=object)
    _, module, _, fields, sde_name = CASES[case]
    sys.path.insert(0, SOURCES["score_sde"])
    import importlib

    import sde_lib
    from models import ddpm, ncsnpp  # noqa: F401 (they register the models)
    from models import utils as mutils

    config = importlib.import_module(module).get_config()
    for path, value in fields.items():
        section, field = path.split(".")
        config[section][field] = value
    model = mutils.get_model(config.model.name)(config=config)
    shape = (BATCH, config.data.image_size, config.data.image_size, config.data.num_channels)
    variables = model.init({"params": jax.random.PRNGKey(SEED), "dropout": jax.random.PRNGKey(1)},
                           jnp.zeros(shape), jnp.ones((BATCH,)), train=False)
    rng = np.random.default_rng(SEED)
    params, ema = (jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.normal(size=p.shape).astype(
        np.float32), flax.core.unfreeze(variables["params"])) for _ in range(2))
    state = {"step": 26, "optimizer": {"target": params, "state": {"step": 26}}, "lr": 2e-4,
             "model_state": {}, "ema_rate": config.model.ema_rate, "params_ema": ema,
             "rng": np.zeros(2, np.uint32)}
    with open(os.path.join(directory, "checkpoint_26"), "wb") as f:
        f.write(serialization.to_bytes(state))
    if sde_name == "vesde":
        sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
    else:
        cls = sde_lib.VPSDE if sde_name == "vpsde" else sde_lib.subVPSDE
        sde = cls(config.model.beta_min, config.model.beta_max, config.model.num_scales)
    x = rng.uniform(size=shape).astype(np.float32)
    if config.data.centered:
        x = 2 * x - 1
    t = rng.uniform(0.05, 1.0, BATCH).astype(np.float32)
    score_fn = mutils.get_score_fn(sde, model, ema, {}, train=False,
                                   continuous=True)
    out = np.asarray(score_fn(jnp.asarray(x), jnp.asarray(t)))
    np.savez(os.path.join(directory, "reference.npz"), x=x.transpose(0, 3, 1, 2), t=t,
             out=out.transpose(0, 3, 1, 2))


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
    elif argv[:1] == ["flax_checkpoint"]:
        flax_checkpoint(argv[1], argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
