"""Writing the small files of a run (JSON records, results): atomically, from process 0 only."""

from __future__ import annotations

import json
import os
from typing import Any

import jax


def write_json(path: str, content: Any) -> None:
    """Write ``content`` (a JSON-serialisable value, or a string written as it is) to ``path``
    from process 0 only: into ``path + ".tmp"``, then renamed over ``path``, so a reader never
    sees a partial file and a crash leaves the previous one. Creates the folder."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
