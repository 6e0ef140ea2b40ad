"""Dynamic data pruning in a PyTorch Lightning SimCLR module (how lightly's users train).

    .venv/bin/python examples/prune_lightning.py [--data fashion-mnist|digits] [--rate 0.5] [--epochs 6]

The module owns a ``Pruner``: its DataLoader takes ``pruner.batch_sampler(batch_size)``, each epoch's plan in
near-equal batches (Lightning calls ``set_epoch`` on it each epoch; ``use_distributed_sampler=False`` keeps
Lightning from swapping in its own, and the batch sampler shards across DDP ranks itself) and
``training_step`` returns ``pruner.step(...)``. A small callback logs what pruning saved.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from example_common import example_parser, simclr_views, small_backbone, torchvision_dataset
from lightly.models.modules import SimCLRProjectionHead
from prune_plain_pytorch import per_sample_ntxent
from torch.utils.data import DataLoader

from ssl_emp.pruning import Pruner, WithIndex


class PrunedSimCLR(pl.LightningModule):
    def __init__(self, dataset, epochs: int, rate: float, batch_size: int = 128, workers: int = 2):
        super().__init__()
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.backbone, feature_dim = small_backbone()
        self.head = SimCLRProjectionHead(feature_dim, 128, 32)
        self.pruner = Pruner(len(dataset), epochs, rate=rate)
        self.batches = self.pruner.batch_sampler(batch_size)

    def train_dataloader(self):
        # Rebuilt each epoch (reload_dataloaders_every_n_epochs=1) so that Lightning's batch count follows the
        # plan's size; the batch sampler, and with it the pruner's state, is the same object throughout.
        return DataLoader(WithIndex(self.dataset), batch_sampler=self.batches, num_workers=self.workers)

    def training_step(self, batch, batch_idx):
        indices, ((view0, view1), _) = batch
        per_sample = per_sample_ntxent(self.head(self.backbone(view0)), self.head(self.backbone(view1)))
        loss = self.pruner.step(indices, per_sample)
        self.log("train/loss", per_sample.mean(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class PruningReport(pl.Callback):
    """Each epoch: how many samples the plan trained and the rate achieved so far."""

    def on_train_epoch_end(self, trainer, module):
        pruner = module.pruner
        rate = pruner.achieved_rate(trainer.current_epoch + 1)
        module.log("pruning/achieved_rate", rate)
        if trainer.is_global_zero:
            print(
                f"epoch {trainer.current_epoch + 1}: {pruner.sample_forwards} sample-forwards so far, "
                f"achieved rate {rate:.3f}"
            )


def main(argv=None) -> float:
    args = example_parser(__doc__).parse_args(argv)
    pl.seed_everything(0, verbose=False)
    dataset = torchvision_dataset(args.data, args.root, simclr_views())
    try:
        module = PrunedSimCLR(dataset, args.epochs, args.rate, workers=args.workers)
    except ValueError as exc:  # a rate these epochs cannot reach: the reason and what would work, in one line
        sys.exit(f"error: {exc}")
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        devices=1,
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[PruningReport()],
    )
    trainer.fit(module)
    achieved = module.pruner.achieved_rate(args.epochs)
    print(f"achieved rate {achieved:.3f} (requested {args.rate})")
    return achieved


if __name__ == "__main__":
    main()
