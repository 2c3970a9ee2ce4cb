"""Re-running a logged run from its record, and comparing the two."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from cifar_exp import provenance
from cifar_exp.config import MAX_SEED, METRICS, Config, ConfigError, with_overrides
from cifar_exp.runs import train_tracked
from cifar_exp.tracking import missing_store, run_config, setup
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)

COMPARED = (*METRICS, "test_loss", "test_accuracy")
# Same machine, same software, deterministic ops: metrics repeat exactly. Anything else is
# judged against this absolute tolerance.
TOLERANCE = 1e-6


@dataclass
class Audit:
    """One metric of a replication audit: the original value, the new seeds' values, their
    95 % prediction interval (where one more run falls), and whether the original is in it."""

    metric: str
    original: float
    values: list[float]
    interval: tuple[float, float] | None

    @property
    def inside(self) -> bool | None:
        if self.interval is None:
            return None
        return self.interval[0] <= self.original <= self.interval[1]


@dataclass
class Replication:
    """The recorded configuration re-trained with new seeds (`reproduce --seeds k`)."""

    seeds: list[int]
    run_ids: list[str | None]
    audits: list[Audit]

    @property
    def consistent(self) -> bool:
        """Every audited original value lies inside the replication's interval."""
        return all(a.inside for a in self.audits)


@dataclass
class Reproduction:
    """A run re-run from its record: per metric (name, original, new, new - original), and
    what differs in the provenance (commit, versions, data)."""

    original: str  # run ids
    reproduction: str | None
    rows: list[tuple[str, float, float, float]]
    warnings: list[str] = field(default_factory=list)
    replication: Replication | None = None  # with --seeds

    @property
    def identical(self) -> bool:
        return all(d == 0 for *_, d in self.rows)

    @property
    def within_tolerance(self) -> bool:
        return all(abs(d) <= TOLERANCE for *_, d in self.rows)


def reproduce(
    run_id: str, cfg: Config, overrides: list[str] | tuple[str, ...] = (), seeds: int = 0
) -> Reproduction:
    """Re-run `run_id` from its recorded config and seed as a new run tagged `reproduces`;
    with `seeds` k >= 2, also re-train it with k new seeds and audit the original values
    against the replication's 95 % prediction interval."""
    if seeds == 1 or not 0 <= seeds <= 100:  # the bound of search.seeds and confirm.seeds
        raise ConfigError("reproduce --seeds: takes 0 (no replication) or 2 to 100 seeds")
    where = cfg.tracking.uri or cfg.tracking.dir
    if missing_store(cfg.tracking):  # nothing to find there: make nothing
        raise ConfigError(f"{run_id}: no such MLflow run in {where} (no MLflow store there)")
    setup(cfg.tracking)
    client = MlflowClient()
    try:
        original = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"{run_id}: no such MLflow run in {where}") from None
    recorded = run_config(run_id, cfg, overrides)
    # a pruned trial stopped early: repeat exactly the epochs it ran, on the same schedule
    epochs = len(client.get_metric_history(run_id, "loss"))
    if epochs and epochs != recorded.trainer.epochs:
        recorded = with_overrides(recorded, {"trainer.stop_after": epochs})
    evaluate_test = "test_accuracy" in original.data.metrics
    out = train_tracked(
        recorded,
        run_name=f"reproduce-{run_id[:8]}",
        extra_tags={"reproduces": run_id},
        evaluate_test=evaluate_test,
    )
    new = client.get_run(out.run_id) if out.run_id else None
    new_metrics = new.data.metrics if new else {**out.final, **_test(out.test)}
    rows = []
    for key in COMPARED:
        if key in original.data.metrics and key in new_metrics:
            a, b = original.data.metrics[key], new_metrics[key]
            rows.append((key, a, b, b - a))
    return Reproduction(
        original=run_id,
        reproduction=out.run_id,
        rows=rows,
        warnings=_differences(original.data.tags, new.data.tags if new else {}),
        replication=_replicate(run_id, recorded, original.data.metrics, seeds, evaluate_test)
        if seeds
        else None,
    )


def _replicate(
    run_id: str, recorded: Config, metrics: dict[str, float], k: int, evaluate_test: bool
) -> Replication:
    """k new seeds (after the original's), same data split; each original final metric the
    runs have is audited against the new values' 95 % prediction interval."""
    from cifar_exp.stats import prediction_interval

    start = recorded.trainer.seed + 1
    seeds = [(start + i) % (MAX_SEED + 1) for i in range(k)]
    results = [
        train_tracked(
            with_overrides(recorded, {"trainer.seed": seed, "tracking.log_model": False}),
            run_name=f"replicate-{run_id[:8]}-seed-{seed}",
            extra_tags={"replicates": run_id, "seed": str(seed)},
            evaluate_test=evaluate_test,
        )
        for seed in seeds
    ]
    audits = []
    for key in COMPARED:
        values = [{**r.final, **_test(r.test)}.get(key) for r in results]
        if key in metrics and all(v is not None for v in values):
            audits.append(Audit(key, metrics[key], values, prediction_interval(values)))
    return Replication(seeds, [r.run_id for r in results], audits)


def _test(test: Evaluation | None) -> dict[str, float]:
    return {"test_loss": test.loss, "test_accuracy": test.accuracy} if test else {}


def _differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs between the two runs' provenance: commit, package versions, data."""
    now = dict(after) or {f"version.{k}": v for k, v in provenance.versions().items()}
    out = []
    for key in sorted(
        k
        for k in before
        if k.startswith("version.")
        or k in ("git_commit", "git_dirty", "data.sha256", "hardware.cpu")
    ):
        if key in now and now[key] != before[key]:
            out.append(f"{key} differs: original {before[key]}, now {now[key]}")
    return out
