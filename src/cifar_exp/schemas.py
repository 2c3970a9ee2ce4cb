"""The config's schemas: one dataclass per config group (the models' own live with the
models), the enums of its fixed choices, and the names of the metrics. `config` merges a
composed config into these and checks its values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING


class Validation(StrEnum):
    split = "split"
    test = "test"


class Precision(StrEnum):
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"
    auto = "auto"


class Schedule(StrEnum):
    constant = "constant"
    onecycle = "onecycle"
    triangle = "triangle"


class Direction(StrEnum):
    maximize = "maximize"
    minimize = "minimize"


class SamplerName(StrEnum):
    tpe = "tpe"
    random = "random"
    grid = "grid"
    nsga2 = "nsga2"


class PrunerName(StrEnum):
    median = "median"
    hyperband = "hyperband"
    successive_halving = "successive_halving"
    threshold = "threshold"
    none = "none"


@dataclass
class DataConfig:
    path: str | None = None
    cache_dir: str | None = None
    validation: Validation = Validation.split
    val_size: int = 5000
    limit_train: int | None = None
    limit_test: int | None = None
    split_seed: int = 0
    shuffle_buffer: int | None = None


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    decay: float = 0.0
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.constant
    warmup: float = 0.25
    start_factor: float = 0.0
    end_factor: float = 0.0


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    decay: float = 0.0
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.constant
    warmup: float = 0.25
    start_factor: float = 0.0
    end_factor: float = 0.0


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 32
    seed: int = 42
    precision: Precision = Precision.auto
    deterministic: bool = True
    threads: int | None = None
    jit_compile: str = "false"
    verbose: str = "auto"
    augment: bool = False
    translate: int = 4
    alternate_flips: bool = False
    label_smoothing: float = 0.0
    lookahead: bool = False
    stop_after: int | None = None
    steps_per_execution: int = 64
    input_threads: int | None = None


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    dir: str = "mlruns"
    experiment_name: str = "cifar10"
    log_model: bool = True
    registered_model: str | None = "cifar10-cnn"
    champion_alpha: float = 0.05


@dataclass
class SamplerConfig:
    name: SamplerName = SamplerName.tpe
    seed: int | None = 0


@dataclass
class PrunerConfig:
    name: PrunerName = PrunerName.median
    # trials that always run to the end before the pruner compares (median)
    n_startup_trials: int = 3
    # epochs every trial runs before it can be pruned
    n_warmup_steps: int = 1
    # successive halving / hyperband: the smallest and largest epoch budgets
    min_resource: int = 1
    reduction_factor: int = 3
    # threshold: prune a trial whose metric is below `lower` or above `upper`
    lower: float | None = None
    upper: float | None = None


@dataclass
class ConfirmConfig:
    # configurations re-trained after the search (0: no confirmation stage)
    top_k: int = 3
    # seeds each of them reaches (those already trained count)
    seeds: int = 5
    # significance level of the winner-against-runner-up tests
    alpha: float = 0.05


@dataclass
class SearchConfig:
    study_name: str = "cifar10"
    storage: str | None = None
    n_trials: int = 20
    timeout: float | None = None
    metric: str = "val_accuracy"
    direction: Direction = Direction.maximize
    # a multi-objective study: [val_accuracy, train_time] (Keras history keys, train_time in
    # seconds) with one of `directions` each; null or []: the single `metric` and `direction`
    objectives: list[str] | None = None
    directions: list[Direction] | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    heartbeat_interval: int = 30
    max_retry: int = 1
    max_failures: int = 5
    isolate_trials: bool = True
    # trials at once on this machine: a number, or "auto" (study/workers.py says the rule)
    n_workers: Any = 1
    # an earlier study (same storage) whose best configurations run first in a new study
    warm_start: str | None = None
    warm_start_top: int = 3
    # bounds a trial must meet to count as best: ["train_time <= 600"] (Optuna's constraints)
    constraints: list[str] = field(default_factory=list)
    seeds: int = 1
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    # nested like the config: {optimizer: {lr: {type: float, low: .., high: .., log: true}}}
    space: dict[str, Any] = field(default_factory=dict)
    # Hydra's sweep grammar, as its Optuna sweeper reads it (study/grammar.py):
    # {optimizer.lr: "tag(log, interval(1e-4, 1e-1))"}; replaces a `space` entry of the same key
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReferenceConfig:
    """Published results a study replicates, shown beside its own in the report (per epoch
    budget: `{10: 0.635, ...}`)."""

    val_accuracy: dict[int, float] = field(default_factory=dict)
    test_accuracy: dict[int, float] = field(default_factory=dict)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    experiment: str | None = None
    tags: list[str] = field(default_factory=list)
    # published numbers this study replicates (experiments/seed_epochs.yaml); null: none
    reference: ReferenceConfig | None = None


# Groups whose schema depends on the chosen `name` (the models' own: cifar_exp.models.SCHEMAS)
OPTIMIZER_SCHEMAS: dict[str, type] = {"sgd": SGDConfig, "adam": AdamConfig}

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
