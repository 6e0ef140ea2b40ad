"""``prior``: target rates proportional to per-sample weights the user gives (``prior_file``: a ``.pt`` tensor of N
non-negative numbers, or a text file of one number per line), drawn by credit as ``coverage`` draws. For what is
known before training: a de-duplication pass's cluster sizes, a quality filter's scores, class weights. A weight
of 0 is drawn only when the budget exceeds the samples of positive weight. The pruning benchmark builds its oracles
with it (weights read from labels or copy flags, which no real selector has)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ssl_emp.pruning.selectors.target_rates import TargetRateSelector


def read_prior(path: str, num_samples: int) -> torch.Tensor:
    """The weights in ``path``, checked: one finite, non-negative number per sample, not all zero."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(
            f"pruning.prior_file={path}: no such file (a .pt tensor or a text file of {num_samples} "
            "numbers, one per sample)"
        )
    try:
        if file.suffix == ".pt":
            weights = torch.as_tensor(torch.load(file, map_location="cpu", weights_only=True))
        else:
            weights = torch.tensor([float(v) for v in file.read_text().split()])
    except Exception as exc:  # any unreadable file gets the same one-line answer
        raise ValueError(f"pruning.prior_file={path} cannot be read as weights: {exc}") from None
    weights = weights.double().flatten()
    if weights.numel() != num_samples:
        raise ValueError(
            f"pruning.prior_file={path} holds {weights.numel()} weights; the data has {num_samples} samples"
            + (
                " (ssl-emp-audit's weights are one per readable image, as a run that loads the folder into memory "
                "reads it; a streamed run, data.in_memory=false, keeps a place for each unreadable file)"
                if weights.numel() < num_samples
                else ""
            )
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or not bool((weights > 0).any()):
        raise ValueError(f"pruning.prior_file={path}: weights must be finite, non-negative and not all zero")
    return weights


class PriorSelector(TargetRateSelector):
    reads = ("prior_file",)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._weights: Optional[torch.Tensor] = None

    def weights(self, table):
        if self.cfg.prior_file is None:
            raise ValueError("selector prior needs pruning.prior_file: the per-sample weights to follow")
        if self._weights is None:
            self._weights = read_prior(self.cfg.prior_file, table.num_samples)
        return self._weights, {}
