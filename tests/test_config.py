import argparse
import subprocess
import sys

import pytest

from cifar_exp.config import ConfigError, compose, flatten, list_experiments, with_overrides


def test_defaults_are_the_reference_study():
    cfg = compose([])
    assert cfg.model.name == "seed_cnn"
    assert cfg.optimizer.name == "sgd"
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.decay == pytest.approx(0.01 / 25)
    assert cfg.trainer.batch_size == 32 and cfg.trainer.epochs == 10
    assert cfg.data.validation == "split" and cfg.data.val_size == 5000


def test_overrides_and_groups():
    cfg = compose(["optimizer=adam", "optimizer.lr=0.003", "trainer.epochs=3"])
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.003
    assert cfg.trainer.epochs == 3


def test_env_var_sets_data_path(monkeypatch, cifar_tarball):
    monkeypatch.setenv("CIFAR10_PATH", str(cifar_tarball))
    assert compose([]).data.path == str(cifar_tarball)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.translate=20", "trainer.translate: must be between 0 and 16"),
        ("trainer.alternate_flips=true", "trainer.alternate_flips: must be false without"),
        ("optimizer.end_factor=1.5", "optimizer.end_factor: must be in [0, 1]"),
        ("optimizer.start_factor=-0.1", "optimizer.start_factor: must be in [0, 1]"),
        ("experiment=airbench model.tta_shift=9", "model.tta_shift: must be between 0 and 8"),
        ("model=airbench model.whiten_bias_epochs=-1", "model.whiten_bias_epochs: must be >= 0"),
        ("model.tta_shift=1", "model.tta_shift: unknown config key"),
        ("optimizer.lr=0", "optimizer.lr: must be > 0"),
        ("optimizer.lr=-1", "optimizer.lr: must be > 0"),
        ("trainer.batch_size=0", "trainer.batch_size: must be >= 1"),
        (
            "trainer.input_threads=0",
            "trainer.input_threads: must be between 1 and 256 or null (got 0)",
        ),
        ("data.limit_train=3", "data.limit_train: must be >= 10 or null (got 3)"),
        ("trainer.epochs=0", "trainer.epochs: must be >= 1"),
        ("trainer.epochs=ten", "trainer.epochs: Value 'ten'"),
        ("data.path=/no/such/cifar.tar.gz", "data.path: no such file or folder"),
        ("data.nope=1", "data.nope: unknown config key"),
        ("+data.nope=1", "data.nope: unknown config key"),
        ("trainer.precision=fp8", "trainer.precision: Invalid value 'fp8'"),
        ("model=nope", "Could not find 'model/nope'"),
        ("experiment=nope", "Could not find 'experiment/nope'"),
        # values that would only fail deep inside a run
        ("optimizer.lr=inf", "optimizer.lr: must be a finite number (got inf)"),
        ("optimizer.momentum=nan", "optimizer.momentum: must be a finite number"),
        ("search.space.optimizer.lr.high=inf", "search.space.optimizer.lr.high: must be a finite"),
        ("optimizer.lr=1e308", "optimizer.lr: must be below 3.4e38 (float32) (got 1e+308)"),
        ("trainer.batch_size=99999999999999999999", "trainer.batch_size: must be an integer of"),
        ("data.shuffle_buffer=99999999999999999999", "data.shuffle_buffer: must be an integer of"),
        ("trainer.steps_per_execution=10000000000000000000", "must be an integer of at most 63"),
        ("trainer.threads=100000", "trainer.threads: must be between 1 and 256 or null (got"),
        ("trainer.input_threads=257", "trainer.input_threads: must be between 1 and 256 or null"),
        ("trainer.seed=-1", "trainer.seed: must be between 0 and 4294967295"),
        ("trainer.seed=4294967296", "trainer.seed: must be between 0 and 4294967295"),
        ("data.split_seed=-5", "data.split_seed: must be between 0 and 4294967295"),
        ("data.path=" + "x" * 5000, "data.path: path too long (5000 characters)"),
        ("data.path=/dev/zero", "data.path: /dev/zero is not a regular file or a folder"),
        ("tracking.dir=/dev/null", "tracking.dir: /dev/null exists and is not a folder"),
        # names that become paths
        ("search.study_name=../../../../tmp/x", "search.study_name: must be 1-100 letters"),
        ("search.study_name=a/b", "search.study_name: must be 1-100 letters"),
    ],
)
def test_bad_config_is_one_clear_error(override, message):
    with pytest.raises(ConfigError) as err:
        compose(override.split())
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_fifo_as_data_path_is_refused_not_read(tmp_path):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file or a folder"):
        compose([f"data.path={fifo}"])  # reading it would block forever


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.lr=-1",
        "data.nope=1",
        "trainer.epochs=ten",
        "data.path=/no/such/file",
        "optimizer.lr=inf",
        "trainer.seed=-1",
        "search.study_name=../../../../tmp/x",
    ],
)
def test_cli_bad_override_exits_2_with_one_line(override):
    proc = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "train", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_help_and_cfg():
    out = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "train" in out.stdout and "example" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "optimizer.lr=" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "train", "-q", "--cfg", "optimizer.lr=0.05"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "lr: 0.05" in out.stdout


def test_every_experiment_composes():
    names = list_experiments()
    assert "tiny" in names
    for name in names:
        cfg = compose([f"experiment={name}"])
        assert cfg.experiment == name


def test_flatten_and_with_overrides():
    cfg = compose([])
    flat = flatten(cfg)
    assert flat["optimizer.lr"] == 0.01 and flat["trainer.batch_size"] == 32
    new = with_overrides(cfg, {"optimizer.lr": 0.2, "trainer.batch_size": 64})
    assert new.optimizer.lr == 0.2 and new.trainer.batch_size == 64
    assert cfg.optimizer.lr == 0.01  # the original is untouched
    with pytest.raises(ConfigError, match=r"optimizer\.nope: unknown config key"):
        with_overrides(cfg, {"optimizer.nope": 1})
    with pytest.raises(ConfigError, match=r"optimizer\.lr: must be > 0"):
        with_overrides(cfg, {"optimizer.lr": -0.1})


def test_credentials_are_masked_wherever_the_config_is_shown():
    from cifar_exp.config import mask, to_yaml

    url = "postgresql://optuna:s3cret@db.example:5432/studies"
    assert mask(url) == "postgresql://optuna:***@db.example:5432/studies"
    assert mask("sqlite:////tmp/x/optuna.db") == "sqlite:////tmp/x/optuna.db"
    cfg = compose([f"search.storage={url}", "tracking.uri=http://me:pw@mlflow:5000"])
    assert cfg.search.storage == url  # the real value is still used to connect
    shown = to_yaml(cfg) + str(flatten(cfg))
    assert "s3cret" not in shown and ":pw@" not in shown
    assert "optuna:***@db.example" in shown and "me:***@mlflow" in shown


def test_jit_compile_from_the_command_line():
    """Hydra reads `true` as a bool; the string-typed key must still accept it."""
    from cifar_exp.config import compose

    assert compose(["trainer.jit_compile=true"]).trainer.jit_compile == "true"
    assert compose(["trainer.jit_compile=auto"]).trainer.jit_compile == "auto"


def test_every_help_fits_an_80_column_terminal(monkeypatch):
    from cifar_exp.__main__ import COMMANDS, _parser

    monkeypatch.setenv("COLUMNS", "80")
    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {"": parser.format_help()} | {n: subs.choices[n].format_help() for n in COMMANDS}
    wide = [(n, ln) for n, text in helps.items() for ln in text.splitlines() if len(ln) > 80]
    assert not wide


def test_an_experiment_outside_the_folder_is_one_whole_line():
    """(The line ended in Hydra's "Config search path:", the list that followed cut off.)"""
    with pytest.raises(ConfigError) as err:
        compose(["experiment=../config"])
    assert str(err.value).startswith("In 'experiment/../config': Could not find")
    assert "search path" not in str(err.value)
