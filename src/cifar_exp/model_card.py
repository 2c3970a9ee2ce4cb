"""What the record says about a model, shown with every prediction: its reference (registered
version, study, trial, seed or the file), its test accuracy with what it rests on, and a
warning when that accuracy is near chance.

The test accuracy is read, never measured here, in this order: the registered version's tags
(written at registration, on the full test set), the training run's own test evaluation
(`train`), the latest `evaluate` of this very .keras file (matched by its sha256). Where none
exists the card says so and how to measure it; it never invents one.

Near chance. Guessing one of the 10 classes is right 10 % of the time. A model is called near
chance when the lower end of the Wilson 95 % interval of its test accuracy is below 20 %
(twice guessing): the test set does not show that it gets clearly more than one image in five
right. A significance test against 10 % alone would not do: a model right on 17.5 % of 10,000
images is far from 10 % (binomial p < 1e-90) and still wrong on more than four images in five,
which is what a user of `predict` needs to know. Where the one-sided exact binomial test
(`scipy.stats.binomtest(k, n, 0.1, alternative="greater")`) cannot even tell the model from
guessing (p >= 0.05), the warning says so.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from cifar_exp.cifar_files import sha256
from cifar_exp.config import Config
from cifar_exp.data import CLASS_NAMES
from cifar_exp.errors import UserError
from cifar_exp.registry import (
    EVALUATES_SHA256,
    TEST_ACCURACY,
    is_file,
    load_with_file,
    model_version,
    run_facts,
    run_of_uri,
)
from cifar_exp.tracking import missing_store, read_test_metrics, setup, tracking_uri
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)

CHANCE = 1 / len(CLASS_NAMES)  # guessing one of the classes
NEAR_CHANCE = 2 * CHANCE  # below this (the interval's lower end) a model is near chance
ALPHA = 0.05  # of the one-sided binomial test against chance


@dataclass(frozen=True)
class TestAccuracy:
    """A model's accuracy on a test set: `correct` of `images` right, of a model trained
    `seeds` times (a registered model is one training: 1), and where the number was read."""

    __test__ = False  # not a pytest test class

    accuracy: float
    images: int
    correct: int
    seeds: int
    source: str

    def interval(self) -> tuple[float, float]:
        """Wilson's 95 % interval over the test images."""
        from cifar_exp.stats import accuracy_interval

        return accuracy_interval(self.correct, self.images)

    def p_chance(self) -> float:
        """One-sided exact binomial p-value of "no better than guessing"."""
        from scipy.stats import binomtest

        return float(binomtest(self.correct, self.images, CHANCE, alternative="greater").pvalue)

    def text(self) -> str:
        """`0.1750 (95 % CI 0.1676-0.1826, 10000 test images, 1 seed), measured at
        registration`."""
        low, high = self.interval()
        seeds = "1 seed" if self.seeds == 1 else f"{self.seeds} seeds"
        return (
            f"{self.accuracy:.4f} (95 % CI {low:.4f}-{high:.4f}, {self.images} test images, "
            f"{seeds}), {self.source}"
        )


@dataclass(frozen=True)
class ModelCard:
    """A model's reference and test accuracy (None: never measured; `unknown` says what to
    run)."""

    reference: str  # the URI or the file path it was loaded from
    name: str | None = None  # the registered model
    version: int | None = None
    study: str | None = None
    trial: int | str | None = None
    seed: int | str | None = None
    run_id: str | None = None
    test: TestAccuracy | None = None
    unknown: str | None = None

    def reference_text(self) -> str:
        """`models:/cifar10-cnn@champion (version 3; study tiny, trial 2, seed 42)`."""
        origin = ", ".join(
            f"{k} {v}"
            for k, v in (("study", self.study), ("trial", self.trial), ("seed", self.seed))
            if v
        )
        version = f"version {self.version}" if self.version is not None else ""
        inside = "; ".join(part for part in (version, origin) if part)
        return f"{self.reference} ({inside})" if inside else self.reference

    def accuracy_text(self) -> str:
        if self.test is None:
            return self.unknown or "test accuracy unknown"
        return f"test accuracy {self.test.text()}"

    def near_chance(self) -> bool | None:
        """Is the accuracy near chance (see the module's docstring); None where unknown."""
        return None if self.test is None else self.test.interval()[0] < NEAR_CHANCE

    def warning(self) -> str | None:
        """In words, when the model is near chance; else None."""
        if not self.near_chance():
            return None
        assert self.test is not None
        low, high = self.test.interval()
        p = self.test.p_chance()
        if p >= ALPHA:
            verdict = (
                f"no better than guessing one of {len(CLASS_NAMES)} classes ({CHANCE:.0%}): "
                f"one-sided binomial test p = {p:.2g}"
            )
        else:
            verdict = (
                f"near chance: its 95 % interval {low:.1%}-{high:.1%} reaches below "
                f"{NEAR_CHANCE:.0%}, twice the {CHANCE:.0%} of guessing"
            )
        return f"this model is {verdict}; most of its predictions are wrong"

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("test", "unknown")}
        if self.test is None:
            out["test_accuracy"] = None
        else:
            low, high = self.test.interval()
            out["test_accuracy"] = {
                **{k: v for k, v in asdict(self.test).items()},
                "ci95": [low, high],
                "p_chance": self.test.p_chance(),
            }
        out["test_accuracy_unknown"] = self.unknown
        out["near_chance"] = self.near_chance()
        out["warning"] = self.warning()
        return out


def describe(reference: str | None, cfg: Config) -> tuple[Any, ModelCard]:
    """The model a reference names (loaded as `registry.load_model` does) and its card."""
    model, uri, path = load_with_file(reference, cfg)
    return model, model_card(uri, path, cfg)


def model_card(uri: str, path: Path, cfg: Config) -> ModelCard:
    """The card of the model loaded from `uri`, whose .keras file is `path`."""
    client = _store(cfg, create=not is_file(uri))
    facts: dict[str, Any] = {"reference": uri}
    version = model_version(client, uri) if client else None
    run_id = version.run_id if version else run_of_uri(uri)
    if version is not None:
        tags = version.tags or {}
        facts.update(name=version.name, version=int(version.version))
        facts.update({k: tags.get(k) for k in ("study", "trial", "seed")})
        facts["test"] = _from_version_tags(tags)
    if run_id and client:
        facts["run_id"] = run_id
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException:
            tags = {}
        facts["study"] = facts.get("study") or tags.get("optuna.study_name")
        facts["trial"] = facts.get("trial") or tags.get("optuna.trial_number")
        facts["seed"] = facts.get("seed") or run_facts(client, run_id).get("seed")
        facts["test"] = facts.get("test") or _read(run_id, f"recorded on its run {run_id}")
    if facts.get("test") is None and client:
        facts["test"] = _from_evaluation(client, cfg, sha256(path))
    if facts.get("test") is None:
        what = "this model file" if is_file(uri) else "this model"
        facts["unknown"] = (
            f"test accuracy unknown: {what} was never evaluated "
            f"(python -m cifar_exp evaluate {uri})"
        )
    for key in ("trial", "seed"):  # recorded as tags (text): numbers, as the JSON says
        if str(facts.get(key)).isdigit():
            facts[key] = int(facts[key])
    return ModelCard(**facts)


def _store(cfg: Config, create: bool) -> MlflowClient | None:
    """A client of the tracking store; for a bare file only of a store that exists already
    (looking a file up never creates a store in the current folder)."""
    if not cfg.tracking.enabled:
        return None
    if not create and missing_store(cfg.tracking):
        return None
    try:
        setup(cfg.tracking)
    except (UserError, MlflowException) as e:
        log.warning("no model record: %s", e)
        return None
    return MlflowClient(tracking_uri(cfg.tracking))


def _from_version_tags(tags: dict[str, str]) -> TestAccuracy | None:
    if TEST_ACCURACY in tags:
        return TestAccuracy(
            float(tags[TEST_ACCURACY]),
            int(tags["test.images"]),
            int(tags["test.correct"]),
            int(tags.get("test.seeds", 1)),
            "measured at registration",
        )
    if "champion.challenger_accuracy" in tags:  # a version from before the test.* tags
        n, acc = int(tags["champion.test_images"]), float(tags["champion.challenger_accuracy"])
        return TestAccuracy(acc, n, round(acc * n), 1, "measured by the champion gate")
    return None


def _from_evaluation(client: MlflowClient, cfg: Config, digest: str) -> TestAccuracy | None:
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    if experiment is None:
        return None
    found = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{EVALUATES_SHA256}` = '{digest}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    run_id = found[0].info.run_id if found else None
    return _read(run_id, f"from evaluate run {run_id}") if run_id else None


def _read(run_id: str, source: str) -> TestAccuracy | None:
    """The test evaluation recorded on a run, if it has one."""
    try:
        test: Evaluation | None = read_test_metrics(run_id)
    except (MlflowException, OSError, KeyError, ValueError):
        return None
    if test is None:
        return None
    correct = sum(row[i] for i, row in enumerate(test.confusion_matrix))
    return TestAccuracy(test.accuracy, test.n, correct, 1, source)
