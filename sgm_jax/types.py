"""The type aliases of the library's public contracts (DESIGN.md §3.1, §3.5)."""

from __future__ import annotations

from collections.abc import Callable

import jax

Array = jax.Array
#: ``score_fn(x) -> s``: a batched score function, ``x`` and ``s`` of shape ``[B, *event]``.
ScoreFn = Callable[[Array], Array]
#: ``score_model(x, t) -> s``: a time-conditional score model, ``t`` of shape ``[B]``.
ScoreModel = Callable[[Array, Array], Array]
#: ``logits_model(x, t) -> logits [B, num_classes]``: a noise-conditional classifier.
LogitsModel = Callable[[Array, Array], Array]
