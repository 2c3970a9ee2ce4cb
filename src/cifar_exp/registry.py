"""Models by reference: the MLflow model registry, the `champion` alias, and loading a model
from a run id, a `models:/` URI or a `.keras` file (always in Keras safe mode)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from cifar_exp.config import Config
from cifar_exp.errors import UserError
from cifar_exp.tracking import setup
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)

CHAMPION = "champion"


class ModelNotFound(UserError, ValueError):
    """A model reference that names nothing loadable; the message says what was tried."""


class ModelRefused(ModelNotFound):
    """A model that exists but is not used: it does not load in safe mode, expands too far, or
    is not a CIFAR-10 classifier."""


@dataclass(frozen=True)
class Registration:
    """A model version registered by a study, and whether it took the champion alias: only
    when it is better than the champion on the same full test set with significance
    (McNemar's exact test at `tracking.champion_alpha`), whatever validation set either study
    measured its own value on."""

    name: str
    version: int
    champion: bool  # the alias is on this version now
    previous: int | None  # the champion before (None: there was none)
    decision: str  # in words, with both accuracies, their intervals and the p-value
    p_value: float | None = None


def register_best(cfg: Config, run_id: str, value: float, study_name: str) -> Registration:
    """Register the model of `run_id` under `tracking.registered_model`; move the champion
    alias to it only if it beats the current champion on the full test set of `cfg.data`'s
    source with significance. The decision and its numbers are tags on the new version."""
    name = cfg.tracking.registered_model
    setup(cfg.tracking)
    client = MlflowClient()
    metric, direction = cfg.search.metric, str(cfg.search.direction)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="CIFAR-10 CNNs from cifar-exp studies")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    tags = {
        "study": study_name,
        "metric": metric,
        "value": str(value),
        "direction": direction,
        "validation": str(cfg.data.validation),
    }
    version = (
        existing[0]
        if existing
        else client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    )
    previous = _champion(client, name)
    record: dict[str, Any] = {}
    p = None
    if previous is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        is_champion, decision = True, "the first champion"
    elif previous.version == version.version:
        is_champion, decision = True, "already the champion"
    else:
        record = challenge(
            cfg, f"models:/{name}/{version.version}", f"models:/{name}/{previous.version}"
        )
        p = record["champion.p_value"]
        better = record["champion.challenger_accuracy"] > record["champion.incumbent_accuracy"]
        is_champion = better and p < cfg.tracking.champion_alpha
        if is_champion:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        decision = _decision(is_champion, previous.version, record, cfg.tracking.champion_alpha)
    record["champion.decision"] = decision
    for key, val in record.items():
        client.set_model_version_tag(name, version.version, key, str(val))
    return Registration(
        name=name,
        version=int(version.version),
        champion=is_champion,
        previous=int(previous.version) if previous else None,
        decision=decision,
        p_value=p,
    )


def challenge(cfg: Config, challenger: str, incumbent: str) -> dict[str, Any]:
    """Both models on the same full test set (every test image of the data source): their
    accuracies with Wilson 95 % intervals, and McNemar's exact test on per-image correctness."""
    from omegaconf import OmegaConf

    from cifar_exp.data import load_cifar10
    from cifar_exp.stats import accuracy_interval, mcnemar
    from cifar_exp.train import predict_classes

    data = OmegaConf.merge(cfg.data, {"limit_test": None})
    splits = load_cifar10(data)
    correct = {}
    for role, uri in (("challenger", challenger), ("incumbent", incumbent)):
        model, _ = load_model(uri, cfg)
        correct[role] = predict_classes(model, splits.x_test) == splits.y_test
    n = len(splits.y_test)
    test = mcnemar(correct["challenger"], correct["incumbent"])
    out: dict[str, Any] = {"champion.test_images": n}
    for role, right in correct.items():
        low, high = accuracy_interval(int(right.sum()), n)
        out[f"champion.{role}_accuracy"] = float(right.mean())
        out[f"champion.{role}_ci"] = f"{low:.4f}-{high:.4f}"
    out.update(
        {
            "champion.only_challenger_right": test.only_a,
            "champion.only_incumbent_right": test.only_b,
            "champion.p_value": test.p_value,
            "champion.test": "McNemar exact (binomial on discordant images)",
        }
    )
    return out


def _decision(moves: bool, previous: str, r: dict[str, Any], alpha: float) -> str:
    nums = (
        f"test accuracy {r['champion.challenger_accuracy']:.4f} "
        f"[{r['champion.challenger_ci']}] vs {r['champion.incumbent_accuracy']:.4f} "
        f"[{r['champion.incumbent_ci']}] on {r['champion.test_images']} images, McNemar "
        f"p = {r['champion.p_value']:.3g}"
    )
    if moves:
        return f"now the champion (better than version {previous}: {nums})"
    return f"the champion stays version {previous} (not better at alpha {alpha:g}: {nums})"


def _champion(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def champion_uri(cfg: Config) -> str:
    return f"models:/{cfg.tracking.registered_model}@{CHAMPION}"


def model_uri(reference: str | None, cfg: Config) -> str:
    """A loadable URI for a run id, a `models:/` / `runs:/` URI or a `.keras` path
    (None means the registry champion)."""
    if reference is None:
        return champion_uri(cfg)
    if reference.startswith(("models:/", "runs:/")) or reference.endswith(".keras"):
        return reference
    if len(reference) == 32 and all(c in "0123456789abcdef" for c in reference):
        return f"runs:/{reference}/model"
    raise ModelNotFound(f"{reference}: not a run id, a models:/ or runs:/ URI, or a .keras file")


# A .keras file is a zip: its JSON (config, metadata) is kilobytes, its weights megabytes.
# The sizes its directory declares are checked before Keras opens it, so a small file that
# expands to gigabytes is refused rather than read (Python's zipfile reads no more than the
# declared size of a member).
MAX_JSON_BYTES = 16 * 2**20
MAX_MODEL_BYTES = 2 * 2**30


def load_model(reference: str | None, cfg: Config) -> tuple[Any, str]:
    """The Keras model a reference names, loaded in safe mode and checked to be a CIFAR-10
    classifier (32x32x3 in, 10 classes out); also the URI it came from."""
    uri = model_uri(reference, cfg)
    if uri.endswith(".keras") and not uri.startswith(("models:/", "runs:/")):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"{uri}: no such model file")
        return _load_keras_file(path, uri), str(path.resolve())
    setup(cfg.tracking)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as e:
        hint = " (no study has registered a champion yet)" if reference is None else ""
        raise ModelNotFound(f"{uri}: {str(e).splitlines()[0]}{hint}") from None
    files = sorted(local.rglob("*.keras"))
    if not files:
        raise ModelNotFound(f"{uri}: holds no Keras model")
    return _load_keras_file(files[0], uri), uri


def _load_keras_file(path: Path, uri: str) -> Any:
    import keras

    # the tool's own layers, registered for loading in safe mode
    import cifar_exp.models.layers
    import cifar_exp.models.tta  # noqa: F401

    _check_archive(path, uri)
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelRefused(f"{uri}: not a loadable Keras model ({reason})") from None
    _check_signature(model, uri)
    return model


def _check_archive(path: Path, uri: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelRefused(f"{uri}: not a loadable Keras model ({e})") from None
    for entry in entries:
        if entry.filename.endswith(".json") and entry.file_size > MAX_JSON_BYTES:
            raise ModelRefused(
                f"{uri}: its {entry.filename} expands to {entry.file_size / 2**20:,.0f} MiB "
                "(a model's config is kilobytes); refused"
            )
    total = sum(e.file_size for e in entries)
    if total > MAX_MODEL_BYTES:
        raise ModelRefused(f"{uri}: expands to {total / 2**30:,.1f} GiB; refused")


def _check_signature(model: Any, uri: str) -> None:
    """32x32 RGB images in, one probability per CIFAR-10 class out."""
    try:
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError):
        raise ModelRefused(f"{uri}: not a single-input, single-output Keras model") from None
    if inputs[1:] != (32, 32, 3) or outputs[1:] != (10,):
        raise ModelRefused(
            f"{uri}: takes {inputs[1:]} and gives {outputs[1:]}; a CIFAR-10 classifier "
            "takes (32, 32, 3) images and gives 10 class probabilities"
        )


def evaluate_model(reference: str | None, cfg: Config) -> Evaluation:
    """A model reference on the test set of `cfg.data` (loss, accuracy, per-class accuracy,
    confusion matrix), logged as an `evaluate` MLflow run when tracking is on."""
    from cifar_exp import runs
    from cifar_exp.data import load_cifar10
    from cifar_exp.tracking import run, run_tags
    from cifar_exp.train import evaluate

    model, uri = load_model(reference, cfg)
    splits = load_cifar10(cfg.data)
    if not cfg.tracking.enabled:
        result = evaluate(model, splits.x_test, splits.y_test)
    else:
        experiment_id = setup(cfg.tracking)
        tags = {**run_tags(cfg), "evaluates": uri, "data.sha256": splits.info["sha256"]}
        with run("evaluate", experiment_id, tags=tags):
            result = runs.evaluate_and_log(model, splits)
    result.model = uri
    return result
