"""From a :class:`~ssl_emp.config.PretrainConfig` to ready parts, in one place, and :func:`pretrain`, which
builds them and runs (or resumes) a run.

Settings live at the edge: this module is the only one below the command lines that reads a config. Every
part it makes takes plain keyword arguments and can be built by hand instead::

    backbone, feature_dim = build_backbone("small_cnn", in_channels=1, width=16)
    model = SimCLR(backbone, feature_dim, proj_dim=64, temperature=0.2)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssl_emp.checkpoint import load_checkpoint
from ssl_emp.config import PretrainConfig
from ssl_emp.data import (
    ImageBank,
    ImageFolderStream,
    default_image_size,
    fit_batch_size,
    has_held_out_split,
    image_folder,
    load_bank,
)
from ssl_emp.data.augment import Normalize, TwoViews, default_local_size
from ssl_emp.data.datasets import subset_indices
from ssl_emp.device import resolve_device
from ssl_emp.distributed import DistContext, init_distributed
from ssl_emp.engine.monitor import KNNMonitor, LabelFreeMonitor, Monitors
from ssl_emp.engine.optim import CosineRamp, WarmupCosine, build_optimizer
from ssl_emp.engine.parts import RunSettings, Schedules, TrainParts
from ssl_emp.engine.run_dir import check_resume_compatible, check_resume_epochs, prepare_run_dir
from ssl_emp.engine.run_report import PretrainResult, last_epoch_loss, run_result
from ssl_emp.engine.run_state import files_digest
from ssl_emp.engine.trainer import Pretrainer
from ssl_emp.evaluation import load_eval_banks
from ssl_emp.methods import settings as method_settings
from ssl_emp.methods.base import SelfSupervisedMethod, ddp_ignored_buffer_names
from ssl_emp.models import build_backbone
from ssl_emp.pruning import Pruner
from ssl_emp.tracking import NullTracker, Tracker

Source = Union[ImageBank, ImageFolderStream]


def build_source(cfg: PretrainConfig, device: torch.device) -> Source:
    """The training images: a uint8 bank in memory, or (``data.in_memory=false``) a folder streamed from disk."""
    data = cfg.data
    if not data.in_memory:
        return ImageFolderStream(
            data.root,
            data.image_size,
            data.subset,
            data.skip_unreadable,
            workers=data.workers,
            pin_memory=device.type == "cuda",
        )
    return load_bank(data.name, data.root, "train", data.image_size, data.subset, data.skip_unreadable)


UNREADABLE_LIST = "unreadable_files.txt"


def unreadable_files(source: Source) -> list[tuple[str, str]]:
    """``(path, reason)`` of the image files the run left out as unreadable: a bank's, found at load; a streamed
    folder's, found so far on every rank (collective under DDP: every rank calls it)."""
    if isinstance(source, ImageFolderStream):
        return source.unreadable_files()
    return list(getattr(source, "unreadable", []))


def list_unreadable(files: list[tuple[str, str]], run_dir: Path) -> int:
    """Add ``files`` to ``run_dir/unreadable_files.txt`` (one ``path<TAB>reason`` a line, earlier sittings' kept);
    returns how many the list holds."""
    path = run_dir / UNREADABLE_LIST
    lines = path.read_text().splitlines() if path.is_file() else []
    listed = dict(line.split("\t", 1) for line in lines if "\t" in line)
    listed.update(files)
    if listed:
        path.write_text("".join(f"{name}\t{reason}\n" for name, reason in sorted(listed.items())))
    return len(listed)


def build_method(cfg: PretrainConfig, in_channels: int, image_size: Optional[int] = None) -> SelfSupervisedMethod:
    """The method named by ``method.name`` on the backbone named by ``model.backbone`` for images of
    ``image_size`` px (default ``data.image_size``); each method takes the settings its constructor names."""
    m = cfg.model
    image_size = image_size or cfg.data.image_size
    backbone, feature_dim = build_backbone(
        m.backbone,
        in_channels,
        m.cifar_stem,
        m.width,
        image_size=image_size,
        timm_kwargs=m.timm_kwargs,
        pretrained_file=m.pretrained_file,
    )
    takes_local = cfg.method.name in method_settings.inputs_readers("local_crops")
    if takes_local and cfg.augment.local_crops and image_size is not None:
        check_takes_size(backbone, in_channels, cfg.augment.local_crop_size or default_local_size(image_size))
    settings = method_settings.method_kwargs(cfg.method.name, cfg.method.model_dump(), cfg.train.epochs)
    method = method_settings.method_class(cfg.method.name)
    return method(backbone, feature_dim, proj_hidden_dim=m.proj_hidden_dim, proj_dim=m.proj_output_dim, **settings)


def check_takes_size(backbone: nn.Module, in_channels: int, size: int) -> None:
    """One line, not a traceback mid-run, when the backbone cannot take DINO's local crops."""
    training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(2, in_channels, size, size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(
            f"augment.local_crops: the backbone cannot take {size} px local crops ({reason}); for a "
            f"timm ViT set model.timm_kwargs.dynamic_img_size=true"
        ) from None
    finally:
        backbone.train(training)


def build_schedule(cfg: PretrainConfig) -> WarmupCosine:
    """The learning rate over the run's epochs; the trainer walks it by the fraction of planned compute done."""
    optim = cfg.optim
    return WarmupCosine(optim.lr, cfg.train.epochs, optim.warmup_epochs, optim.min_lr_fraction)


def build_weight_decay_schedule(cfg: PretrainConfig) -> Optional[CosineRamp]:
    """The weight decay over the run (``optim.weight_decay_end``), walked like the learning rate; None: constant."""
    optim = cfg.optim
    if optim.weight_decay_end is None:
        return None
    return CosineRamp(optim.weight_decay, optim.weight_decay_end, cfg.train.epochs)


def build_pruner(cfg: PretrainConfig, num_samples: int, device: torch.device) -> Pruner:
    """The run's pruner; a shortened annealing window is not a Python warning here: build_trainer prints it once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Pruner(num_samples, cfg.train.epochs, seed=cfg.train.seed, device=device, **cfg.pruning.model_dump())


def build_monitor(
    cfg: PretrainConfig, source: Source, views: nn.Module, mean: list[float], std: list[float], device: torch.device
) -> Optional[Monitors]:
    """The kNN monitor where ``monitor.every`` is set (and the data has labels), beside the label-free one where
    ``monitor.label_free_every`` (by default the same) is; None where neither is."""
    monitor, found = cfg.monitor, []
    if monitor.every:
        train, test, _ = load_eval_banks(
            cfg.data.model_dump(),
            {"image_size": source.image_size},
            train_subset=monitor.train_subset,
            test_subset=monitor.test_subset,
        )
        found.append(
            KNNMonitor(
                train,
                test,
                Normalize(mean, std),
                device,
                every=monitor.every,
                k=monitor.k,
                temperature=monitor.temperature,
            )
        )
    label_free_every = monitor.every if monitor.label_free_every is None else monitor.label_free_every
    if label_free_every:
        picked = subset_indices(len(source), monitor.label_free_images)
        read = [images for _, images in source.batches([picked.to(source.device)])]
        sample = ImageBank(torch.cat(read).cpu(), torch.full((len(torch.cat(read)),), -1), 0, "monitor sample")
        found.append(LabelFreeMonitor(sample, views, Normalize(mean, std), device, every=label_free_every))
    return Monitors(found) if found else None


def build_tracker(
    cfg: PretrainConfig, run_dir: Path, run_id: Optional[str] = None, rewind_to_step: Optional[int] = None
) -> Tracker:
    return Tracker(
        run_dir,
        mode=cfg.tracking.wandb,
        project=cfg.tracking.project,
        entity=cfg.tracking.entity,
        name=run_dir.name,
        config=cfg.model_dump(),
        job_type="pretrain",
        group=run_dir.name,
        run_id=run_id,
        images_every=cfg.tracking.images_every,
        rewind_to_step=rewind_to_step,
    )


# The smallest batch a run shrinks a batch to by itself. Every method learns from the other samples of a batch:
# SimCLR scores each view against the 2B - 2 other views (at 32, 62 negatives), and the BatchNorm layers (and
# DINO's center) take their statistics over it. Below it the user chooses the batch (train.batch_size), not the run.
SMALLEST_FITTED_BATCH = 32


def fit_image_size(cfg: PretrainConfig, say=print) -> PretrainConfig:
    """``cfg`` with an image folder's ``data.image_size``, when not set, read from its images
    (:func:`~ssl_emp.data.default_image_size`); ``say`` prints the choice as a one-line note."""
    data = cfg.data
    if data.name != "imagefolder" or data.image_size is not None:
        return cfg
    size, why = default_image_size(image_folder(data.root, "train"))
    say(f"note: data.image_size not set; using {size}: {why}")
    fitted = cfg.model_copy(deep=True)
    fitted.data.image_size = size
    return fitted


def fit_monitor(cfg: PretrainConfig, num_classes: int, say=print) -> PretrainConfig:
    """``cfg`` with the online monitor off where it has nothing labelled to classify (``num_classes``: the training
    images', 0 without labels), and a one-line note that says so: a recipe's monitor is not a reason to refuse a
    folder of photos."""
    data = cfg.data
    if not cfg.monitor.every:
        return cfg
    if num_classes == 0:
        why = "the training images have no labels"
    elif data.name == "imagefolder" and not has_held_out_split(data.root):
        why = "the image folder has no val/ or test/ split for it to classify"
    else:
        return cfg
    say(
        f"note: monitor.every={cfg.monitor.every} is off: the online kNN monitor needs labelled images, and {why} "
        "(a labelled folder holds train/<class>/ and val/<class>/)"
    )
    fitted = cfg.model_copy(deep=True)
    if fitted.monitor.label_free_every is None:  # the label-free checks need no labels: they keep the schedule
        fitted.monitor.label_free_every = fitted.monitor.every
    fitted.monitor.every = 0
    return fitted


def fit_batch_to_pruning(batch_size: int, pruner: Pruner, world_size: int = 1) -> tuple[int, str]:
    """``batch_size`` and a one-line note (empty when there is nothing to say). Where the batch is larger than what
    the pruning rate leaves per epoch (:meth:`~ssl_emp.pruning.Pruner.largest_batch`), it becomes what the
    smallest pruned epoch keeps, and every epoch, full-data ones too, trains with batches of that one size, so
    the loss keeps one scale (a contrastive loss grows with the batch: chance is log(2B - 1) for SimCLR). Where
    the batch is kept but pruned epochs keep fewer samples than it, the note says the loss will step there. A
    batch it would shrink below :data:`SMALLEST_FITTED_BATCH` (or 2 per rank) is refused, naming the rate that
    leaves enough."""
    left = pruner.largest_batch()
    if left is None:
        return batch_size, ""
    rate, n = pruner.cfg.rate, pruner.num_samples
    if batch_size <= left:
        fewest = pruner.smallest_epoch()
        if fewest is None or batch_size <= fewest:
            return batch_size, ""
        return batch_size, (
            f"note: the pruned epochs keep as few as {fewest} of {n} samples (pruning.rate={rate} over the run), "
            f"fewer than train.batch_size {batch_size}, so each trains in one batch of that size. A smaller batch has "
            "fewer negatives and a lower contrastive loss: the epoch loss steps down where pruning starts and up "
            "where it ends. Compare losses within one kind of epoch, or give a smaller train.batch_size"
        )
    smallest = max(SMALLEST_FITTED_BATCH, 2 * world_size)
    if left < smallest:
        highest = Pruner.max_rate_for_batch(n, smallest)
        fix = f"pruning.rate at most {highest}" if highest > 0 else "no pruning"
        raise ValueError(
            f"train.batch_size={batch_size}: pruning.rate={rate} leaves {left} of the {n} samples per "
            f"epoch, fewer than {smallest}, the smallest batch a run shrinks to by itself (methods learn "
            f"from a batch's other samples: negatives, BatchNorm statistics). Use {fix}, or give "
            f"train.batch_size={pruner.smallest_epoch() or left} or less to train with so small a batch."
        )
    fitted = max(pruner.smallest_epoch() or left, smallest)
    return fitted, (
        f"note: train.batch_size {batch_size} is more than the {left} samples pruning.rate={rate} leaves "
        f"per epoch on average (of {n}); using {fitted}, what the smallest pruned epoch keeps, in every epoch, "
        "so that the loss keeps one scale (what each epoch keeps: the pruning note below)"
    )


def check_fits_the_data(cfg: PretrainConfig, num_images: int, world_size: int, batch_size: int) -> None:
    """Settings valid one by one that make no sense for this dataset (``batch_size``: the batch it allows)."""
    if batch_size < 2 * world_size:
        raise ValueError(
            f"train.batch_size={batch_size} is the global batch; with "
            f"{world_size} processes each needs at least 2 samples."
        )
    why = method_settings.check_data(cfg.method.name, cfg.method.model_dump(), num_images)
    if why:
        raise ValueError(why)
    if (
        not cfg.data.in_memory
        and cfg.monitor.every
        and (cfg.monitor.train_subset is None or cfg.monitor.test_subset is None)
    ):
        raise ValueError(
            "The online kNN monitor holds its images in memory; with data.in_memory=false set "
            "monitor.train_subset and monitor.test_subset (e.g. 10000 and 2000), or monitor.every=0."
        )


def _for_training(
    model: nn.Module, cfg: PretrainConfig, device: torch.device, ctx: DistContext
) -> tuple[nn.Module, nn.Module]:
    """``(model, forward)``: the model (with SyncBatchNorm if asked), and what the steps call: it under DDP and
    ``torch.compile`` where asked."""
    forward = model
    if ctx.enabled:
        if cfg.train.sync_batchnorm:
            if device.type != "cuda":
                raise ValueError(
                    "train.sync_batchnorm=true needs CUDA: PyTorch's SyncBatchNorm has no CPU "
                    "implementation. Leave it off for CPU (gloo) runs."
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # MoCo's queue and DINO's center are identical on every rank by construction: no broadcast each step.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ddp_ignored_buffer_names(model))
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, torch.compile(forward) if cfg.train.compile else forward


def build_trainer(
    cfg: PretrainConfig, run_dir: Path, ctx: DistContext = DistContext(), train_bank: Optional[ImageBank] = None
) -> Pretrainer:
    """Every part of a run, made from ``cfg`` fitted to the data (:func:`fit_image_size`, :func:`fit_monitor`; the
    fitted settings are the trainer's ``run_config``); ``train_bank``: images already loaded, e.g. by a benchmark."""
    device = resolve_device(cfg.train.device, ctx.local_rank)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank

    def say(note: str) -> None:
        if ctx.is_main:
            print(note, file=sys.stderr)

    cfg = fit_image_size(cfg, say) if train_bank is None else cfg
    source = train_bank if train_bank is not None else build_source(cfg, device)
    left_out = getattr(source, "unreadable", None)
    if isinstance(source, ImageBank) and left_out:
        say(
            f"note: {len(left_out)} image files could not be read and are left out, listed in "
            f"{run_dir / UNREADABLE_LIST} (the first: '{left_out[0][0]}': {left_out[0][1]}); "
            "data.skip_unreadable=false stops at the first instead"
        )
    cfg = fit_monitor(cfg, source.num_classes, say)
    batch_size, note = fit_batch_size(cfg.train.batch_size, len(source), "train.batch_size")
    pruner = build_pruner(cfg, len(source), device)
    if ctx.is_main and pruner.schedule_note:
        print(f"note: {pruner.schedule_note}.")
    batch_size, pruned_note = fit_batch_to_pruning(batch_size, pruner, ctx.world_size)
    schedule = pruner.describe_schedule()
    for line in (note, pruned_note, f"note: {schedule}" if schedule else ""):
        if line:
            say(line)
    check_fits_the_data(cfg, len(source), ctx.world_size, batch_size)
    mean, std = source.channel_stats()
    source = source.to(device if cfg.data.bank_device == "auto" else "cpu")
    views = TwoViews(source.image_size, source.channels, mean, std, **cfg.augment.model_dump()).to(device)
    channels_last = device.type == "cuda" and cfg.train.channels_last
    model = build_method(cfg, source.channels, source.image_size).to(device)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model, forward = _for_training(model, cfg, device, ctx)
    if ctx.enabled:  # augmentations differ per rank (as with per-rank data loaders); weights were seeded above
        torch.manual_seed(cfg.train.seed + 1_000_003 * ctx.rank)
    o = cfg.optim
    optimizer = build_optimizer(model, o.name, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    monitor = build_monitor(cfg, source, views, mean, std, device) if ctx.is_main else None
    data_info = {
        "name": cfg.data.name,
        "channels": source.channels,
        "image_size": source.image_size,
        "num_classes": source.num_classes,
        "mean": mean,
        "std": std,
    }
    t = cfg.train
    parts = TrainParts(source, views, model, optimizer, pruner, forward, Normalize(mean, std).to(device), monitor)
    schedules = Schedules(build_schedule(cfg), build_weight_decay_schedule(cfg), o.clip_grad)
    settings = RunSettings(
        run_dir,
        t.epochs,
        batch_size,
        device,
        ctx,
        seed=t.seed,
        amp=t.amp,
        channels_last=t.channels_last,
        nonfinite=t.nonfinite,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        max_forwards=t.max_forwards,
        run_config=cfg.model_dump(),
        data_info=data_info,
        data_files=files_digest(source),
    )
    return Pretrainer(parts, schedules, settings)


def finished_result(trainer: Pretrainer) -> PretrainResult:
    """What a run resumed at its end returns: its result as it stood, marked ``already_finished``."""
    parts, counts, settings = trainer.parts, trainer.counts, trainer.settings
    checkpoint = settings.run_dir / "checkpoints" / "last.pt"
    result = run_result(parts, counts, settings, checkpoint, last_epoch_loss(settings.run_dir), 0.0, 0, [])
    result.already_finished = True
    return result


def pretrain(
    cfg: PretrainConfig,
    recipe: str = "run",
    show_progress: Optional[bool] = None,
    train_bank: Optional[ImageBank] = None,
) -> PretrainResult:
    """Run (or resume) one pretraining job; returns where it wrote things and how it went.

    Under torchrun every process calls this; rank 0 alone writes the config, metrics, W&B and checkpoints.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(cfg.train.device)
    try:
        return _pretrain(cfg, recipe, show_progress, train_bank, ctx)
    finally:
        if ctx.enabled and owns_group:
            dist.destroy_process_group()


def _pretrain(cfg, recipe, show_progress, train_bank, ctx: DistContext) -> PretrainResult:
    run_dir, resuming = prepare_run_dir(cfg.run.out_dir, cfg.run.name, cfg.run.resume, recipe, ctx)
    trainer = build_trainer(cfg, run_dir, ctx, train_bank)
    cfg = PretrainConfig.model_validate(trainer.settings.run_config)  # as fitted to the data: what is saved and checked
    if resuming:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=trainer.settings.device)
        check_resume_compatible(ckpt["config"], cfg.model_dump(), run_dir)
        shifts = check_resume_epochs(
            ckpt["config"],
            cfg.model_dump(),
            run_dir,
            ckpt["epoch"],
            len(trainer.parts.source),
            ckpt["samples_seen"] + ckpt.get("unreadable_skips", 0),
        )
        trainer.load_state_dict(ckpt)
        if trainer.settings.finished(trainer.counts):  # nothing left: no new W&B run, no new epoch
            return finished_result(trainer)
        if ctx.is_main:
            print(f"Resuming {run_dir} at epoch {trainer.counts.epoch} (step {trainer.counts.global_step}).")
            for shift in shifts:
                print(f"  run.extend=true: {shift}")
    elif cfg.run.resume == "auto" and ctx.is_main:
        print(f"Starting {run_dir} (run.resume=auto: no checkpoint there yet).")
    if ctx.is_main and isinstance(trainer.parts.source, ImageBank):
        list_unreadable(unreadable_files(trainer.parts.source), run_dir)
    if not ctx.is_main:
        result = trainer.run(NullTracker(), show_progress=False)
        unreadable_files(trainer.parts.source)  # collective under DDP: rank 0 gathers every rank's
        return result
    run_id_file = run_dir / "wandb_run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    tracker = build_tracker(cfg, run_dir, run_id, rewind_to_step=trainer.counts.global_step if resuming else None)
    print(tracker.describe())
    if tracker.wandb_run is not None and run_id is None:
        run_id_file.write_text(tracker.wandb_run.id)
    try:
        result = trainer.run(tracker, show_progress)
        result.unreadable_files = list_unreadable(unreadable_files(trainer.parts.source), run_dir)
        if cfg.tracking.checkpoint_artifact:
            tracker.log_checkpoint(
                result.checkpoint, {"epoch": result.epochs_done, "achieved_rate": result.achieved_rate}
            )
        tracker.summary(
            {
                "final_loss": result.final_loss,
                "images_per_second": result.images_per_second,
                "seconds": result.seconds,
                "epochs": result.epochs_done,
                "pruning/requested_rate": result.requested_rate,
                "pruning/achieved_rate": result.achieved_rate,
                "pruning/sample_forwards": result.sample_forwards,
                "train/skipped_steps": result.skipped_steps,
                "world_size": ctx.world_size,
            }
        )
    finally:
        tracker.finish()
    return result
