"""Published checkpoints as checkpoints of a library run (DESIGN.md §3.9); no torch, no old Flax.

    python -m sgm_jax.convert_checkpoint SOURCE --config=CONFIG_FILE --workdir=DIR \\
        [--step=N] [--config.a.b=value ...]
    step = convert(source, config, workdir)

writes the checkpoint at ``SOURCE`` as the step-N checkpoint of ``DIR/checkpoints`` (N is the
file's step; ``--step``, or 0, where it has none), so that ``main.py --mode=eval|sample
--workdir=DIR`` and ``--config.training.init_from=DIR`` use it as any checkpoint of the library.
``params`` and ``ema_params`` both come from the file (the EMA where it has one, else the weights); the
optimiser state starts afresh (the files' Adam moments belong to PyTorch's parameter order and
step count; a fine-tuning run warms up again, as QCSGM's second stage does). The record
``DIR/converted_from.json`` names the file, its SHA-256, its step and its format.

Formats, told apart by their content:

* **PyTorch score models** (``torch.save``, read by :mod:`sgm_jax.pth`): score_sde_pytorch's
  ``checkpoint_N.pth`` = {``model``: the state dict (with DataParallel's ``module.`` prefix or
  without), ``ema``: {``decay``, ``num_updates``, ``shadow_params``: the trainable parameters
  in ``parameters()`` order}, ``optimizer``, ``step``}; QCSBM's released U-NCSN++ (the same
  without ``step``) and DLSM's score models (the same). The names map as
  :mod:`sgm_jax.models.torch_layout` describes (``all_modules.<i>``).
* **DLSM classifiers** (``{model, optimizer, step}``, no EMA): the ResNet-18 / 34 of
  ``configs/dlsm/*`` (``classifier.…`` names). A DLSM config takes two conversions into one
  workdir: the score model (into ``DIR/checkpoints``), then the classifier (into
  ``DIR/classifier/checkpoints``, recorded against that score checkpoint as a trained DLSM run
  records it, :mod:`sgm_jax.dlsm`).
* **score_sde's Flax checkpoints** (``checkpoint_N``: the msgpack of a ``flax.optim``-era state
  {``step``, ``optimizer``: {``target``: the parameters, …}, ``params_ema``, …}), read with
  ``flax.serialization.msgpack_restore``; the parameter names are the library's.

A file whose network does not fit the config's (other widths, depths, another architecture) is
refused with a ``ValueError`` naming the first mismatching parameter on both sides; a workdir
that already holds a checkpoint of the same step is refused too (nothing is overwritten).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

from sgm_jax import config_fields as cf
from sgm_jax import files
from sgm_jax.checkpoints import TrainState, checkpoint_dir, manager
from sgm_jax.models import torch_layout
from sgm_jax.pth import file_sha256, read_pth

PYTORCH_SCORE = "pytorch score model"
PYTORCH_CLASSIFIER = "pytorch DLSM classifier"
FLAX_SCORE = "score_sde flax"
#: The record of a converted checkpoint, in the run's folder.
RECORD = "converted_from.json"


@dataclasses.dataclass(frozen=True)
class Published:
    """A published checkpoint in the library's layout: ``params``, ``ema_params`` (``params``
    where the file has no EMA), ``model_state`` (a classifier's BatchNorm statistics, ``{}``
    for score networks), the ``step`` (0 where the file has none: ``has_step`` False) and the
    ``format``."""

    format: str
    params: Any
    ema_params: Any
    model_state: dict
    step: int
    has_step: bool


def _example(experiment) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    return (jax.ShapeDtypeStruct((1, *experiment.event_shape), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))


def _step(value, source: str) -> tuple[int, bool]:
    """The file's step (0 when it has none) and whether it has one."""
    if value is None:
        return 0, False
    step = int(np.asarray(value))
    if step < 0:
        raise ValueError(f"{source!r} records a negative step ({step}).")
    return step, True


def _from_pytorch(checkpoint: Mapping, layout: torch_layout.NetworkLayout, kind: str,
                  source: str) -> Published:
    model = checkpoint["model"]
    variables = torch_layout.state_dict_to_variables(model, layout)
    params = variables.pop("params")
    ema = checkpoint.get("ema")
    if ema is None:
        ema_params = params
    elif isinstance(ema, Mapping) and isinstance(ema.get("shadow_params"), (list, tuple)):
        ema_params = torch_layout.parameter_list_to_params(ema["shadow_params"], model, layout)
    else:
        raise ValueError(f"{source!r}: 'ema' is not an EMA state dict ({{decay, num_updates, "
                         f"shadow_params}}); it holds {type(ema).__name__}.")
    return Published(kind, params, ema_params, variables, *_step(checkpoint.get("step"), source))


def _from_flax(state: Mapping, layout: torch_layout.NetworkLayout, source: str) -> Published:
    try:
        raw_params, raw_ema = state["optimizer"]["target"], state["params_ema"]
    except (KeyError, TypeError):
        raise ValueError(f"{source!r} is a msgpack file but not a score_sde checkpoint (expected "
                         "'optimizer' → 'target' and 'params_ema').") from None
    shapes = {k[len("params/"):]: v for k, v in layout.shapes.items() if k.startswith("params/")}

    def tree(raw, what):
        flat = traverse_util.flatten_dict(raw, sep="/")
        for name, value in flat.items():
            if name not in shapes:
                raise ValueError(f"{source!r}: {what} {name!r} {list(np.shape(value))} has no "
                                 "counterpart in the config's network.")
            if tuple(np.shape(value)) != shapes[name]:
                raise ValueError(f"{source!r}: {what} {name!r} {list(np.shape(value))} does not "
                                 f"fit the config's network, whose {name!r} is "
                                 f"{list(shapes[name])}.")
        missing = [name for name in shapes if name not in flat]
        if missing:
            raise ValueError(f"{source!r} has no {what} for the config's {missing[0]!r} "
                             f"{list(shapes[missing[0]])}.")
        return traverse_util.unflatten_dict(
            {k: np.asarray(v, np.float32) for k, v in flat.items()}, sep="/")

    if state.get("model_state"):
        raise ValueError(f"{source!r} holds model state {sorted(state['model_state'])}; the "
                         "library's score networks have none.")
    return Published(FLAX_SCORE, tree(raw_params, "parameter"), tree(raw_ema, "EMA parameter"),
                     {}, *_step(state.get("step"), source))


def _is_torch_file(path: str) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02"  # the legacy layout starts with a protocol-2 pickle


def read_published(source: str | os.PathLike, score_layout: torch_layout.NetworkLayout,
                   classifier_layout: torch_layout.NetworkLayout | None = None) -> Published:
    """The checkpoint at ``source`` (module docstring) in the layout of the config's score network
    or, for a DLSM classifier file, of its classifier (``classifier_layout``, None when the
    config has no classifier)."""
    source = os.fspath(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source!r} does not exist.")
    if not _is_torch_file(source):
        with open(source, "rb") as f:
            try:
                state = serialization.msgpack_restore(f.read())
            except Exception as err:  # msgpack raises several unrelated types
                raise ValueError(
                    f"{source!r} is neither a torch.save file nor a msgpack (Flax) checkpoint: "
                    f"{err}") from None
        return _from_flax(state, score_layout, source)
    checkpoint = read_pth(source, keys=("model", "ema", "step"))
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ValueError(f"{source!r} is not a training checkpoint: expected a dict with a "
                         "'model' state dict (score_sde_pytorch, QCSBM, DLSM).")
    names = [n[len("module."):] if n.startswith("module.") else n for n in checkpoint["model"]]
    if any(n.startswith("all_modules.") for n in names):
        return _from_pytorch(checkpoint, score_layout, PYTORCH_SCORE, source)
    if classifier_layout is None:
        raise ValueError(f"{source!r} holds a network named {names[0]!r}…, not a score network "
                         "(all_modules.<i>…); a DLSM classifier needs a configs/dlsm config.")
    return _from_pytorch(checkpoint, classifier_layout, PYTORCH_CLASSIFIER, source)


def _save(experiment, published: Published, workdir: str) -> None:
    """Write ``published`` as the checkpoint of its step in ``workdir`` (nothing overwritten)."""
    directory = checkpoint_dir(workdir)
    writer = manager(directory)
    try:
        if published.step in writer.all_steps():
            raise ValueError(f"{directory} already holds a checkpoint of step {published.step}; "
                             "convert into a new workdir.")
        params = jax.tree.map(jnp.asarray, {"params": published.params})
        state = TrainState(step=jnp.asarray(published.step, jnp.int32), params=params,
                           opt_state=experiment.optimizer.init(params),
                           ema_params=jax.tree.map(jnp.asarray, {"params": published.ema_params}),
                           key=experiment.keys()["train"],
                           model_state=jax.tree.map(jnp.asarray, published.model_state))
        writer.save(published.step, args=ocp.args.StandardSave(state))
        writer.wait_until_finished()
    finally:
        writer.close()


def convert(source: str | os.PathLike, config, workdir: str, step: int | None = None) -> int:
    """Write the published checkpoint at ``source`` as a checkpoint of the run of ``config`` in
    ``workdir`` (module docstring); returns its step. ``step`` is the step to record for a file
    that has none (QCSBM's U-NCSN++ files are their second stage's ``training.init_step``:
    600,000, SVHN 300,000); a file with a step keeps it (another ``step`` is refused)."""
    from sgm_jax import checkpoints
    from sgm_jax.classifier_experiment import build_classifier_experiment
    from sgm_jax.experiment import build_experiment

    score = build_experiment(config)
    classifier = (build_classifier_experiment(config, score) if cf.has(config, "classifier")
                  else None)
    score_layout = torch_layout.network_layout(score.network, *_example(score))
    classifier_layout = (None if classifier is None else
                         torch_layout.network_layout(classifier.network, *_example(classifier)))
    published = read_published(source, score_layout, classifier_layout)
    if step is not None:
        if published.has_step and published.step != step:
            raise ValueError(f"{os.fspath(source)!r} records step {published.step}; --step={step} "
                             "is only for files without one.")
        published = dataclasses.replace(published, step=step)
    target, folder = score, workdir
    if published.format == PYTORCH_CLASSIFIER:
        target, folder = classifier, checkpoints.classifier_workdir(workdir)
        _, record = checkpoints.frozen_score(classifier, workdir)  # the score model comes first
    _save(target, published, folder)
    if published.format == PYTORCH_CLASSIFIER:
        checkpoints.write_score_source(workdir, record)
    files.write_json(os.path.join(folder, RECORD), {
        "source": os.path.basename(os.fspath(source)), "sha256": file_sha256(source),
        "step": published.step, "format": published.format})
    return published.step


def main(argv: Sequence[str]) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "The config of the run to write.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "The run folder to write the checkpoint into.")
    flags.DEFINE_integer("step", None, "The step to record for a file without one (QCSBM's "
                         "U-NCSN++: its second stage's training.init_step).")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(args):
        if len(args) != 2:
            raise app.UsageError("give one SOURCE: python -m sgm_jax.convert_checkpoint SOURCE "
                                 "--config=CONFIG_FILE --workdir=DIR")
        try:
            step = convert(args[1], flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"wrote {args[1]} as step {step} of {checkpoint_dir(flags.FLAGS.workdir)}")

    app.run(run, argv)


if __name__ == "__main__":
    main(sys.argv)
