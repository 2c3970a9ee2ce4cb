"""Loading a model by reference refuses what is not a CIFAR-10 classifier, and archives that
expand far beyond what a model holds, before Keras reads them."""

import tracemalloc
import zipfile

import keras
import pytest

from cifar_exp.config import compose
from cifar_exp.registry import ModelNotFound, load_model


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [((28, 28, 1), 10, r"takes \(28, 28, 1\)"), ((32, 32, 3), 5, r"gives \(5,\)")],
)
def test_a_model_that_is_not_a_cifar10_classifier_is_refused(tmp_path, shape, classes, message):
    inputs = keras.Input(shape)
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inputs))
    path = tmp_path / "other.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelNotFound, match=message):
        load_model(str(path), compose([]))


def test_a_cifar10_model_file_loads(model_file):
    model, source = load_model(str(model_file), compose([]))
    assert model.output_shape == (None, 10) and source.endswith("model.keras")


def test_a_keras_file_whose_config_expands_to_100_mib_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("config.json", "w") as fh:
            for _ in range(100):
                fh.write(b" " * 2**20)
        archive.writestr("metadata.json", "{}")
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ModelNotFound, match=r"config\.json expands to 100 MiB"):
            load_model(str(path), compose([]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB allocated"
