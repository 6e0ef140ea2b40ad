"""The pruning engine as the training loop sees it: a plan per epoch, an observation per step.

**Pruning rate means one thing**: the fraction of sample-forwards skipped over the whole run. Full-data
epochs (the first ``warmup_epochs``, the last ``ceil(anneal * epochs)``) skip nothing, so the pruned epochs
skip ``rate * epochs / pruned_epochs`` each, and the run as a whole skips ``rate``. Where the annealing
window leaves too few pruned epochs for the rate, it is shortened (see :mod:`ssl_emp.pruning.schedule`);
:meth:`Pruner.max_rate` and :meth:`Pruner.min_epochs` say up front what a run can reach.

The one exception is InfoBatch's **published rule** (``selector=infobatch`` with ``infobatch_r`` set): it
drops below-mean samples with probability r and skips whatever that comes to. It has no target rate; the
achieved one is reported.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch
import torch.distributed as dist

from ssl_emp.pruning.clustering import plan_digest
from ssl_emp.pruning.embeddings import EmbeddingMemory
from ssl_emp.pruning.plan import EpochPlan
from ssl_emp.pruning.sample_stats import SampleStats
from ssl_emp.pruning.schedule import anneal_length, annealed_epochs, max_rate, min_epochs, unreachable
from ssl_emp.pruning.scorers import SCORERS
from ssl_emp.pruning.selectors import SELECTORS
from ssl_emp.pruning.selectors.base import budget
from ssl_emp.pruning.settings import PruningSettings, prunes
from ssl_emp.pruning.stats import achieved_rate, gini, score_quantiles, spearman, visit_histogram
from ssl_emp.pruning.table import ScoreTable


class Pruner:
    """Plans each epoch and records each step, for ``num_samples`` samples over ``epochs`` epochs.

    ``Pruner(len(dataset), epochs, rate=0.7)`` prunes with the recommended method; name ``scorer`` and
    ``selector`` (and any of :class:`PruningSettings`' fields) to choose another. In a loop:
    ``batch_sampler(batch_size)`` gives the DataLoader each epoch's plan in near-equal batches and
    ``step(indices, per_sample_loss)`` records a step and returns the loss to back-propagate. A loop that
    batches plans itself calls ``plan(epoch)`` and ``observe(indices, stats, epoch)`` instead (our trainer
    does: it shards global batches unevenly).
    """

    def __init__(
        self,
        num_samples: int,
        epochs: int,
        *,
        rate: float = 0.0,
        scorer: Optional[str] = None,
        selector: Optional[str] = None,
        seed: int = 0,
        device: Union[torch.device, str] = "cpu",
        **settings,
    ):
        if num_samples < 1 or epochs < 1:
            raise ValueError(f"Pruner needs num_samples >= 1 and epochs >= 1 (got {num_samples}, {epochs}).")
        self.cfg = PruningSettings.from_kwargs(rate, scorer, selector, **settings)
        cfg = self.cfg
        self.num_samples = num_samples
        self.epochs = epochs
        self.seed = seed
        self.table = ScoreTable(num_samples, cfg.history, device)
        self.scorer = SCORERS[cfg.scorer](cfg)
        self.selector = SELECTORS[cfg.selector](cfg)
        # Where each sample sits, for the selectors that read it; the training loop fills it (set_embeddings).
        self.embeddings = EmbeddingMemory(num_samples, seed, device) if self.selector.needs_embeddings else None
        self.selector.memory = self.embeddings
        self.published_rule = cfg.selector == "infobatch" and cfg.infobatch_r is not None
        asked = annealed_epochs(cfg.anneal, epochs)
        targets_rate = self.active and not self.published_rule
        annealed = anneal_length(cfg.rate, epochs, cfg.warmup_epochs, cfg.anneal) if targets_rate else asked
        self.first_annealed_epoch = epochs - annealed
        self.pruned_epochs = max(0, self.first_annealed_epoch - min(cfg.warmup_epochs, epochs))
        self.epoch_rate = self._epoch_rate()
        # Said where it happens: the settings asked for more full-data epochs at the end than the run gets.
        self.schedule_note = (
            None
            if annealed == asked
            else (
                f"the full-data annealing epochs are shortened from {asked} to {annealed} "
                f"(anneal={cfg.anneal}) so that rate={cfg.rate} can be reached in {epochs} epochs"
            )
        )
        if self.schedule_note:
            warnings.warn(self.schedule_note, stacklevel=2)
        self.epoch = 0  # the epoch of the latest plan: step() records into it and weights by it
        self.sample_forwards = 0  # samples observed so far (all ranks')
        self._weights = torch.ones(num_samples, device=device)  # the latest plan's loss weight per sample

    @property
    def active(self) -> bool:
        return prunes(self.cfg)

    @property
    def requested_rate(self) -> Optional[float]:
        """The run-level rate asked for; None under the published InfoBatch rule, which sets no target."""
        return None if self.published_rule else self.cfg.rate

    def _epoch_rate(self) -> float:
        if not self.active or self.published_rule:
            return 0.0
        if self.pruned_epochs == 0 or self.cfg.rate * self.epochs / self.pruned_epochs >= 1.0:
            raise ValueError(unreachable(self.cfg.rate, self.epochs, self.cfg.warmup_epochs))
        return self.cfg.rate * self.epochs / self.pruned_epochs

    @staticmethod
    def max_rate(epochs: int, warmup_epochs: int = PruningSettings.warmup_epochs) -> float:
        """The highest rate (to 3 decimals) a run of ``epochs`` epochs can reach; it never falls as epochs are
        added. (InfoBatch's published rule sets no rate and is not bound by it.)"""
        return max_rate(epochs, warmup_epochs)

    @staticmethod
    def min_epochs(rate: float, warmup_epochs: int = PruningSettings.warmup_epochs) -> int:
        """The fewest epochs in which ``rate`` can be reached; every longer run reaches it too."""
        return min_epochs(rate, warmup_epochs)

    def largest_batch(self) -> Optional[int]:
        """The largest batch this run takes: what ``(1 - rate)`` of the data leaves per epoch, the user's notion of
        what is left (pruned epochs keep a little less, making up for the full warm-up and annealing epochs; there
        the batch is at most one epoch). None where the rate bounds no batch: no pruning, or InfoBatch's published
        rule, whose pruned epochs' sizes are a matter of chance."""
        if self.active and not self.published_rule:
            return budget(self.num_samples, self.cfg.rate)
        return None

    def smallest_epoch(self) -> Optional[int]:
        """The fewest samples a pruned epoch keeps (None where :meth:`largest_batch` is None, or no epoch is
        pruned): a batch no larger keeps one size through the full-data and pruned epochs alike."""
        if self.largest_batch() is None:
            return None
        sizes = [self.planned_size(e) for e in range(self.epochs) if self.is_pruned_epoch(e)]
        return min(sizes) if sizes else None

    @staticmethod
    def max_rate_for_batch(num_samples: int, batch_size: int) -> float:
        """The highest rate (to 3 decimals) whose epochs leave at least ``batch_size`` of ``num_samples``; 0 where
        none does."""
        highest = min(999, math.floor(1000 * (num_samples - batch_size) / num_samples) + 2)
        while highest > 0 and budget(num_samples, highest / 1000) < batch_size:
            highest -= 1
        return max(0, highest) / 1000

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a batch larger than :meth:`largest_batch`, for a caller whose batch must stay as it is (a
        benchmark's); a run built from settings shrinks it instead."""
        kept = self.largest_batch()
        if kept is not None and batch_size > kept:
            raise ValueError(
                f"a batch of {batch_size} is larger than the {kept} samples left per epoch at rate "
                f"{self.cfg.rate} ({self.num_samples} samples); lower the batch size, or the rate to at "
                f"most {self.max_rate_for_batch(self.num_samples, batch_size)} for this batch."
            )

    def describe_schedule(self) -> Optional[str]:
        """What each epoch of the run keeps, in words (None where nothing is pruned, or under InfoBatch's published
        rule, whose epochs' sizes are a matter of chance): the run-level rate is reached by pruned epochs that skip
        more than it, around the full-data warm-up and annealing epochs."""
        if not self.active or self.published_rule:
            return None
        n, first, last = self.num_samples, min(self.cfg.warmup_epochs, self.epochs), self.first_annealed_epoch
        kept = budget(n, self.epoch_rate)

        def span(start: int, end: int) -> tuple[str, str]:  # 1-based epochs, and the verb's ending
            return (f"epochs {start}-{end}", "") if end > start else (f"epoch {end}", "s")

        parts = []
        if first:
            where, s = span(1, first)
            parts.append(f"{where} train{s} on all {n} samples (warm-up)")
        if last > first:
            where, s = span(first + 1, last)
            parts.append(f"{where} keep{s} about {kept} of {n} each (skipping {self.epoch_rate:.3f})")
        if self.epochs > last:
            where, s = span(last + 1, self.epochs)
            parts.append(f"{where} train{s} on all {n} (annealing)")
        return f"pruning.rate={self.cfg.rate} over the run: " + "; ".join(parts)

    def is_pruned_epoch(self, epoch: int) -> bool:
        return self.active and self.cfg.warmup_epochs <= epoch < self.first_annealed_epoch

    def skip_fraction(self, epoch: int) -> float:
        """The fraction a pruned epoch skips: ``epoch_rate``, rounded to whole samples so that the rounding
        never accumulates (after k pruned epochs, ``round(k * epoch_rate * N)`` samples were skipped)."""
        k = epoch - self.cfg.warmup_epochs + 1
        n = self.num_samples
        return (round(k * self.epoch_rate * n) - round((k - 1) * self.epoch_rate * n)) / n

    def planned_size(self, epoch: int) -> Optional[int]:
        """How many samples ``plan(epoch)`` will hold, without building it; None where that is a matter of
        chance (a pruned epoch under InfoBatch's published rule)."""
        if not self.is_pruned_epoch(epoch):
            return self.num_samples
        return None if self.published_rule else budget(self.num_samples, self.skip_fraction(epoch))

    def planned_forwards(self) -> Optional[int]:
        """The sample-forwards the whole run plans (the sum of :meth:`planned_size` over its epochs); None under
        InfoBatch's published rule, whose pruned epochs' sizes are a matter of chance."""
        sizes = [self.planned_size(epoch) for epoch in range(self.epochs)]
        return None if None in sizes else sum(sizes)

    def needs_embeddings(self, epoch: int) -> bool:
        """Whether the loop must give :meth:`set_embeddings` every sample's clean-image embedding before planning
        ``epoch``: for a selector that reads them, before its first pruned epoch and every ``embed_every`` epochs
        after."""
        if self.embeddings is None or not self.is_pruned_epoch(epoch):
            return False
        every = self.cfg.embed_every
        return not self.embeddings.ready or (every > 0 and epoch - self.embeddings.epoch >= every)

    def set_embeddings(self, indices: torch.Tensor, embeddings: torch.Tensor, epoch: int, shard: bool = False) -> None:
        """Store the embeddings [B, d] of the samples at ``indices`` (features of their un-augmented images, e.g.
        the backbone's in eval mode), made for ``epoch``'s plan; they count as ``embedding_forwards``.

        Under torch.distributed, ``shard=True`` says that each rank gives its own share, the shares covering every
        sample once: each rank then holds only its rows, and the clustering runs across the ranks."""
        if self.embeddings is None:
            raise ValueError(f"selector {self.cfg.selector} reads no embeddings")
        self.embeddings.store(indices, embeddings, epoch, shard=shard)

    @property
    def embedding_forwards(self) -> int:
        """Forwards of clean images spent on the embedding memory: compute beyond the training forwards."""
        return 0 if self.embeddings is None else self.embeddings.forwards

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan, shuffled, which becomes the current one: ``weights`` and ``step`` read it. The plan
        is a function of (seed, epoch, table) only, so a resumed run rebuilds it."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.is_pruned_epoch(epoch) and self.embeddings is not None and not self.embeddings.ready:
            raise ValueError(
                f"selector {self.cfg.selector} plans from every sample's embedding, and epoch {epoch} "
                f"has none: call pruner.set_embeddings(indices, features, epoch) for all "
                f"{self.num_samples} samples when pruner.needs_embeddings(epoch) says so"
            )
        if self.is_pruned_epoch(epoch):
            table = self.table.to_cpu()
            keep = None if self.published_rule else 1.0 - self.skip_fraction(epoch)
            table.scores = self.scorer.selection_scores(table, epoch, keep)
            plan = self.selector.select(table, self.skip_fraction(epoch), generator)
            _check_ranks_agree(plan, epoch)
        else:
            plan = EpochPlan(torch.arange(self.num_samples))
        return self.use_plan(epoch, plan.shuffled(generator))

    def use_plan(self, epoch: int, plan: EpochPlan) -> EpochPlan:
        """Make ``plan`` epoch ``epoch``'s current plan (:meth:`plan` does; a run resumed within an epoch passes
        the plan it saved, as the table it was built from has changed since)."""
        self.epoch = epoch
        self._weights.fill_(1.0)
        if plan.weights is not None:
            self._weights[plan.indices.to(self._weights.device)] = plan.weights.to(self._weights.device)
        return plan

    def sampler(self, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        """A DataLoader sampler yielding each epoch's plan (this rank's share of it under DDP)."""
        from ssl_emp.pruning.sampler import PrunedSampler

        return PrunedSampler(self, num_replicas, rank)

    def batch_sampler(self, batch_size: int, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        """A DataLoader ``batch_sampler`` yielding each epoch's plan (this rank's share under DDP) as near-equal
        batches of about ``batch_size`` each (per rank), as our trainer cuts its epochs: no small tail batch."""
        from ssl_emp.pruning.sampler import PrunedBatchSampler

        return PrunedBatchSampler(self, batch_size, num_replicas, rank)

    def observe(self, indices: torch.Tensor, stats: SampleStats, epoch: int) -> None:
        """Record one step's per-sample statistics; everything stays on the device.

        The scorer runs first, so it sees each sample's previous visit (memory terms measure what changed).
        ``indices`` must be unique.
        """
        scores = self.scorer(stats, self.table, indices, epoch)
        self.table.record(indices, stats.loss, epoch)
        self.table.set_scores(indices, scores)
        self.sample_forwards += indices.numel()

    def weights(self, indices: torch.Tensor) -> torch.Tensor:
        """The current plan's loss weight of each sample at ``indices`` (1 unless the selector reweights)."""
        return self._weights[indices.to(self._weights.device, non_blocking=True)]

    def step(self, indices: torch.Tensor, stats: Union[torch.Tensor, SampleStats]) -> torch.Tensor:
        """Record a step of the current epoch's plan and return the loss to back-propagate:
        ``mean(weight_i * loss_i)``, with the plan's weights (InfoBatch's 1/(1-r) keeps the loss unbiased).

        ``stats`` is the per-sample loss [B] (with its graph) or a :class:`SampleStats` for scorers that read
        more. Under torch.distributed every rank's indices and statistics are gathered first, so all ranks
        keep the same table and build the same plans; ranks must then step with equal batch sizes (as the
        :meth:`sampler` gives them).
        """
        if isinstance(stats, torch.Tensor):
            stats = SampleStats(stats)
        indices = indices.to(self._weights.device, non_blocking=True)
        loss = stats.training_loss(self.weights(indices))
        everyone, everyone_stats = _gather_ranks(indices, stats)
        self.observe(everyone, everyone_stats, self.epoch)
        return loss

    def achieved_rate(self, epochs_done: Optional[int] = None) -> float:
        """The fraction of sample-forwards skipped so far (over ``epochs_done``, default the epochs planned)."""
        epochs_done = self.epoch + 1 if epochs_done is None else epochs_done
        return achieved_rate(self.sample_forwards, epochs_done * self.num_samples)

    def describe_budget(self, epochs_done: int) -> Optional[str]:
        """Who got the pruned epochs' forwards, in one line (None where no epoch was pruned): the share of samples
        never kept, the most-kept tenth's share, and, where the selector's last refresh computed them, the
        near-copies' and the rarest clusters' shares beside their shares of the pool (nothing is clustered
        anew). It takes every full-data epoch to have visited each sample once; a sample left out as unreadable
        counts as never kept."""
        pruned = sum(self.is_pruned_epoch(e) for e in range(epochs_done))
        if not pruned:
            return None
        # Full-data epochs visit every sample once; what is left is the pruned epochs' choice.
        kept = (self.table.visits.cpu() - (epochs_done - pruned)).clamp_min(0).double()
        total = float(kept.sum())
        if total == 0:
            return None
        n = self.num_samples
        parts = [
            f"{float((kept == 0).double().mean()):.0%} of the {n} samples never kept in the {pruned} pruned epochs",
            f"the most-kept tenth took {float(kept.sort(descending=True).values[: max(1, n // 10)].sum()) / total:.0%}"
            " of their forwards",
        ]
        clustering, counts = (
            self.embeddings.computed(self.cfg.coverage_threshold, self.cfg.clusters)
            if self.embeddings is not None
            else (None, None)
        )
        if counts is not None:  # the threshold density's near-copy counts, as the plans used them
            copies = counts.cpu() > 1
            parts.append(
                f"samples with a near-copy (cosine {self.cfg.coverage_threshold}) {float(copies.double().mean()):.0%}"
                f" of the pool, {float(kept[copies].sum()) / total:.0%} of the forwards"
            )
        if clustering is not None:
            sizes = torch.bincount(clustering.assignment.cpu(), minlength=clustering.count)
            rarest = sizes.argsort()[: max(1, clustering.count // 10)]
            members = torch.isin(clustering.assignment.cpu(), rarest)
            parts.append(
                f"the rarest tenth of {clustering.count} clusters {float(members.double().mean()):.0%} of the pool, "
                f"{float(kept[members].sum()) / total:.0%} of the forwards"
            )
        return "; ".join(parts)

    def memory_spearman(self, epoch: int) -> Optional[float]:
        """Spearman rank correlation of the EMP memory term with the loss, over the samples visited in
        ``epoch``: near 1 means the term only repeats the loss."""
        memory = getattr(self.scorer, "last_memory", None)
        if memory is None:
            return None
        visited = (self.table.last_epoch == epoch) & ~memory.isnan()
        loss = self.table.last_loss(torch.arange(self.num_samples, device=memory.device))
        return spearman(loss[visited].cpu(), memory[visited].cpu())

    def epoch_metrics(self, plan: EpochPlan, epochs_done: int, sample_forwards: int, unreadable_skips: int = 0) -> dict:
        """Rate requested vs achieved, visit evenness and score spread; one host sync per epoch. The achieved rate
        is what the plans skipped: ``unreadable_skips``, planned samples whose files could not be read, are not
        pruning."""
        full_forwards = epochs_done * self.num_samples
        visits = self.table.visits.cpu()
        metrics = {
            "pruning/requested_rate": self.requested_rate,
            "pruning/achieved_rate": achieved_rate(sample_forwards + unreadable_skips, full_forwards),
            "pruning/epoch_kept": len(plan),
            "pruning/epoch_kept_fraction": len(plan) / self.num_samples,
            "pruning/sample_forwards": sample_forwards,
            "pruning/full_data_forwards": full_forwards,
            "pruning/visits_gini": gini(visits),
            "pruning/visits_min": int(visits.min()),
            "pruning/visits_max": int(visits.max()),
            "pruning/never_seen": int((visits == 0).sum()),
            "pruning/visit_histogram": visit_histogram(visits),
        }
        if self.embeddings is not None:
            metrics["pruning/embedding_forwards"] = self.embedding_forwards
        rho = self.memory_spearman(epochs_done - 1)
        if rho is not None:
            metrics["pruning/memory_spearman"] = rho
        metrics.update({f"pruning/{k}": v for k, v in plan.info.items()})
        metrics.update({f"pruning/score_{k}": v for k, v in score_quantiles(self.table.scores).items()})
        return metrics

    def state_dict(self) -> dict:
        state = {
            "table": self.table.state_dict(),
            "scorer": self.scorer.state_dict(),
            "selector": self.selector.state_dict(),
            "sample_forwards": self.sample_forwards,
        }
        if self.embeddings is not None:
            state["embeddings"] = self.embeddings.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.table.load_state_dict(state["table"])
        self.scorer.load_state_dict(state.get("scorer", {}))
        self.selector.load_state_dict(state.get("selector", {}))
        if self.embeddings is not None and "embeddings" in state:
            self.embeddings.load_state_dict(state["embeddings"])
        self.sample_forwards = state.get("sample_forwards", 0)


class PlanMismatchError(RuntimeError):
    """Ranks built different plans for one epoch: their score tables or embedding statistics differ."""


def _check_ranks_agree(plan: EpochPlan, epoch: int) -> None:
    """Under torch.distributed, every rank compares its plan's digest with the others' (one all-gather of one
    number per pruned epoch) and stops the run if they differ: training on different plans would silently skip
    or repeat samples."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mine = torch.tensor([plan_digest(plan.indices, plan.weights)], dtype=torch.long, device=device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    differ = [rank for rank, digest in enumerate(every) if int(digest) != int(every[0])]
    if differ:
        raise PlanMismatchError(
            f"rank {differ[0]}'s plan for epoch {epoch} differs from rank 0's (digest "
            f"{int(every[differ[0]])} against {int(every[0])}): the ranks' score tables or "
            "embedding statistics diverged; rerun with the same settings on every rank, or "
            "report it with this line"
        )


def _gather_ranks(indices: torch.Tensor, stats: SampleStats) -> tuple[torch.Tensor, SampleStats]:
    """Every rank's indices and (detached) statistics, ranks stepping with equal batch sizes; these alone
    outside torch.distributed (``observe`` detaches what it keeps)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return indices, stats

    def gathered(t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    return gathered(indices), stats.from_block(gathered(stats.to_block()))
