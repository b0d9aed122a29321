"""Where the time of a compiled train step goes: XLA's per-operation times, grouped by what the
operations compute.

XLA:CPU runs a compiled program as a sequence of thunks, one per instruction of the program's
entry computation (a fusion, a convolution, a copy, a loop, ...), and JAX's profiler records
each thunk's start and end. :func:`profile_program` runs a compiled program under the profiler
and sums those durations per instruction; :func:`hlo_groups` assigns every instruction of the
entry computation to one of :data:`GROUPS` from the optimised HLO text:

* ``convolution``: a convolution, or a fusion or dot around one (forward, input gradient and
  weight gradient alike; also the strided convolution of the FIR-fused ``Conv2d``);
* otherwise by the Python functions that produced the instruction (the stack frames XLA keeps in
  the instruction's metadata, innermost first; the innermost function that names a group wins):
  ``normalisation`` (GroupNorm), ``fir`` (FIR up/down-sampling: ``upfirdn2d`` and its callers),
  ``attention`` (the attention block's projections, logits, softmax and weighted sum),
  ``dropout`` (the dropout masks: random bits and their comparison), ``optimizer`` (optax's
  clipping and Adam, the EMA);
* ``layout``: copies and transposes that no such function produced;
* ``elementwise``: everything else (activations, residual sums, the time embedding, the loss).

The gradient of an operation carries the metadata of the operation, so forward and backward
work land in the same group. Thunks may overlap on the runtime's threads, and a convolution's
thunk spreads its work over the intra-op threads, so the durations are the time each operation
took from start to end; their sum is close to the step's wall time when the runtime runs one
thunk at a time. (JAX is imported by the functions that profile, so that a process without
it can read :data:`GROUPS`.)
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time
from typing import Any, Callable

#: The groups of operations, in the order of the tables.
GROUPS = ("convolution", "normalisation", "fir", "attention", "elementwise", "dropout",
          "optimizer", "layout")
GROUP_TITLES = {"convolution": "convolutions", "normalisation": "GroupNorm",
                "fir": "FIR up/down-sampling", "attention": "attention (without its GroupNorm)",
                "elementwise": "elementwise and other", "dropout": "dropout masks",
                "optimizer": "optimizer, clipping, EMA", "layout": "layout copies"}

#: Python functions (innermost first wins) that name a group.
_FUNCTION_GROUPS = (
    (re.compile(r"^(group_norm|GroupNorm\.|_compute_stats|_normalize)"), "normalisation"),
    (re.compile(r"^(upfirdn2d|_correlate_1d|upsample_2d|downsample_2d|"
                r"ResnetBlockBigGANpp\._resample|naive_(up|down)sample_2d|fir_)"), "fir"),
    (re.compile(r"^Dropout\."), "dropout"),
    (re.compile(r"^AttnBlockpp\."), "attention"),
)
_OPTIMIZER_FILES = re.compile(r"/optax/|/sgm_jax/ema\.py$")
_OPTIMIZER_FUNCTIONS = re.compile(r"^(incremental_update|apply_updates|ema_update)")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%([\w.-]+)")
_FRAME = re.compile(r"stack_frame_id=(\d+)")


def _sections(text: str) -> tuple[dict[str, list[str]], str, dict[int, list[tuple[str, str]]]]:
    """(computation name -> instruction lines, entry computation name, stack frame id -> its
    (file, function) chain, innermost first) of an HLO module's text."""
    computations: dict[str, list[str]] = {}
    tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
    entry, current, table = "", None, None
    for line in text.split("\n"):
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            table = line
            continue
        header = re.match(r"^(ENTRY )?%(\S+) \(", line)
        if header and line.rstrip().endswith("{"):
            current, table = header.group(2), None
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            computations[current].append(line)
        elif table and line.strip():
            index, rest = line.split(" ", 1)
            tables[table][int(index)] = rest.strip().strip('"')
    fields = lambda rest: dict(re.findall(r"(\w+)=(\d+)", rest))  # noqa: E731
    locations = {i: fields(rest) for i, rest in tables["FileLocations"].items()}
    frames = {i: fields(rest) for i, rest in tables["StackFrames"].items()}
    chains: dict[int, list[tuple[str, str]]] = {}
    for frame_id in frames:
        chain, k = [], frame_id
        while k in frames and len(chain) < 200:
            location = locations[int(frames[k]["file_location_id"])]
            chain.append((tables["FileNames"][int(location["file_name_id"])],
                          tables["FunctionNames"][int(location["function_name_id"])]))
            k = int(frames[k].get("parent_frame_id", 0)) - 1  # 1-based, 0 = no parent
        chains[frame_id] = chain
    return computations, entry, chains


def _opcodes(computations: dict[str, list[str]], name: str, seen: set[str] | None = None
             ) -> set[str]:
    """The opcodes of computation ``name`` and of every computation it calls."""
    seen = set() if seen is None else seen
    if name in seen or name not in computations:
        return set()
    seen.add(name)
    found = set()
    for line in computations[name]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        opcode = _OPCODE.search(" " + match.group(2).split(", metadata=")[0])
        if opcode:
            found.add(opcode.group(1))
        for called in _CALLS.findall(line):
            found |= _opcodes(computations, called, seen)
    return found


def _group_of_frames(chain: list[tuple[str, str]]) -> str | None:
    for filename, function in chain:
        for pattern, group in _FUNCTION_GROUPS:
            if pattern.match(function):
                return group
        if _OPTIMIZER_FILES.search(filename) or _OPTIMIZER_FUNCTIONS.match(function):
            return "optimizer"
    return None


def hlo_groups(text: str) -> dict[str, str]:
    """Instruction name -> group (:data:`GROUPS`) for every instruction of the entry computation
    of an optimised HLO module's text (``compiled.as_text()``); the module docstring gives the
    rules."""
    computations, entry, chains = _sections(text)
    groups = {}
    for line in computations[entry]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, rest = match.groups()
        head = rest.split(", metadata=")[0]
        opcode_match = _OPCODE.search(" " + head)
        opcode = opcode_match.group(1) if opcode_match else ""
        if opcode in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
            continue
        inner = {opcode}
        for called in _CALLS.findall(head):
            inner |= _opcodes(computations, called)
        frame = _FRAME.search(rest)
        by_frames = _group_of_frames(chains.get(int(frame.group(1)), [])) if frame else None
        if "convolution" in inner:
            group = "convolution"
        elif by_frames is not None:
            group = by_frames
        elif inner <= {"copy", "transpose", "fusion", "bitcast", "parameter"} and (
                "copy" in inner or "transpose" in inner):
            group = "layout"
        else:
            group = "elementwise"
        groups[name] = group
    return groups


def _thunk_times(trace_dir: str) -> dict[str, float]:
    """Instruction name -> summed duration (seconds) of its thunks in the trace of ``trace_dir``."""
    import jax

    path = max(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
               key=os.path.getmtime)
    data = jax.profiler.ProfileData.from_file(path)
    times: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # the runtime's threads
                continue
            for event in line.events:
                times[event.name] += event.duration_ns * 1e-9
    return times


def profile_program(run: Callable[[], Any], hlo_text: str, steps: int) -> dict:
    """Run ``run`` (``steps`` train steps, outputs waited for) once under JAX's profiler and
    return per group the seconds per step of the instructions of ``hlo_text``'s entry computation
    (``groups``), their sum (``total_s``), the profiled wall time per step (``wall_s``) and the ten
    longest instructions (``top``: name, group, seconds per step)."""
    import jax

    groups = hlo_groups(hlo_text)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        jax.block_until_ready(run())
        wall = time.perf_counter() - start
        jax.profiler.stop_trace()
        times = _thunk_times(trace_dir)
    per_group = dict.fromkeys(GROUPS, 0.0)
    for name, group in groups.items():
        per_group[group] += times.get(name, 0.0) / steps
    top = sorted(((name, groups[name], times.get(name, 0.0) / steps) for name in groups),
                 key=lambda row: -row[2])[:10]
    return dict(groups=per_group, total_s=sum(per_group.values()), wall_s=wall / steps, top=top)
