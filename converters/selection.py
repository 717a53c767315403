"""The selection set: inputs and source outputs that int8 candidates are ranked and tuned on.

The selection set comes from the calibration photos but from other photos
than the calibration crops, and never from the parity photos. The ``best``
searches rank their candidates on it, and NNCF's accuracy control keeps the
layers in float whose quantization costs the most agreement on it. The
parity report is then measured on crops that took no part in either
choice, so it is not biased towards the chosen candidate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge_runtime.manifest import OutputHead

from converters.parity import compare

logger = logging.getLogger(__name__)


@dataclass
class SelectionSet:
    """Input batch of the selection set, the source's outputs on it, and how to compare them.

    Attributes:
        batch: inputs in the stage's layout, one sample per row.
        reference: the source framework's outputs on ``batch``, in output order.
        output_names: the stage's output names, in order.
        heads: the heads agreement is judged on (class heads by top-1).
    """

    batch: np.ndarray
    reference: list[np.ndarray]
    output_names: list[str]
    heads: Sequence[OutputHead]

    def __len__(self) -> int:
        return len(self.batch)

    def agreement(self, outputs: Sequence[np.ndarray], indices: Sequence[int] | None = None) -> float:
        """Return the lowest top-1 agreement over class heads of ``outputs`` with the source's.

        ``indices`` names the rows of the selection set that ``outputs``
        belong to (default: all, in order). Without a class head, one minus
        the largest relative difference is returned instead.
        """
        rows = np.arange(len(self.batch)) if indices is None else np.asarray(list(indices), dtype=int)
        reference = [array[rows] for array in self.reference]
        _, _, top1, _, _, judged_rel = compare(outputs, reference, self.output_names, self.heads)
        if top1:
            return min(top1.values())
        return 1.0 - max(judged_rel.values(), default=0.0)

    def validation(self, make_runner: Callable[[object], Callable[[np.ndarray], list[np.ndarray]]]):
        """Return NNCF's validation dataset items and ``validation_fn`` for this set.

        ``make_runner(model)`` returns a function that runs one sample (a
        batch of 1) through the model NNCF hands over and returns its outputs
        in order. Items are row indices, so the function works on any subset
        NNCF picks.
        """

        def validate(model, items) -> tuple[float, None]:
            rows = [int(row) for row in items]
            run = make_runner(model)
            parts = [run(self.batch[row : row + 1]) for row in rows]
            outputs = [np.concatenate([part[j] for part in parts], axis=0) for j in range(len(parts[0]))]
            return self.agreement(outputs, rows), None

        return list(range(len(self.batch))), validate
