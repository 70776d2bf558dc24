"""A session budget: a run that would outlive its session pauses in good order before the end, and continues later.

Free sessions end: Kaggle's about 12 h after they start (9 h on a TPU), a run cut there keeps nothing it had not
published. `train.time_limit` (config.py parses it) says how long after the session's start the run must be paused;
null/auto takes the platform's default (kitpkg/env.py: Kaggle's session less a margin; none on Colab or locally).
The pause (`SessionBudget`) happens at an optimizer step: a complete resumable checkpoint, the fold left "running",
later folds not started; the run writes what is finished, prints how to continue and exits 0, so a Kaggle "Save
Version" keeps its output, which a later session attaches as input (kitpkg/notebook/restore.py continues from it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import env
from ..config import Config

output_limit_bytes = env.output_limit_bytes  # the run directory's ceiling on this platform (None: none known)


def session_limit_s(config: Config, environ: Mapping[str, str] = os.environ, now: Optional[float] = None,
                    proc: Path = Path("/proc")) -> Optional[float]:
    """Seconds left for this run before it must pause (train.time_limit, else the platform's default, counted from
    the session's start where the platform has one, else from `now`); None: no limit."""
    now = time.time() if now is None else now
    platform = env.detect_platform(environ)
    limit = config.train.time_limit
    if limit is None:  # auto: the platform's session, less the time the pause itself needs
        length = env.session_length_s(platform, environ)
        limit = None if length is None else length - env.KAGGLE_MARGIN_S
    if not limit:  # off (0), or no default on this platform
        return None
    start = env.session_start(platform, now, environ, proc)
    return max(0.0, limit - (now - start if start is not None else 0.0))
