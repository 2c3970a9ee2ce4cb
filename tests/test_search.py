import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

from cifar_exp.config import ConfigError, compose, list_experiments, with_overrides
from cifar_exp.study.objective import objective
from cifar_exp.study.space import parse_space
from cifar_exp.study.storage import storage_url
from cifar_exp.study.sweep import sweep
from cifar_exp.tracking import tracking_uri

from .conftest import REPO


def runs(cfg):
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    exp = client.get_experiment_by_name(cfg.tracking.experiment_name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def load(cfg):
    return optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg))


# --------------------------------------------------------------------------- space


def test_space_from_config(cfg):
    space = {p.key: p for p in parse_space(cfg)}
    assert set(space) == {"optimizer.lr", "trainer.batch_size"}
    assert space["optimizer.lr"].log and space["optimizer.lr"].low == 1e-4
    assert space["trainer.batch_size"].choices == (32, 64, 128, 256)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+search.space.optimizer.lrr={type:float,low:0.1,high:1}",
            "no config key 'optimizer.lrr'",
        ),
        ("search.space.optimizer.lr.low=0.5", "needs low < high"),
        ("search.space.optimizer.lr.type=gaussian", "must be float, int or categorical"),
        ("search.space.trainer.batch_size.choices=[]", "non-empty `choices`"),
        ("search.space.optimizer.lr.low=0", "log scale needs low > 0"),
    ],
)
def test_bad_space_is_a_clear_error_before_anything_runs(overrides, override, message, workdir):
    cfg = compose([*overrides, override])
    with pytest.raises(ConfigError, match=r"search\.space"):
        sweep(cfg)
    with pytest.raises(ConfigError) as err:
        parse_space(cfg)
    assert message in str(err.value)
    assert not (workdir / "mlruns" / "optuna.db").exists()


def test_null_removes_a_space_entry(overrides):
    cfg = compose([*overrides, "search.space.optimizer.lr=null"])
    assert [p.key for p in parse_space(cfg)] == ["trainer.batch_size"]


# --------------------------------------------------------------------------- objective


def test_objective_with_a_fixed_trial(cfg):
    trial = optuna.trial.FixedTrial({"optimizer.lr": 0.02, "trainer.batch_size": 64})
    value = objective(trial, cfg, parse_space(cfg))
    assert 0.0 <= value <= 1.0
    _, found = runs(cfg)
    assert len(found) == 1
    run = found[0]
    assert run.data.params["optimizer.lr"] == "0.02"
    assert run.data.params["trainer.batch_size"] == "64"
    assert run.data.metrics["val_accuracy"] == pytest.approx(value)
    assert run.data.tags["optuna.state"] == "COMPLETE"


# --------------------------------------------------------------------------- studies


def test_tiny_study_records_parent_and_children_and_resumes(cfg):
    out = sweep(cfg)
    assert out.finished == 4 and out.counts == {"COMPLETE": 4}
    study = load(cfg)
    assert len(study.trials) == 4
    client, found = runs(cfg)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    # the trials' runs; the confirmation stage's seed runs are nested under them
    confirming = [r for r in found if "confirm.trial" in r.data.tags]
    children = [
        r
        for r in found
        if "mlflow.parentRunId" in r.data.tags and "confirm.trial" not in r.data.tags
    ]
    assert len(parents) == 1 and len(children) == 4
    trial_runs = {r.info.run_id for r in children}
    assert len(confirming) == 4  # tiny: the 2 best to 3 seeds each
    assert all(r.data.tags["mlflow.parentRunId"] in trial_runs for r in confirming)
    parent = parents[0]
    assert parent.info.run_id == out.parent_run_id == study.user_attrs["mlflow_parent_run_id"]
    assert parent.data.tags["optuna.study_name"] == "tiny"
    assert parent.data.tags["optuna.sampler"] == "tpe" and parent.data.tags["git_commit"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    files |= {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"trials.csv", "best_trial.json", "optuna/optimization_history.png"} <= files
    by_run = {r.info.run_id: r for r in children}
    for trial in study.trials:
        child = by_run[trial.user_attrs["mlflow_run_id"]]  # each side links to the other
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["optuna.trial_number"] == str(trial.number)
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]
        assert history[-1].value == pytest.approx(trial.value)
        assert float(child.data.params["optimizer.lr"]) == pytest.approx(
            trial.params["optimizer.lr"]
        )
    # the same command again adds nothing
    again = sweep(cfg)
    assert again.finished == 4 and len(load(cfg).trials) == 4
    assert len(runs(cfg)[1]) == 1 + 4 + 4
    # a larger n_trials only adds the missing trials, with new suggestions
    more = sweep(with_overrides(cfg, {"search.n_trials": 5}))
    trials = load(cfg).trials
    assert more.finished == 5 and len(trials) == 5
    assert trials[4].params != trials[0].params


def test_failed_and_diverged_trials_are_recorded_and_the_study_goes_on(cfg, monkeypatch):
    """In the sweep process (isolate_trials=false), where the training can be patched."""
    cfg = with_overrides(
        cfg,
        {
            "search.n_trials": 2,
            "model.max_norm": None,
            "optimizer.momentum": 0.0,
            "search.isolate_trials": False,
        },
    )
    import cifar_exp.study.objective as objective_mod

    real = objective_mod.runs.train_tracked
    calls = {"n": 0}

    def flaky(trial_cfg, *args, **kwargs):
        """First trial: an absurd learning rate (NaN loss); second: an error; then real."""
        calls["n"] += 1
        if calls["n"] == 1:
            return real(with_overrides(trial_cfg, {"optimizer.lr": 1e6}), *args, **kwargs)
        if calls["n"] == 2:
            raise RuntimeError("disk full (simulated)")
        return real(trial_cfg, *args, **kwargs)

    monkeypatch.setattr(objective_mod.runs, "train_tracked", flaky)
    out = sweep(cfg)
    assert out.finished == 2
    states = [t.state.name for t in load(cfg).trials]
    assert states.count("FAIL") == 2 and states.count("COMPLETE") == 2
    failed = [t for t in load(cfg).trials if t.state.name == "FAIL"]
    reasons = " ".join(t.user_attrs.get("fail_reason", "") for t in failed)
    assert "loss became" in reasons and "disk full" in reasons
    _, found = runs(cfg)
    diverged = [r for r in found if "loss became" in r.data.tags.get("failure_reason", "")]
    assert len(diverged) == 1 and diverged[0].info.status == "FAILED"


def test_trial_processes_that_diverge_or_die_are_recorded(cfg):
    """Isolated trials: a diverging training and a trial process killed mid-trial both end as
    FAIL with their reason, and their runs end FAILED with it."""
    import multiprocessing as mp

    from cifar_exp.study.progress import NullReporter

    class KillTheTrialProcess(NullReporter):
        def epoch_ended(self, number, epoch, epochs, logs):
            for child in mp.active_children():
                if child.name == "cifar-exp-trial":
                    os.kill(child.pid, signal.SIGKILL)

    once = {"search.n_trials": 1, "search.max_failures": 1, "model.max_norm": None}
    diverging = with_overrides(
        cfg,
        {
            **once,
            "search.study_name": "diverges",
            "optimizer.momentum": 0.0,
            "search.space": {"optimizer": {"lr": {"type": "categorical", "choices": [1e6]}}},
        },
    )
    killed = with_overrides(cfg, {**once, "search.study_name": "killed"})
    assert sweep(diverging).stopped == "1 trial failed in a row"
    assert sweep(killed, KillTheTrialProcess()).stopped == "1 trial failed in a row"
    client, _ = runs(cfg)
    for study_cfg, reason in (
        (diverging, "TrainingDiverged: loss became"),
        (killed, "trial process died (exit code -9)"),
    ):
        (trial,) = load(study_cfg).trials
        assert trial.state.name == "FAIL"
        assert trial.user_attrs["fail_reason"].startswith(reason)
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert run.data.tags["failure_reason"].startswith(reason)


@pytest.mark.slow
def test_memory_stays_flat_across_trials(cfg):
    """The sweep process does not grow with the number of trials (each trains in its own
    process); trained in-process, Keras keeps about 45 MiB per trial."""
    from cifar_exp.study.progress import NullReporter

    def rss_mib():
        with open("/proc/self/status") as fh:
            line = next(ln for ln in fh if ln.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    class Rss(NullReporter):
        seen: list = []

        def trial_ended(self, trial, progress):
            self.seen.append(rss_mib())

    reporter = Rss()
    over = {"search.n_trials": 8, "tracking.log_model": False, "search.confirm.top_k": 0}
    out = sweep(with_overrides(cfg, over), reporter)
    assert out.finished == 8
    growth = reporter.seen[-1] - reporter.seen[1]  # after warm-up (imports, first plots)
    print("sweep-process RSS after each trial (MiB):", [round(m) for m in reporter.seen])
    assert growth < 60, f"sweep process grew {growth:.0f} MiB over 6 trials: {reporter.seen}"


def test_pruning_stops_the_trial_after_epoch_1(cfg):
    cfg = with_overrides(
        cfg,
        {
            "search.n_trials": 2,
            "trainer.epochs": 3,
            "search.pruner.name": "threshold",
            "search.pruner.lower": 1.1,
            "search.pruner.n_warmup_steps": 0,
        },
    )
    out = sweep(cfg)
    assert out.counts == {"PRUNED": 2}
    client, _ = runs(cfg)
    for trial in load(cfg).trials:
        assert trial.user_attrs["pruned_at_epoch"] == 1 and trial.user_attrs["epochs_run"] == 1
        assert list(trial.intermediate_values) == [1]
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == "PRUNED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_runs_in_tiny_mode(name, cifar_tarball, workdir):
    cfg = compose(
        [
            f"experiment={name}",
            f"data.path={cifar_tarball}",
            f"tracking.dir={workdir / 'mlruns'}",
            f"data.cache_dir={workdir}",
            "data.val_size=100",
            "data.limit_train=200",
            "data.limit_test=100",
            "trainer.epochs=1",
            "search.n_trials=1",
            "tracking.log_model=false",
        ]
    )
    if name == "seed_epochs":  # keep its grid but make its points tiny
        cfg = compose(
            [
                *(f"{k}={v}" for k, v in []),
                f"experiment={name}",
                f"data.path={cifar_tarball}",
                f"tracking.dir={workdir / 'mlruns'}",
                f"data.cache_dir={workdir}",
                "data.limit_train=200",
                "data.limit_test=100",
                "search.n_trials=1",
                "search.space.trainer.epochs.choices=[1,2,3]",
                "tracking.log_model=false",
            ]
        )
    out = sweep(cfg)
    assert out.finished == 1
    if name == "seed_epochs":
        from cifar_exp.report import report

        md = report(cfg, workdir / "reports").markdown.read_text()
        assert "Replication of the reference study" in md and "| 30 | 0.734 |" in md


# --------------------------------------------------------------------------- crash safety


def _interruptible():
    """In the child before exec: SIGINT as in a terminal (a disposition or mask inherited from
    the test process, e.g. left by a library, would make Ctrl-C tests meaningless)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _cli(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_exp", "sweep", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
        **kwargs,
    )


def _wait_for_running_trial(cfg, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.5)
        try:
            study = load(cfg)
        except Exception:
            continue
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        running = [
            t for t in study.trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
        ]
        if done and running:
            time.sleep(0.3)  # inside its epochs
            return {t.number: t.value for t in done}, running[0].number
    raise AssertionError("no trial started in time")


def _descendants(pid):
    """Process ids below `pid` (children, grandchildren...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def _wait_gone(pids, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes left running after the sweep died: {alive}")


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(overrides):
    args = [
        *overrides,
        "search.n_trials=3",
        "search.heartbeat_interval=1",
        "trainer.epochs=12",
        "tracking.log_model=false",
        "search.confirm.top_k=0",
    ]
    cfg = compose(args)
    proc = _cli(args)
    done_before, killed = _wait_for_running_trial(cfg)
    trainers = _descendants(proc.pid)
    assert trainers, "the trial runs in a child process"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait_gone(trainers)  # no orphan goes on training the killed trial
    time.sleep(3)  # the killed trial's heartbeat goes stale (grace: 2 x 1 s)
    second = _cli(args)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    study = load(cfg)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and "RUNNING" not in states
    assert study.trials[killed].state.name == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].params == study.trials[killed].params
    for number, value in done_before.items():
        assert study.trials[number].value == value
    client, found = runs(cfg)
    assert not [r for r in found if r.info.status == "RUNNING"]
    killed_run = client.get_run(study.trials[killed].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED"
    assert "no heartbeat" in killed_run.data.tags["failure_reason"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(overrides):
    args = [
        *overrides,
        "search.n_trials=3",
        "trainer.epochs=6",
        "tracking.log_model=false",
        "search.confirm.top_k=0",
    ]
    cfg = compose(args)
    print("test process SIGINT:", signal.getsignal(signal.SIGINT))  # diagnosis if it fails
    proc = _cli(args)
    _, interrupted = _wait_for_running_trial(cfg)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    assert "Traceback" not in output
    study = load(cfg)
    assert study.trials[interrupted].state.name == "FAIL"
    client, found = runs(cfg)
    assert not [r for r in found if r.info.status == "RUNNING"]
    run = client.get_run(study.trials[interrupted].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert os.path.exists(storage_url(cfg).removeprefix("sqlite:///"))
    assert study.trials[interrupted].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    assert f"trial {interrupted} was interrupted" in output
    # the interrupted trial's parameters are queued and run first when the study resumes
    queued = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(queued) == 1 and queued[0].params == study.trials[interrupted].params
    assert queued[0].system_attrs["failed_trial"] == interrupted
    assert "fail_reason" not in queued[0].user_attrs
    again = _cli(args)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert "resuming study" in output
    study = load(cfg)
    retry = study.trials[queued[0].number]
    assert retry.state.name == "COMPLETE" and retry.params == study.trials[interrupted].params
    assert "fail_reason" not in retry.user_attrs
