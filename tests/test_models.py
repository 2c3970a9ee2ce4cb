import numpy as np
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
    assert {"FusedBatchNormalization", "Add", "GlobalMaxPooling2D"} <= kinds
    assert model.output_shape == (None, 10)
    wider = build_model(compose(["model=resnet_small", "model.width=16"]).model)
    assert wider.count_params() < model.count_params() / 3


def test_flip_tta_averages_the_mirror_and_survives_save_and_load(tmp_path):

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


def test_shift_tta_is_airbenchs_six_views_and_survives_save_and_load(tmp_path):
    from cifar_exp.models import with_shift_tta
    from cifar_exp.registry import load_model

    cfg = compose(["model=resnet_small", "model.width=8", "model.tta=true"])
    flip = build_model(cfg.model)
    assert with_shift_tta(cfg.model, flip) is flip  # tta_shift 0: nothing added
    cfg = compose(["model=airbench", "model.width=8", "model.tta=true", "model.tta_shift=1"])
    flip = build_model(cfg.model)
    model = with_shift_tta(cfg.model, flip)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    views = [flip.predict(v, verbose=0) for v in (x, padded[:, :32, :32], padded[:, 2:, 2:])]
    expected = 0.5 * views[0] + 0.25 * (views[1] + views[2])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded, _ = load_model(str(tmp_path / "m.keras"), cfg)  # safe mode
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def _smooth_images(n: int = 48) -> np.ndarray:
    """Images whose neighbouring pixels are strongly correlated, as in natural images."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
    noise = rng.normal(0, 8, (n, 32, 32, 3))
    return np.clip(coarse.repeat(4, 1).repeat(4, 2) + noise, 0, 255).astype(np.uint8)


def test_whitening_filters_decorrelate_the_images_patches():
    from cifar_exp.models.airbench import CIFAR_MEAN, CIFAR_STD, whitening_filters

    images = _smooth_images()
    kernel = whitening_filters(images, eps=5e-4)
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])
    x = (images / 255.0 - CIFAR_MEAN) / CIFAR_STD
    patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    out = patches @ kernel.reshape(12, 24)[:, :12]
    cov = out.T @ out / len(out)
    # raw patches are far from white: neighbouring pixels nearly equal
    raw = patches.T @ patches / len(patches)
    assert abs(raw[0, 3]) > 0.5 * raw[0, 0]
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)
    assert np.all(np.diag(cov) <= 1 + 1e-4) and np.diag(cov).max() > 0.99


def test_airbench_is_whitened_identity_initialised_and_saves(tmp_path):
    from cifar_exp.models.airbench import whitening_filters
    from cifar_exp.registry import load_model

    images = _smooth_images()
    cfg = compose(["model=airbench", "model.tta=true"])
    model = build_model(cfg.model, images=images)
    inner = model.get_layer("flip_tta").inner
    assert inner.count_params() == 1_973_944
    whiten = inner.get_layer("whiten")
    assert not whiten.trainable
    np.testing.assert_allclose(np.asarray(whiten.kernel), whitening_filters(images), atol=1e-6)
    convs = [
        layer
        for layer in inner.layers
        if layer.__class__.__name__ == "Conv2D" and layer.kernel_size == (3, 3)
    ]
    assert [c.filters for c in convs] == [64, 64, 256, 256, 256, 256]
    for conv in convs:
        k = np.asarray(conv.kernel)
        n = min(k.shape[2], k.shape[3])
        identity = np.zeros((3, 3, k.shape[2], n), np.float32)
        identity[1, 1, np.arange(n), np.arange(n)] = 1
        assert np.array_equal(k[:, :, :, :n], identity)  # the rest stays random
        assert k.shape[3] == n or np.abs(k[:, :, :, n:]).max() > 0
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded, _ = load_model(str(tmp_path / "m.keras"), cfg)  # safe mode: our layers registered
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("affine", [False, True])
def test_fused_batch_norm_is_keras_batch_norm_in_one_kernel(dtype, affine, tmp_path):
    import keras
    import tensorflow as tf

    from cifar_exp.models.layers import FusedBatchNormalization

    rng = np.random.default_rng(0)
    # variance 0.25 against epsilon 0.05: a wrong epsilon shows in the outputs
    x = tf.constant(rng.normal(2.0, 0.5, (8, 5, 5, 16)).astype(np.float32))
    weights = tf.constant(rng.normal(size=(8, 5, 5, 16)).astype(np.float32))
    kw = dict(momentum=0.6, epsilon=0.05, center=affine, scale=affine, dtype=dtype)
    ours, keras_own = FusedBatchNormalization(**kw), keras.layers.BatchNormalization(**kw)
    for layer in (ours, keras_own):
        layer.build(x.shape)
        if affine:
            layer.gamma.assign(np.linspace(0.5, 1.5, 16).astype(np.float32))
            layer.beta.assign(np.linspace(-1, 1, 16).astype(np.float32))

    def as_float(values):
        return [np.asarray(tf.cast(v, "float32")) for v in values]

    def compare(a, b):
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=2e-2, atol=3e-2)
        for got, expected in zip(as_float(a), as_float(b), strict=True):
            np.testing.assert_allclose(got, expected, **tol)

    got = {}
    for name, layer in (("ours", ours), ("keras", keras_own)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        got[name] = [y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)]
    assert len(got["ours"]) == (7 if affine else 5)
    compare(got["ours"], got["keras"])
    # the fused kernel computed it in both modes, not Keras's fallback
    for training in (True, False):
        graph = tf.function(lambda t, tr=training: ours(t, training=tr))
        ops = graph.get_concrete_function(x).graph.get_operations()
        assert "FusedBatchNormV3" in {op.type for op in ops}
    # frozen, it normalises with the moving averages even in training, and keeps them
    averages = as_float([ours.moving_mean, ours.moving_variance])
    for layer in (ours, keras_own):
        layer.trainable = False
    compare([ours(x, training=True)], [keras_own(x, training=True)])
    kept = as_float([ours.moving_mean, ours.moving_variance])
    for now, before in zip(kept, averages, strict=True):
        np.testing.assert_array_equal(now, before)
    # saved and loaded in safe mode, moving averages included
    model = keras.Sequential([keras.Input((5, 5, 16)), ours])
    model.save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras", safe_mode=True)
    assert isinstance(loaded.layers[0], FusedBatchNormalization)
    np.testing.assert_array_equal(loaded.layers[0].moving_variance, ours.moving_variance)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # where the kernel does not apply (2-D inputs), Keras's own layer runs
    flat = FusedBatchNormalization()
    rows = tf.reshape(x, (8, -1))
    expected = keras.layers.BatchNormalization()(rows, training=True)
    np.testing.assert_allclose(flat(rows, training=True), expected, rtol=1e-4, atol=1e-4)
