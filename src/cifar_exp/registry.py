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


@dataclass(frozen=True)
class Registration:
    """A model version registered by a study: whether it became the champion, and which
    version was the champion before (None if there was none)."""

    name: str
    version: int
    champion: bool
    previous: int | None


def register_best(cfg: Config, run_id: str, value: float, study_name: str) -> Registration:
    """Register the model of `run_id` under `tracking.registered_model`; move the champion
    alias to it if it beats the current champion on the study metric."""
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
    better = previous is None or (
        value > float(previous.tags.get("value", "-inf"))
        if direction == "maximize"
        else value < float(previous.tags.get("value", "inf"))
    )
    if better and (previous is None or previous.version != version.version):
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return Registration(
        name=name,
        version=int(version.version),
        champion=better,
        previous=int(previous.version) if previous else None,
    )


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
        raise ModelNotFound(f"{uri}: not a loadable Keras model ({reason})") from None
    _check_signature(model, uri)
    return model


def _check_archive(path: Path, uri: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelNotFound(f"{uri}: not a loadable Keras model ({e})") from None
    for entry in entries:
        if entry.filename.endswith(".json") and entry.file_size > MAX_JSON_BYTES:
            raise ModelNotFound(
                f"{uri}: its {entry.filename} expands to {entry.file_size / 2**20:,.0f} MiB "
                "(a model's config is kilobytes); refused"
            )
    total = sum(e.file_size for e in entries)
    if total > MAX_MODEL_BYTES:
        raise ModelNotFound(f"{uri}: expands to {total / 2**30:,.1f} GiB; refused")


def _check_signature(model: Any, uri: str) -> None:
    """32x32 RGB images in, one probability per CIFAR-10 class out."""
    try:
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError):
        raise ModelNotFound(f"{uri}: not a single-input, single-output Keras model") from None
    if inputs[1:] != (32, 32, 3) or outputs[1:] != (10,):
        raise ModelNotFound(
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
