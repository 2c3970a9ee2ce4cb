"""Hydra's sweep grammar for search spaces (study/grammar.py): on the command line of `sweep`
and in a search config's `params`, each form becomes the Optuna distribution Hydra's Optuna
sweeper would make; a bad expression is one line and exit 2; other commands refuse it."""

import shutil
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cifar_exp.__main__ import main
from cifar_exp.config import ConfigError, compose, conf_dir
from cifar_exp.study.grammar import command_config
from cifar_exp.study.space import Param, parse_space
from cifar_exp.study.storage import storage_url

from .conftest import REPO

HYDRA_STYLE = [
    "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
    "trainer.batch_size=choice(32, 64, 128, 256)",
    "trainer.epochs=range(5, 30, step=5)",
]


def distributions(space: list[Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    """What Optuna records for one trial that suggests every parameter of `space`."""
    study = optuna.create_study()
    trial = study.ask()
    for p in space:
        p.suggest(trial)
    return dict(trial.distributions)


@pytest.mark.parametrize(
    "override, key, expected",
    [
        (HYDRA_STYLE[0], "optimizer.lr", FloatDistribution(1e-4, 0.1, log=True)),
        (HYDRA_STYLE[1], "trainer.batch_size", CategoricalDistribution((32, 64, 128, 256))),
        # Hydra's Optuna sweeper includes the end of a range
        (HYDRA_STYLE[2], "trainer.epochs", IntDistribution(5, 30, step=5)),
        ("trainer.epochs=range(2, 9, step=3)", "trainer.epochs", IntDistribution(2, 8, step=3)),
        ("trainer.epochs=int(interval(2, 6))", "trainer.epochs", IntDistribution(2, 6)),
        (
            "trainer.batch_size=tag(log, int(interval(16, 256)))",
            "trainer.batch_size",
            IntDistribution(16, 256, log=True),
        ),
        ("model.conv_dropout=interval(0, 0.5)", "model.conv_dropout", FloatDistribution(0, 0.5)),
        (
            "model.conv_dropout=range(0.1, 0.5, step=0.1)",
            "model.conv_dropout",
            FloatDistribution(0.1, 0.5, step=0.1),
        ),
        # a float bound makes a range float, as in Hydra's sweeper
        (
            "optimizer.lr=range(1, 2.5, step=0.5)",
            "optimizer.lr",
            FloatDistribution(1, 2.5, step=0.5),
        ),
        ("optimizer.lr=0.01,0.1", "optimizer.lr", CategoricalDistribution((0.01, 0.1))),
        (
            "optimizer.nesterov=choice(true, false)",
            "optimizer.nesterov",
            CategoricalDistribution((True, False)),
        ),
        (
            "optimizer.schedule=choice(constant, onecycle)",
            "optimizer.schedule",
            CategoricalDistribution(("constant", "onecycle")),
        ),
    ],
)
def test_each_form_becomes_its_optuna_distribution(override, key, expected, overrides):
    cfg = command_config("sweep", [*overrides, override, "optimizer.decay=0"])
    got = distributions(parse_space(cfg))
    assert got[key] == expected
    # the configured space's other entries stay; the override replaced its own key only
    assert set(got) == {"optimizer.lr", "trainer.batch_size", key}


def test_grammar_and_type_form_give_the_same_study_space(overrides):
    typed = compose(
        [*overrides, "+search.space.trainer.epochs={type: int, low: 5, high: 30, step: 5}"]
    )
    grammar = command_config("sweep", [*overrides, *HYDRA_STYLE])
    assert parse_space(grammar) == parse_space(typed)
    assert distributions(parse_space(grammar)) == distributions(parse_space(typed))


@pytest.fixture()
def conf(tmp_path, monkeypatch):
    """A copy of conf/ that a test may add search configs to."""
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    monkeypatch.setenv("CIFAR_EXP_CONF", str(conf))
    return conf


def test_a_search_config_in_yaml_with_params(overrides, conf):
    (conf / "search" / "hydra_style.yaml").write_text(
        "defaults:\n  - lr_batch\n  - _self_\n\nstudy_name: hydra_style\n"
        "params:\n"
        '  optimizer.lr: "tag(log, interval(1e-4, 1e-1))"\n'
        "  trainer.batch_size: choice(32, 64, 128, 256)\n"  # unquoted: YAML reads a string
        "  trainer.epochs: range(5, 30, step=5)\n"
    )
    from_yaml = command_config("sweep", [*overrides, "search=hydra_style"])
    assert distributions(parse_space(from_yaml)) == {
        "optimizer.lr": FloatDistribution(1e-4, 0.1, log=True),
        "trainer.batch_size": CategoricalDistribution((32, 64, 128, 256)),
        "trainer.epochs": IntDistribution(5, 30, step=5),
    }
    assert parse_space(from_yaml) == parse_space(
        command_config("sweep", [*overrides, *HYDRA_STYLE])
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        ('"range(5, 1)"', "needs start < stop"),
        ('"interval(1,"', "no viable alternative"),
        ("10", "is one value, not a search"),
        ('"choice(1, 2)"', "no config key 'trainer.epoch'"),
    ],
)
def test_a_bad_yaml_entry_names_where_it_is_written(entry, message, overrides, conf):
    key = "trainer.epoch" if "no config key" in message else "trainer.epochs"
    (conf / "search" / "bad.yaml").write_text(f"params:\n  {key}: {entry}\n")
    with pytest.raises(ConfigError, match=rf"^search\.params\.{key}: ") as e:
        command_config("sweep", [*overrides, "search=bad"])
    assert message in str(e.value)


def test_a_plain_override_on_sweep_fixes_the_value_for_every_trial(overrides):
    cfg = command_config("sweep", [*overrides, "optimizer.lr=0.05"])
    assert cfg.optimizer.lr == 0.05
    assert [p.key for p in parse_space(cfg)] == ["trainer.batch_size"]
    # the last word wins, as everywhere on Hydra's command line
    cfg = command_config(
        "sweep", [*overrides, "optimizer.lr=0.05", "optimizer.lr=interval(0.01, 1)"]
    )
    assert Param("optimizer.lr", "float", low=0.01, high=1.0) in parse_space(cfg)


def test_fixing_every_searched_key_leaves_nothing_to_search(overrides):
    with pytest.raises(ConfigError, match="nothing to search"):
        command_config("sweep", [*overrides, "optimizer.lr=0.05", "trainer.batch_size=64"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=choice()", "empty choice"),
        ("optimizer.lr=interval(1)", "missing a required argument: 'end'"),
        ("trainer.epochs=range(5, 1)", "needs start < stop"),
        ("optimizer.lr=interval(0.1, 0.01)", "needs start < end"),
        ("optimizer.lr=tag(foo, interval(1,2))", "unknown tag 'foo'"),
        ("optimizer.lrr=interval(0.1, 1)", "no config key 'optimizer.lrr'"),
        ("trainer.epochs=interval(1, 5)", "is an integer"),
        ("optimizer.lr=tag(log, interval(0, 1))", "log scale needs low > 0"),
        ("trainer.epochs=tag(log, range(1, 9, step=2))", "log scale takes no step"),
        ("optimizer.lr=choice([0.1], [0.2])", "a choice is a number"),
        ("model=choice(seed_cnn, resnet_small)", "a section or a list"),
        ("optimizer.lr=interval(0.1,", "no viable alternative"),
        # values the key cannot take: refused before any trial, not failing every trial
        ("trainer.batch_size=choice(a, b)", "'a' cannot be set (trainer.batch_size: Value"),
        ("trainer.batch_size=choice(64, -32)", "-32 cannot be set (trainer.batch_size: must"),
        ("optimizer.lr=interval(0.1, inf)", "inf cannot be set (optimizer.lr: must be a fin"),
        ("=1", "no config key before '='"),  # Hydra's loader raised a ValueError on it
    ],
)
def test_a_bad_expression_is_one_line_and_exit_2(override, message, overrides, capsys):
    assert main(["sweep", *overrides, override, "--cfg"]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no config printed: it failed before
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert override in lines[0]  # it names what was typed


def test_a_bad_expression_through_the_real_command_line(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "sweep", "trainer.epochs=range(5, 1)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.epochs=range(5, 1): range(start, stop) needs start < stop (got 5, 1)"
    ]


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["report", "tiny"]])
def test_other_commands_refuse_a_sweep_expression(command, overrides, capsys):
    assert main([*command, *overrides, "optimizer.lr=choice(0.01, 0.1)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "python -m cifar_exp sweep 'optimizer.lr=choice(0.01, 0.1)'" in err[0]
    assert f"give {command[0]} one value" in err[0]


def test_the_printed_config_records_the_search_as_typed(overrides, capsys):
    assert main(["sweep", *overrides, *HYDRA_STYLE, "--cfg"]) == 0
    printed = capsys.readouterr().out
    assert "optimizer.lr: tag(log, interval(1e-4, 1e-1))" in printed
    assert "trainer.epochs: range(5, 30, step=5)" in printed


@pytest.mark.slow
def test_a_tiny_sweep_written_in_the_grammar(overrides):
    from cifar_exp.study.sweep import sweep

    cfg = command_config(
        "sweep",
        [
            *overrides,
            "search.n_trials=2",
            "search.confirm.top_k=0",
            "search.isolate_trials=false",
            "trainer.epochs=choice(1, 2)",
            "optimizer.lr=tag(log, interval(0.01, 0.1))",
            "trainer.batch_size=64",
        ],
    )
    sweep(cfg)
    study = optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 2
    for t in finished:
        assert t.distributions == {
            "trainer.epochs": CategoricalDistribution((1, 2)),
            "optimizer.lr": FloatDistribution(0.01, 0.1, log=True),
        }


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.space.optimizer.lr.high=abc", "optimizer.lr.high: must be a number (got 'abc')"),
        ("search.space.trainer.batch_size.choices=[16,x]", "'x' cannot be set"),
    ],
)
def test_a_space_entry_the_key_cannot_take_is_refused(override, message, overrides):
    with pytest.raises(ConfigError, match=r"^search\.space\.") as e:
        command_config("sweep", [*overrides, override])
    assert message in str(e.value)


@pytest.mark.parametrize(
    "extra",
    [
        # a float range never draws its end: momentum < 1 holds for every trial
        ["optimizer.momentum=interval(0.5, 1.0)"],
        ["trainer.label_smoothing=interval(0.0, 1.0)"],
        # pairs of searched keys are judged together, in either order on the command line
        ["trainer.epochs=range(4,8)", "trainer.stop_after=range(2,4)"],
        ["trainer.stop_after=range(2,4)", "trainer.epochs=range(4,8)"],
    ],
)
def test_a_space_every_trial_of_which_can_run_is_accepted(extra, overrides):
    command_config("sweep", [*overrides, *extra])


def test_a_value_no_searched_pair_can_take_is_still_refused(overrides):
    with pytest.raises(ConfigError, match=r"^trainer\.stop_after=range\(2,9\): 9 cannot be set"):
        command_config(
            "sweep", [*overrides, "trainer.epochs=range(4,8)", "trainer.stop_after=range(2,9)"]
        )
