"""Robot-task experiments of mbrl_ros (learning curves, non-stationarity, model error; docs/experiments.md).

Run each as a module from the repository root, e.g. ``.venv/bin/python -m experiments.learning_curves --help``.
Shared machinery: :mod:`experiments.common`; the job runner: :mod:`experiments.jobs`.
"""
