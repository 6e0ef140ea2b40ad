"""Per-sample pruning state, kept on the training device and updated in bulk (no host sync per step)."""

from __future__ import annotations

import torch

UNSEEN_SCORE = float("inf")  # ranks first under every selector, so an unseen sample is trained on


class ScoreTable:
    """score, visit count, last epoch seen, and a ring buffer of the last ``history`` losses, per sample."""

    def __init__(self, num_samples: int, history: int = 5, device: torch.device | str = "cpu"):
        self.num_samples = num_samples
        self.scores = torch.full((num_samples,), UNSEEN_SCORE, device=device)
        self.visits = torch.zeros(num_samples, dtype=torch.long, device=device)
        self.last_epoch = torch.full((num_samples,), -1, dtype=torch.long, device=device)
        self.loss_history = torch.full((num_samples, history), float("nan"), device=device)

    def record(self, indices: torch.Tensor, losses: torch.Tensor, epoch: int) -> None:
        """Count a visit and push the loss into the sample's history. ``indices`` must be unique."""
        slot = self.visits[indices] % self.loss_history.shape[1]
        self.loss_history[indices, slot] = losses.detach().float()
        self.visits[indices] += 1
        self.last_epoch[indices] = epoch

    def last_loss(self, indices: torch.Tensor) -> torch.Tensor:
        """Each sample's loss at its most recent visit (NaN for a sample never visited)."""
        slot = (self.visits[indices] - 1).clamp_min(0) % self.loss_history.shape[1]
        return self.loss_history[indices, slot]

    def set_scores(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        self.scores[indices] = scores.detach().float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "scores": self.scores,
            "visits": self.visits,
            "last_epoch": self.last_epoch,
            "loss_history": self.loss_history,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["scores"].shape != self.scores.shape or state["loss_history"].shape != self.loss_history.shape:
            raise ValueError(
                f"Pruning state is for {state['scores'].shape[0]} samples and a history of "
                f"{state['loss_history'].shape[1]}; this run has {self.num_samples} and "
                f"{self.loss_history.shape[1]}."
            )
        for name, value in state.items():
            getattr(self, name).copy_(value)

    def to_cpu(self) -> "ScoreTable":
        copy = ScoreTable(self.num_samples, self.loss_history.shape[1], "cpu")
        copy.load_state_dict({k: v.cpu() for k, v in self.state_dict().items()})
        return copy
