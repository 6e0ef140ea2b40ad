"""Per-sample contrastive losses.

lightly's losses return the batch mean; pruning needs one loss per sample from
the same forward pass, so the NT-Xent computation is written out here and tested
to agree with ``lightly.loss.NTXentLoss`` on the mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import reduce

from ssl_emp.device import full_precision
from ssl_emp.pruning.sample_stats import prediction_entropy


def _ntxent_logits(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The [2B, 2B] float32 logits (self-similarity masked) and each row's positive column."""
    batch = z0.shape[0]
    with full_precision(z0.device):
        z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
        logits = (z @ z.T) / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return logits, positives


def per_sample(rows: torch.Tensor) -> torch.Tensor:
    """``[2B]`` anchor rows (view 0's B, then view 1's) -> ``[B]``: each sample's mean over its two rows."""
    return reduce(rows, "(views batch) -> batch", "mean", views=2)


def _row_stats(logits: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        entropy = prediction_entropy(logits)
        positive_prob = logits.detach().float().softmax(dim=1).gather(1, positives[:, None]).squeeze(1)
    return per_sample(entropy), per_sample(positive_prob)


def per_sample_ntxent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss of each of the B samples: the mean of its two anchor rows.

    Row ``i`` of view 0 has its positive at ``i`` of view 1 and the other 2B-2
    embeddings as negatives (self-similarity excluded), and symmetrically for
    view 1. The mean of the returned vector is lightly's ``NTXentLoss(z0, z1)``.
    """
    return per_sample_ntxent_with_stats(z0, z1, temperature)[0]


def per_sample_ntxent_with_stats(z0: torch.Tensor, z1: torch.Tensor, temperature: float):
    """``(loss [B], entropy [B], positive_prob [B])`` from one similarity matrix: the training hot path."""
    logits, positives = _ntxent_logits(z0, z1, temperature)
    row_loss = F.cross_entropy(logits, positives, reduction="none")
    return (per_sample(row_loss), *_row_stats(logits, positives))


def sample_embedding(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """Where a sample sits, detached: the normalised mean of its two views' normalised embeddings."""
    z0, z1 = F.normalize(z0.detach().float(), dim=1), F.normalize(z1.detach().float(), dim=1)
    return F.normalize(z0 + z1, dim=1)


def chance_loss(like: torch.Tensor, candidates: int) -> torch.Tensor:
    """``log(candidates)`` per sample, detached: the loss of a uniform guess among a row's candidates (the
    positive and the negatives), so losses from batches of different sizes can be compared above it."""
    return torch.full(like.shape, math.log(candidates), dtype=torch.float32, device=like.device)


def view_agreement(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each sample's two view embeddings, detached: a statistic, not a loss."""
    return F.cosine_similarity(z0.detach().float(), z1.detach().float(), dim=1)


def per_sample_infonce_with_stats(
    q0: torch.Tensor, q1: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, negatives: torch.Tensor, temperature: float
):
    """Symmetric MoCo InfoNCE per sample: ``(loss [B], entropy [B], positive_prob [B])``.

    Query ``q0_i`` has its positive in key ``k1_i`` and the ``negatives`` [K, D] (the queue) as negatives;
    symmetrically ``q1_i`` with ``k0_i``. A sample's loss is the mean of its two rows, so the batch mean is
    ``0.5 * (InfoNCE(q0, k1) + InfoNCE(q1, k0))``, lightly's ``NTXentLoss(memory_bank_size=K)`` on each pair.
    Keys and negatives carry no gradient.
    """
    batch = q0.shape[0]
    with full_precision(q0.device):
        q = F.normalize(torch.cat([q0, q1]).float(), dim=1)
        k = F.normalize(torch.cat([k1, k0]).float(), dim=1).detach()
        negatives = F.normalize(negatives.detach().float(), dim=1)
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1) / temperature
    positives = torch.zeros(2 * batch, dtype=torch.long, device=q.device)  # column 0 holds the positive
    row_loss = F.cross_entropy(logits, positives, reduction="none")
    return (per_sample(row_loss), *_row_stats(logits, positives))


def per_sample_negative_cosine(p0: torch.Tensor, p1: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """BYOL's loss per sample: each view's prediction against the other view's target, ``-cos(p0, t1)`` and
    ``-cos(p1, t0)``, averaged. The batch mean is ``0.5 * (NegativeCosineSimilarity(p0, t1) +
    NegativeCosineSimilarity(p1, t0))``, lightly's BYOL loss. Targets carry no gradient."""
    with full_precision(p0.device):
        forward = F.cosine_similarity(p0.float(), t1.detach().float(), dim=1)
        backward = F.cosine_similarity(p1.float(), t0.detach().float(), dim=1)
    return -0.5 * (forward + backward)


def per_sample_dino_with_entropy(
    teacher_out: list[torch.Tensor],
    student_out: list[torch.Tensor],
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO's cross-entropy per sample, ``(loss [B], entropy [B])``: each of the sample's student views against
    each teacher view but its own (teacher views are the first student views), averaged over those pairs. The
    batch mean is ``lightly.loss.DINOLoss`` with this ``center``; the center is not updated here. ``entropy``
    is that of the student's softmax, averaged over its views."""
    with full_precision(student_out[0].device):
        targets = ((torch.stack(teacher_out).detach().float() - center.float()) / teacher_temp).softmax(dim=-1)
        logits = torch.stack(student_out).float() / student_temp
        # [teacher views, student views, batch]: each pair's cross-entropy, per sample
        pairs = -torch.einsum("tbk,sbk->tsb", targets, logits.log_softmax(dim=-1))
    teachers, students = pairs.shape[:2]
    own = torch.eye(teachers, students, dtype=torch.bool, device=pairs.device)
    loss = pairs.masked_fill(own[..., None], 0.0).sum(dim=(0, 1)) / (teachers * students - min(teachers, students))
    entropy = reduce(prediction_entropy(logits.flatten(0, 1)), "(views batch) -> batch", "mean", views=len(student_out))
    return loss, entropy
