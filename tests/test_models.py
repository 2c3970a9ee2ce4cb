import pytest

from cifar_exp.config import compose
from cifar_exp.models import available, build_model


def test_seed_cnn_is_the_reference_architecture():
    model = build_model(compose([]).model)
    assert model.count_params() == 4_210_090
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32]
    assert all(c.kernel_constraint.max_value == 3.0 for c in convs)
    assert model.output_shape == (None, 10)


def test_registry_names_the_choices():
    assert "seed_cnn" in available()
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model(type("Cfg", (), {"name": "nope"})())


def test_resnet_small_is_a_residual_bn_network():
    model = build_model(compose(["model=resnet_small"]).model)
    assert model.count_params() == 1_648_352
    kinds = {layer.__class__.__name__ for layer in model.layers}
    assert {"BatchNormalization", "Add", "GlobalMaxPooling2D"} <= kinds
    assert model.output_shape == (None, 10)
    wider = build_model(compose(["model=resnet_small", "model.width=16"]).model)
    assert wider.count_params() < model.count_params() / 3
