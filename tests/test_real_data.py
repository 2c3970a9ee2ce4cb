"""Training on a small stratified subset of the real CIFAR-10 (skipped where it is absent)."""

import pytest

from cifar_exp.config import compose
from cifar_exp.data import load_cifar10
from cifar_exp.train import train

from .conftest import SHARED_CIFAR


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED_CIFAR.exists(), reason=f"real CIFAR-10 copy not found at {SHARED_CIFAR}"
)
def test_real_subset_beats_chance(tmp_path):
    cfg = compose(
        [
            f"data.path={SHARED_CIFAR}",
            f"data.cache_dir={tmp_path}",
            "data.limit_train=3000",
            "data.val_size=1000",
            "data.limit_test=1000",
            "trainer.epochs=3",
            "trainer.batch_size=32",
            "tracking=none",
        ]
    )
    splits = load_cifar10(cfg.data)
    assert (len(splits.y_train), len(splits.y_val)) == (3000, 1000)
    result = train(cfg, splits, verbose="0")
    assert result.history["val_accuracy"][-1] > 0.2  # chance is 0.1
    assert result.test.accuracy > 0.2
