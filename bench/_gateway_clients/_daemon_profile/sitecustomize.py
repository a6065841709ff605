"""Profiles the daemon that `bench/gateway_throughput.py --profile-dir` starts.

The benchmark runs the real `python -m kimaki`, whose command line it does not change; with
`--profile-dir` it puts this directory on the daemon's PYTHONPATH, so Python imports this module
at start-up and the daemon's main thread is profiled for its whole run (start-up included) into
the file `KIMAKI_BENCH_PROFILE` names, written when the daemon exits (the image it re-executes
at start, to drop the token from its environment, is the one profiled).
"""

from __future__ import annotations

import atexit
import cProfile
import os

_path = os.environ.get("KIMAKI_BENCH_PROFILE")
if _path:
    _profiler = cProfile.Profile()

    def _dump(path: str = _path) -> None:
        _profiler.disable()
        _profiler.dump_stats(path)

    atexit.register(_dump)
    _profiler.enable()
