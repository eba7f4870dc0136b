"""Benchmarks of mbrl_ros: each ``bench/bench_<name>.py`` measures one thing and writes its own
section of BENCHMARKS.md (``bench/_report.py``). Run them as modules from the repository root,
``.venv/bin/python -m bench.bench_<name> [--help]``; they import ``mbrl_ros`` (installed) and
each other as a package, never ``test/``."""
