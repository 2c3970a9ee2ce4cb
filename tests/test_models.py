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


def test_flip_tta_averages_the_mirror_and_survives_save_and_load(tmp_path):
    import numpy as np

    from cifar_exp.registry import load_model

    cfg = compose(["model=resnet_small", "model.width=8", "model.tta=true"])
    model = build_model(cfg.model)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    inner = model.get_layer("flip_tta").inner
    expected = (inner.predict(x, verbose=0) + inner.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded, _ = load_model(str(tmp_path / "m.keras"), cfg)  # safe mode
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
