"""``--mode=sample`` for a conditional task (``sampling.task`` = "inpaint", "colorize" or "dps";
``Experiment.task``): the first ``sampling.num_samples`` test images are observed (masked, made
grey, or measured as y = A(x) + n), the task's sampler completes them with the EMA score model,
and the inputs, the outputs and the ground truth are written side by side.

The batch (``sampling.num_samples`` rounded up to a multiple of the device count) is sharded
over every device; the observation and the sampler run as one jitted program, so a new batch of
images compiles nothing. The key is ``fold_in(eval_key, step)`` (split into the observation's
noise and the sampler's), as for unconditional samples. Writes
``WORKDIR/samples/<task>_step_<step>.npz`` (uint8 ``inputs``, ``samples`` and ``truth``
[N, H, W, C], the ``labels`` of the test images, ``nfe`` and the task's ``settings`` as JSON) and
a PNG beside it: per example the input, the output and the ground truth, three columns each.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING

import jax
import numpy as np

from sgm_jax import parallel, plots
from sgm_jax.checkpoints import load_checkpoint
from sgm_jax.evaluate.images import host_array, to_uint8
from sgm_jax.sampling import check_finite_samples

if TYPE_CHECKING:
    from sgm_jax.experiment import Experiment


def test_images(experiment: Experiment, count: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of the first ``count`` test images (model space) and their labels; a
    test split shorter than ``count`` repeats its last image."""
    batch = next(iter(experiment.data.eval_batches(count)))
    rows = np.minimum(np.arange(len(batch["mask"])), max(int(np.sum(batch["mask"])) - 1, 0))
    return batch["x"][rows], batch["label"][rows]


def task_program(experiment: Experiment, mesh):
    """The jitted ``(params, x [B, H, W, C], key) -> (shown inputs, samples, nfe)`` of the task,
    the batch sharded over ``mesh``."""
    task = experiment.task

    def program(params, x, key):
        k_observe, k_sample = jax.random.split(key)
        observation = task.observe(x, k_observe)
        samples, nfe = task.sample(experiment.score_model(params), observation, k_sample)
        return task.show(observation), samples, nfe

    repl, shard = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    return jax.jit(program, in_shardings=(repl, shard, repl), out_shardings=(shard, shard, repl))


def triptych(inputs: np.ndarray, samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 images [3N, H, W, C], per example its input (grey ones repeated to C channels), its
    output and its ground truth, and the number of grid columns: whole triples, about as many
    rows as columns."""
    n = len(samples)
    inputs = inputs if inputs.shape[-1] == samples.shape[-1] else np.repeat(
        inputs, samples.shape[-1], -1)
    images = np.stack([inputs, samples, truth], axis=1).reshape((3 * n,) + samples.shape[1:])
    return images, 3 * max(1, math.ceil(math.sqrt(n / 3)))


def sample(experiment: Experiment, workdir: str, *, mesh=None) -> str:
    """Run the task on the configured checkpoint (module docstring); returns the ``.npz``."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    e, task = experiment.evaluation, experiment.task
    state = load_checkpoint(experiment, workdir, e.checkpoint, mesh=mesh)
    step = int(state.step)
    batch = math.ceil(experiment.num_samples / mesh.size) * mesh.size
    x, labels = (parallel.shard_batch(a, mesh) for a in test_images(experiment, batch))
    shown, samples, nfe = task_program(experiment, mesh)(
        state.ema_params, x, jax.random.fold_in(experiment.eval_key(), step))
    samples = host_array(samples)
    check_finite_samples(task.name, samples)
    n = experiment.num_samples
    images = {"inputs": to_uint8(experiment, host_array(shown))[:n],
              "samples": to_uint8(experiment, samples)[:n],
              "truth": to_uint8(experiment, host_array(x))[:n]}
    labels = host_array(labels)
    path = os.path.join(workdir, "samples", f"{task.name}_step_{step}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, **images, labels=labels[:n], nfe=int(nfe),
                 settings=json.dumps(task.settings, sort_keys=True))
        grid, columns = triptych(images["inputs"], images["samples"], images["truth"])
        plots.save_image_grid(path.replace(".npz", ".png"), grid.astype(np.float32) / 255.0,
                              columns)
        print(f"wrote {path} ({n} examples of {task.name}: input, output, truth; NFE {int(nfe)})")
    return path
