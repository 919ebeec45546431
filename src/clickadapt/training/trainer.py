"""Source pre-training with iterative click simulation (method.md §6).

One code path serves a single process and ``torchrun`` workers (``DistributedDataParallel``; gloo on
CPU, NCCL on GPU). Determinism: every epoch reseeds the data order, the augmentation and the click
simulation from ``(seed, epoch)``, so a run resumed at an epoch boundary continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from clickadapt.clicks.encoding import model_input
from clickadapt.data.registry import data_digest, load_samples
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import evaluate_frozen
from clickadapt.losses.combined import SegmentationLoss
from clickadapt.models.checkpoint import (
    CheckpointMeta,
    CheckpointPreprocessing,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from clickadapt.models.factory import build_model, count_parameters
from clickadapt.models.resized import ResizedInputNetwork
from clickadapt.tasks import TaskSpec, get_task
from clickadapt.training.augment import build_augmentation
from clickadapt.training.click_rounds import sample_clicks_in_rounds
from clickadapt.training.config import TrainingConfig
from clickadapt.training.distributed import DistributedContext, all_reduce_mean, init_distributed, shutdown_distributed

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
LOG_FILE = "train_log.jsonl"


class AugmentedSamples(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples as ``(image (C,H,W) float32, label (H,W) int64)`` tensors, optionally augmented."""

    def __init__(self, samples: list[Sample], augmentation: Any | None) -> None:
        self.samples = samples
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        item: dict[str, Any] = {"image": sample.image, "label": sample.label[None].astype(np.float32)}
        if self.augmentation is not None:
            item = self.augmentation(item)
        image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)
        label = torch.as_tensor(np.asarray(item["label"])[0]).round().long()
        return image, label


@dataclass
class TrainingResult:
    """What a finished training run produced.

    Attributes:
        best_checkpoint: Path of the best checkpoint by validation Dice (or the last, without
            validation data).
        history: One record per epoch (loss, validation metrics, time).
        best_metrics: Validation metrics of the best checkpoint.
        wall_seconds: Total wall time of this invocation.
    """

    best_checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0


def load_datasets(configs: list[Any]) -> list[Sample]:
    """Load and concatenate the samples of several dataset configs (cached under ``.cache/``)."""
    samples: list[Sample] = []
    for config in configs:
        samples.extend(load_samples(config, cache_dir=Path(".cache/clickadapt")))
    return samples


def validation_metrics(
    model: nn.Module, task: TaskSpec, samples: list[Sample], config: TrainingConfig, device: str = "cpu"
) -> dict[str, float]:
    """Dice after 1, 5 and 10 clicks of a simulated user, per region, with no adaptation, on ``device``.

    Returns keys like ``"dice@5/lesion"`` and ``"selection"`` (mean over regions at the selection
    click).
    """
    curves = evaluate_frozen(
        model,
        task,
        samples,
        user_name=config.validation.user,
        budget=config.validation.budget,
        seed=config.validation.seed,
        click_sigma=config.clicks.sigma,
        device=device,
    )
    metrics: dict[str, float] = {}
    for region, curve in curves.items():
        for click in (1, 5, 10):
            if click <= len(curve):
                metrics[f"dice@{click}/{region}"] = float(curve[click - 1])
    selection_index = min(config.validation.selection_click, config.validation.budget) - 1
    metrics["selection"] = float(np.mean([curve[selection_index] for curve in curves.values()]))
    return metrics


def _checkpoint_meta(
    config: TrainingConfig, train_samples: list[Sample], metrics: dict[str, float], epoch: int
) -> CheckpointMeta:
    first = config.train_data[0]
    return CheckpointMeta(
        task=config.task,
        model=config.model,
        preprocessing=CheckpointPreprocessing(
            **first.preprocessing().model_dump(),
            reader=first.reader,
            modality=first.modality,
            click_sigma=config.clicks.sigma,
        ),
        training={**config.model_dump(mode="json"), "epochs_completed": epoch + 1},
        data_digest=data_digest(train_samples),
        metrics=metrics,
        notes=f"source model trained by `clickadapt train` for {epoch + 1} epochs",
    )


def train(config: TrainingConfig, resume: bool = False, progress: bool = True) -> TrainingResult:
    """Pre-train a click-driven segmentation network on the source domain.

    Args:
        config: The experiment.
        resume: Continue from ``<output>/resume.pt`` if it exists.
        progress: Show a progress bar with loss and ETA (rank 0 only).

    Returns:
        The best checkpoint and the per-epoch history.
    """
    started = time.perf_counter()
    context = init_distributed(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    task = get_task(config.task)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)

    train_samples = load_datasets(config.train_data)
    validation_samples = load_datasets(config.validation_data)
    if not train_samples:
        raise ValueError("training data is empty: check train_data in the config")
    logger.info("train %d samples, validation %d samples", len(train_samples), len(validation_samples))

    torch.manual_seed(config.seed)
    model = build_model(config.model, task.input_channels, task.num_classes).to(context.device)
    if config.init_checkpoint is not None:
        _load_initial_weights(model, config)
    logger.info("model %s with %d parameters", config.model.name, count_parameters(model))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.optimisation.learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimiser, step_size=config.optimisation.lr_step_epochs, gamma=config.optimisation.lr_gamma
    )
    criterion = config.loss.build()
    averaged = _weight_average(model, config.optimisation.ema_decay)
    history: list[dict[str, Any]] = []
    best_score = -1.0
    best_metrics: dict[str, float] = {}
    start_epoch = 0
    resume_path = output / RESUME_FILE
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location=context.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        if averaged is not None:
            if "averaged_model" not in state:
                raise ValueError(
                    f"{resume_path} was written without optimisation.ema_decay; resume with the config it was "
                    "started with (or start afresh)"
                )
            averaged.load_state_dict(state["averaged_model"])
        start_epoch, best_score, best_metrics, history = (
            state["epoch"] + 1,
            state["best_score"],
            state["best_metrics"],
            state["history"],
        )
        logger.info("resumed from %s at epoch %d", resume_path, start_epoch)

    network: nn.Module = DistributedDataParallel(model) if context.enabled else model
    augmentation = build_augmentation(config.augmentation, colour=task.image_channels == 3)
    dataset = AugmentedSamples(train_samples, augmentation if config.augmentation.enabled else None)
    total_epochs = config.optimisation.epochs
    steps_per_epoch = _steps_per_epoch(len(dataset), config, context)
    deadline = None if config.optimisation.max_minutes is None else started + 60 * config.optimisation.max_minutes
    bar = tqdm(
        total=(total_epochs - start_epoch) * steps_per_epoch,
        disable=not (progress and context.is_main),
        desc="train",
        dynamic_ncols=True,
    )
    stopped_early = False
    for epoch in range(start_epoch, total_epochs):
        epoch_started = time.perf_counter()
        mean_loss = _train_one_epoch(
            network, model, averaged, dataset, criterion, optimiser, task, config, context, epoch, bar
        )
        scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss, "lr": scheduler.get_last_lr()[0]}
        last_epoch = epoch == total_epochs - 1 or (deadline is not None and time.perf_counter() > deadline)
        # What is validated and saved: the averaged weights when there are any, else the trained ones.
        kept = model if averaged is None else inner_module(averaged)
        if context.is_main:
            validate_now = validation_samples and ((epoch + 1) % config.validation.every_epochs == 0 or last_epoch)
            if validate_now:
                kept.eval()
                metrics = validation_metrics(kept, task, validation_samples, config, str(context.device))
                record.update(metrics)
                if averaged is not None and last_epoch:
                    # The trained weights once, at the end, to show what the average adds.
                    model.eval()
                    trained = validation_metrics(model, task, validation_samples, config, str(context.device))
                    record.update({f"trained_weights/{key}": value for key, value in trained.items()})
                if metrics["selection"] > best_score:
                    best_score, best_metrics = metrics["selection"], metrics
                    save_checkpoint(output / BEST_FILE, kept, _checkpoint_meta(config, train_samples, metrics, epoch))
            elif not validation_samples:
                save_checkpoint(output / BEST_FILE, kept, _checkpoint_meta(config, train_samples, {}, epoch))
            save_checkpoint(output / LAST_FILE, kept, _checkpoint_meta(config, train_samples, best_metrics, epoch))
            record["seconds"] = time.perf_counter() - epoch_started
            history.append(record)
            _write_resume_state(
                resume_path, model, averaged, optimiser, scheduler, epoch, best_score, best_metrics, history
            )
            with (output / LOG_FILE).open("a") as log:
                log.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{mean_loss:.4f}", best=f"{best_score:.3f}")
        if last_epoch and epoch != total_epochs - 1:
            stopped_early = True
            break
    bar.close()
    if stopped_early and context.is_main:
        logger.info("stopped after %.1f minutes (max_minutes)", config.optimisation.max_minutes or 0)
    shutdown_distributed(context)
    return TrainingResult(
        best_checkpoint=output / BEST_FILE,
        history=history,
        best_metrics=best_metrics,
        wall_seconds=time.perf_counter() - started,
    )


def _load_initial_weights(model: nn.Module, config: TrainingConfig) -> None:
    """Copy the weights of ``config.init_checkpoint`` into ``model`` (same task and architecture).

    The two may differ in ``input_size`` alone (the grid the network runs at has no weights), so a
    model trained at 128 px can be fine-tuned at 256 px.
    """
    path = Path(str(config.init_checkpoint))
    if not path.is_file():
        raise FileNotFoundError(f"init_checkpoint {path} does not exist (train the earlier stage first)")
    loaded = load_checkpoint(path)
    same_network = loaded.meta.model.model_copy(update={"input_size": None}) == config.model.model_copy(
        update={"input_size": None}
    )
    if loaded.meta.task != config.task or not same_network:
        raise ValueError(
            f"init_checkpoint {path} holds a {loaded.meta.task} {loaded.meta.model} model; "
            f"the config trains a {config.task} {config.model} model"
        )
    inner_network(model).load_state_dict(inner_network(loaded.model).state_dict())
    logger.info("initial weights from %s (sha256 %s…)", path, loaded.sha256[:12])


def _weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (torch's ``AveragedModel``), or None without a decay.

    The reference U-Net normalises with InstanceNorm (no running statistics), so averaging the
    parameters is the whole average; buffers, if a network has any, are averaged too.
    """
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def inner_module(averaged: AveragedModel) -> nn.Module:
    """The network an ``AveragedModel`` averages (what is validated and saved)."""
    module = averaged.module
    assert isinstance(module, nn.Module)
    return module


def inner_network(model: nn.Module) -> nn.Module:
    """The network inside a :class:`ResizedInputNetwork`, or ``model`` itself when it is not wrapped."""
    return model.network if isinstance(model, ResizedInputNetwork) else model


def _steps_per_epoch(dataset_size: int, config: TrainingConfig, context: DistributedContext) -> int:
    per_process = -(-dataset_size // context.world_size)
    steps = -(-per_process // config.optimisation.batch_size)
    cap = config.optimisation.max_steps_per_epoch
    return min(steps, cap) if cap else steps


def _train_one_epoch(
    network: nn.Module,
    model: nn.Module,
    averaged: AveragedModel | None,
    dataset: AugmentedSamples,
    criterion: SegmentationLoss,
    optimiser: torch.optim.Optimizer,
    task: TaskSpec,
    config: TrainingConfig,
    context: DistributedContext,
    epoch: int,
    bar: tqdm,
) -> float:
    epoch_seed = config.seed * 100_003 + epoch
    if dataset.augmentation is not None:
        dataset.augmentation.set_random_state(seed=epoch_seed + 7919 * context.rank)
    click_rng = np.random.default_rng([config.seed, epoch, context.rank])
    generator = torch.Generator().manual_seed(epoch_seed)
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor]] | None = (
        DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, seed=epoch_seed)
        if context.enabled
        else None
    )
    loader = DataLoader(
        dataset,
        batch_size=config.optimisation.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(dataset) >= 2 * config.optimisation.batch_size * context.world_size,
    )
    steps = _steps_per_epoch(len(dataset), config, context)
    losses: list[float] = []
    for step, (images, labels) in enumerate(loader):
        if step >= steps:
            break
        images, labels = images.to(context.device), labels.to(context.device)
        model.eval()
        clicks = sample_clicks_in_rounds(
            model,
            images,
            labels,
            task.num_classes,
            click_rng,
            max_clicks=config.clicks.max_clicks,
            click_sigma=config.clicks.sigma,
            split_area=config.clicks.split_area,
            largest_error_share=config.clicks.largest_error_share,
            iterative_clicks=config.clicks.iterative_clicks,
        )
        network.train()
        inputs = torch.stack(
            [
                model_input(image, image_clicks, task.num_classes, config.clicks.sigma)
                for image, image_clicks in zip(images, clicks, strict=True)
            ]
        )
        logits = network(inputs)
        loss = criterion(logits, labels, clicks)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is not finite at epoch {epoch} step {step}: {loss.item()}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if averaged is not None:
            averaged.update_parameters(model)
        losses.append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
    return all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), context)


def _write_resume_state(
    path: Path,
    model: nn.Module,
    averaged: AveragedModel | None,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    best_score: float,
    best_metrics: dict[str, float],
    history: list[dict[str, Any]],
) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            **({} if averaged is None else {"averaged_model": averaged.state_dict()}),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
            "best_metrics": best_metrics,
            "history": history,
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())
