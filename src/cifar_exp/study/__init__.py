"""Optuna studies, one module per job, in the order a sweep uses them:

grammar.py        what is searched: `{type: ..}` entries and Hydra's sweep grammar, checked
space.py          the search space from config; sampler and pruner factories
storage.py        the study storage: URL, heartbeats, set-up lock, retries
trials.py         what a study's trials say: finished, by state, the best
progress.py       what a display is told while a study runs (the Reporter protocol)
objective.py      one trial: suggest -> tracked training (here or in a trial process)
trial_process.py  a trial's training in a child process, so memory stays flat
records.py        the study's parent run in MLflow
sweep.py          open or resume a study, the worker loop, the summary
"""
