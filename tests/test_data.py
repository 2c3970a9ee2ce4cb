import io
import os
import pickle
import tarfile
import time
from types import SimpleNamespace

import numpy as np
import pytest

from cifar_exp import cifar_files, data
from cifar_exp.data import DataError, load_cifar10, read_source, stratified_indices

from .conftest import synthetic_batch, write_cifar


def data_cfg(path, cache, **kw):
    base = dict(
        path=str(path) if path else None,
        cache_dir=str(cache),
        validation="split",
        val_size=200,
        limit_train=None,
        limit_test=None,
        split_seed=0,
        shuffle_buffer=None,
    )
    return SimpleNamespace(**{**base, **kw})


def test_tarball_and_folder_give_the_same_arrays(cifar_tarball):
    x_tr, y_tr, x_te, y_te = read_source(cifar_tarball)
    assert x_tr.shape == (800, 32, 32, 3) and x_tr.dtype == np.uint8
    assert x_te.shape == (200, 32, 32, 3) and y_te.shape == (200,)
    assert set(np.unique(y_tr)) == set(range(10))
    x2, y2, _, _ = read_source(cifar_tarball.parent / "cifar-10-batches-py")
    np.testing.assert_array_equal(x_tr, x2)
    np.testing.assert_array_equal(y_tr, y2)
    x3, *_ = read_source(cifar_tarball.parent)  # the folder above cifar-10-batches-py too
    np.testing.assert_array_equal(x_tr, x3)


def test_pixels_follow_the_official_layout(tmp_path):
    # row = 1024 red, 1024 green, 1024 blue values, row-major
    batch = synthetic_batch(10, np.random.default_rng(1))
    x, _ = cifar_files._decode(batch, "test")
    row = batch[b"data"][3]
    assert x[3, 0, 0, 0] == row[0] and x[3, 0, 0, 1] == row[1024] and x[3, 0, 0, 2] == row[2048]
    assert x[3, 0, 1, 0] == row[1] and x[3, 1, 0, 0] == row[32]


def test_splits_are_stratified_seeded_and_disjoint(cifar_tarball, tmp_path):
    s = load_cifar10(data_cfg(cifar_tarball, tmp_path, limit_train=300, limit_test=100))
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (300, 200, 100)
    for y, n in ((s.y_train, 300), (s.y_val, 200), (s.y_test, 100)):
        assert np.all(np.bincount(y, minlength=10) == n // 10)
    again = load_cifar10(data_cfg(cifar_tarball, tmp_path, limit_train=300, limit_test=100))
    np.testing.assert_array_equal(s.x_val, again.x_val)
    # validation images never appear in training
    train_rows = {r.tobytes() for r in s.x_train}
    assert not any(r.tobytes() in train_rows for r in s.x_val)
    assert s.info["sha256"] and s.info["n_train"] == 300


def test_validation_on_test_set_reproduces_the_reference(cifar_tarball, tmp_path):
    s = load_cifar10(data_cfg(cifar_tarball, tmp_path, validation="test"))
    assert len(s.y_train) == 800
    np.testing.assert_array_equal(s.x_val, s.x_test)


def test_stratified_indices_keeps_class_shares():
    labels = np.repeat(np.arange(10), [50] * 5 + [150] * 5)
    idx = stratified_indices(labels, 100, np.random.default_rng(0))
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.sum() == 100 and len(set(idx)) == 100
    assert list(counts) == [5] * 5 + [15] * 5


def test_second_load_comes_from_the_cache(cifar_tarball, tmp_path, monkeypatch):
    cfg = data_cfg(cifar_tarball, tmp_path / "cache")
    first = load_cifar10(cfg)
    (cached,) = (tmp_path / "cache").glob("cifar10-*")
    assert sorted(f.name for f in cached.iterdir()) == [
        "sha256",
        "x_test.npy",
        "x_train.npy",
        "y_test.npy",
        "y_train.npy",
    ]

    def boom(_):
        raise AssertionError("source decoded again")

    monkeypatch.setattr(data, "read_source", boom)
    second = load_cifar10(cfg)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert second.info["sha256"] == first.info["sha256"]
    # in memory and writable, not views of the read-only memory-mapped cache
    for a in (second.x_train, second.y_train, second.x_val, second.x_test, second.y_test):
        assert type(a) is np.ndarray and a.flags.writeable


def test_a_damaged_cache_is_rebuilt(cifar_tarball, tmp_path, caplog, monkeypatch):
    cfg = data_cfg(cifar_tarball, tmp_path / "cache", validation="test")
    first = load_cifar10(cfg)
    (cached,) = (tmp_path / "cache").glob("cifar10-*")
    (cached / "x_train.npy").write_bytes((cached / "x_train.npy").read_bytes()[:1000])
    second = load_cifar10(cfg)
    assert "ignoring unreadable cache" in caplog.text
    np.testing.assert_array_equal(first.x_train, second.x_train)
    caplog.clear()

    def boom(_):
        raise AssertionError("source decoded again")

    monkeypatch.setattr(data, "read_source", boom)
    third = load_cifar10(cfg)  # the rebuilt cache is whole again
    assert "ignoring unreadable cache" not in caplog.text
    np.testing.assert_array_equal(first.x_train, third.x_train)
    # the test set read once, as the validation set (train.py relies on it)
    assert third.x_val is third.x_test and third.y_val is third.y_test


def test_the_cache_folder_is_made_with_the_umask(cifar_tarball, tmp_path):
    old = os.umask(0o022)
    try:
        load_cifar10(data_cfg(cifar_tarball, tmp_path / "cache"))
    finally:
        os.umask(old)
    (cached,) = (tmp_path / "cache").glob("cifar10-*")
    assert cached.stat().st_mode & 0o777 == 0o755  # others can read a shared cache


def test_what_earlier_caches_left_is_removed_and_nothing_else(cifar_tarball, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    old_format = cache / "cifar10-0123456789abcdef.npz"
    killed = cache / "cifar10-0123456789abcdef.41.0badf00d.tmp"
    writing = cache / "cifar10-fedcba9876543210.42.0badf00d.tmp"  # another process, now
    theirs = cache / "cifar10-mine.npz"
    for path in (killed, writing):
        path.mkdir()
        (path / "x_train.npy").write_bytes(b"partial")
    old_format.write_bytes(b"old")
    theirs.write_bytes(b"a file the user keeps here")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))
    load_cifar10(data_cfg(cifar_tarball, cache))
    assert not old_format.exists() and not killed.exists()
    assert writing.is_dir() and theirs.read_bytes() == b"a file the user keeps here"


def test_a_folder_in_the_caches_way_is_reported_not_trusted(
    cifar_tarball, tmp_path, caplog, monkeypatch
):
    cfg = data_cfg(cifar_tarball, tmp_path / "cache")
    first = load_cifar10(cfg)
    (cached,) = (tmp_path / "cache").glob("cifar10-*")
    for f in cached.iterdir():
        f.unlink()
    (cached / "notes.txt").write_text("not a cache")
    # a folder that cannot be removed (another user's, say): its contents stay, the rename fails
    monkeypatch.setattr(data.shutil, "rmtree", lambda *a, **k: None)
    second = load_cifar10(cfg)
    assert "could not cache" in caplog.text and "not a readable cache" in caplog.text
    np.testing.assert_array_equal(first.x_train, second.x_train)


def test_a_cache_of_the_wrong_shape_is_not_trusted(cifar_tarball, tmp_path, caplog):
    cfg = data_cfg(cifar_tarball, tmp_path / "cache")
    first = load_cifar10(cfg)
    (cached,) = (tmp_path / "cache").glob("cifar10-*")
    np.save(cached / "y_train.npy", np.zeros(3, np.int64))
    second = load_cifar10(cfg)
    assert "ignoring unreadable cache" in caplog.text
    np.testing.assert_array_equal(first.y_train, second.y_train)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/cifar_exp_pwned",))


def _tar_with(tmp_path, name, payload):
    root = tmp_path / "evil"
    tarball = write_cifar(root)
    folder = root / "cifar-10-batches-py"
    (folder / name).write_bytes(payload)
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    assert tarball.exists()
    return out


def test_crafted_pickle_is_refused(tmp_path):
    payload = pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)
    evil = _tar_with(tmp_path, "data_batch_3", payload)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 batch \(refused global"):
        read_source(evil)
    assert not os.path.exists("/tmp/cifar_exp_pwned")


def test_truncated_archive_names_the_file(cifar_tarball, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    raw = cifar_tarball.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: truncated or corrupt archive"):
        read_source(cut)


def test_truncated_batch_and_bad_labels_name_the_file(tmp_path):
    good = pickle.dumps(synthetic_batch(20, np.random.default_rng(0)), protocol=2)
    with pytest.raises(DataError, match="test_batch: corrupt or truncated pickle"):
        read_source(_tar_with(tmp_path / "a", "test_batch", good[: len(good) // 2]))
    bad = synthetic_batch(20, np.random.default_rng(0))
    bad[b"labels"][0] = 12
    with pytest.raises(DataError, match=r"data_batch_1: labels must be integers in 0\.\.9"):
        read_source(_tar_with(tmp_path / "b", "data_batch_1", pickle.dumps(bad, protocol=2)))
    short = synthetic_batch(20, np.random.default_rng(0))
    short[b"data"] = short[b"data"][:, :100]
    with pytest.raises(DataError, match="data_batch_2: data has rows of 100 values"):
        read_source(_tar_with(tmp_path / "c", "data_batch_2", pickle.dumps(short, protocol=2)))


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tarball" * 10)
    with pytest.raises(DataError, match=r"junk\.tar\.gz"):
        read_source(junk)
    with pytest.raises(DataError, match="missing CIFAR-10 batch files"):
        read_source(tmp_path)


def test_dataset_scales_to_unit_range_and_batches():
    x = np.full((10, 32, 32, 3), 255, np.uint8)
    y = np.arange(10)
    ds = data.make_dataset(x, y, 4, shuffle=True, seed=0)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert batches[0][0].dtype == np.float32 and batches[0][0].max() == pytest.approx(1.0)
    assert sorted(np.concatenate([b[1] for b in batches])) == list(range(10))


@pytest.mark.parametrize("pad", [4, 2])
def test_augmentation_crops_and_flips_each_image_on_its_own(pad):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    out = data.augment_batch(tf.constant(x), tf.constant([1, 2], tf.int64), pad=pad).numpy()
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
    offsets = set()
    for i in range(len(x)):  # every output is one 32x32 window of its own padded image
        found = [
            (dy, dx, flip)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if np.array_equal(
                out[i], (padded[i, dy : dy + 32, dx : dx + 32])[:, :: -1 if flip else 1]
            )
        ]
        assert found, f"image {i} is not a crop of its padded self"
        offsets.add(found[0])
    assert len(offsets) > 10  # offsets and flips differ per image


def test_augmented_dataset_changes_each_epoch_and_repeats_per_seed():
    x = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    y = np.arange(16) % 10

    def epochs(ds, n=2):
        it = iter(ds.repeat(n))
        return [np.concatenate([next(it)[0] for _ in range(2)]) for _ in range(n)]

    a = epochs(data.make_dataset(x, y, 8, shuffle=False, seed=3, augment=True))
    b = epochs(data.make_dataset(x, y, 8, shuffle=False, seed=3, augment=True))
    assert not np.array_equal(a[0], a[1])  # new crops every epoch
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))  # same seed, same
    _, labels = next(iter(data.make_dataset(x, y, 8, shuffle=False, seed=0, one_hot=True)))
    assert labels.shape == (8, 10) and labels.numpy().sum() == 8


def test_pipeline_keeps_to_its_own_threads_with_the_same_batches():
    """`threads`: a private pool, one thread per op (off the training step's shared pool),
    and the same shuffled, augmented batches as on TensorFlow's shared pool."""
    x = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10

    def pipeline(threads):
        return data.make_dataset(x, y, 8, shuffle=True, seed=5, augment=True, threads=threads)

    own, shared = pipeline(1), pipeline(None)
    assert own.options().threading.private_threadpool_size == 1
    assert own.options().threading.max_intra_op_parallelism == 1
    assert not shared.options().threading.private_threadpool_size
    for a, b in zip(own.repeat(2), shared.repeat(2), strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_pipelines_run_without_tf_datas_autotuning_thread():
    """The autotuning model's thread sleeps between rounds whose gaps double, and destroying
    the iterator at the end of `fit` waited for it to wake: up to 5 s per 20-s training
    (docs/benchmarks.md). Every pipeline `make_dataset` builds (training, validation, test
    pass) is built without it, with the same batches."""
    import tensorflow as tf

    x = np.random.default_rng(3).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10
    pipelines = [
        data.make_dataset(x, y, 8, shuffle=True, seed=5, augment=True),
        data.make_dataset(x, y, 8, shuffle=False, seed=0, threads=1),
    ]
    for ds in pipelines:
        assert ds.options().autotune.enabled is False
    tuned = tf.data.Options()
    tuned.autotune.enabled = True
    again = data.make_dataset(x, y, 8, shuffle=True, seed=5, augment=True).with_options(tuned)
    for a, b in zip(pipelines[0].repeat(2), again.repeat(2), strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_alternating_flips_show_each_image_both_ways_in_two_epochs():
    """airbench's flips: a random half flipped once, then all flipped in odd epochs."""
    from cifar_exp.callbacks import EpochCounter

    x = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = np.arange(64) % 10
    flipped_x, epoch = data.alternating_flips(x, seed=0)
    mirrored = np.array([not np.array_equal(a, b) for a, b in zip(x, flipped_x, strict=True)])
    assert 16 < mirrored.sum() < 48 and np.array_equal(flipped_x[mirrored], x[mirrored, :, ::-1])
    ds = data.make_dataset(
        flipped_x, y, 64, shuffle=False, seed=0, augment=True, translate=0, epoch=epoch
    )
    counter = EpochCounter(epoch)
    seen = []
    for e in range(3):
        counter.on_epoch_begin(e)
        seen.append((next(iter(ds))[0].numpy() * 255).round().astype(np.uint8))
    assert np.array_equal(seen[0], flipped_x) and np.array_equal(seen[2], flipped_x)
    assert np.array_equal(seen[1], flipped_x[:, :, ::-1])


def test_official_download_goes_through_keras_cache(monkeypatch, tmp_path, cifar_tarball):
    calls = {}

    def fake_get_file(fname, origin, file_hash):
        calls.update(fname=fname, origin=origin, file_hash=file_hash)
        return str(cifar_tarball)

    import keras.utils

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    s = load_cifar10(data_cfg(None, tmp_path))
    assert calls["origin"] == data.OFFICIAL_URL and calls["file_hash"] == data.OFFICIAL_SHA256
    assert len(s.y_train) == 600


def test_unpickler_only_allows_numpy_arrays():
    with pytest.raises(pickle.UnpicklingError):
        cifar_files._BatchUnpickler(io.BytesIO(pickle.dumps(_Evil())), encoding="bytes").load()


# --------------------------------------------------------------------------- bounded memory


def _bomb_tar(path, member_size, gzip=True):
    """A tar whose batch member declares `member_size` bytes of zeros (tiny when gzipped)."""

    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = member_size
    with tarfile.open(path, "w:gz" if gzip else "w", compresslevel=1) as tar:
        tar.addfile(info, io.BufferedReader(Zeros(member_size), 1 << 20))
    return path


def test_a_member_that_expands_far_beyond_a_batch_is_refused_before_reading(tmp_path):
    """A gzip of a few hundred KB whose batch member expands to 300 MiB: refused from its
    header, and nothing near its size is ever allocated."""
    import tracemalloc

    bomb = _bomb_tar(tmp_path / "bomb.tar.gz", 300 * 2**20)
    assert bomb.stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"data_batch_1: 300 MiB is not a CIFAR-10 batch"):
            read_source(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


def test_a_member_whose_header_declares_gigabytes_is_refused(tmp_path):
    """A 3 GiB member declared in a header with nothing behind it (as a sparse member is):
    refused from the header, at once."""
    info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    info.size = 3 * 2**30
    path = tmp_path / "sparse.tar"
    path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    with pytest.raises(DataError, match=r"test_batch: 3,072 MiB is not a CIFAR-10 batch"):
        read_source(path)


def test_an_oversized_batch_file_in_a_folder_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*data.TRAIN_BATCHES, data.TEST_BATCH):
        (folder / name).write_bytes(b"")
    with open(folder / "data_batch_4", "wb") as fh:
        fh.truncate(100 * 2**20)  # sparse on disk: declares 100 MiB
    with pytest.raises(DataError, match=r"data_batch_4: 100 MiB is not a CIFAR-10 batch"):
        read_source(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello\n", bytes(range(256)) * 40])
def test_a_file_that_is_no_archive_is_one_line(tmp_path, content):
    """(tarfile's message listed each method it tried, one line each.)"""
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_source(path)
    assert "\n" not in str(e.value)
    assert "not a tar archive, plain or compressed with gzip, bzip2 or xz" in str(e.value)
