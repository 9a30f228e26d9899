"""`python -m tests.train.slow_save ARGS...`: `aiayn ARGS...` with every checkpoint write held
open for `$SLOW_SAVE_SECONDS` (default 2) after its weights are written and before its
trainer_state.json (which completes it), announced by a file `SAVING` in the run directory that
names the folder being written: so a test can kill the process in the middle of a write."""

from __future__ import annotations

import os
import sys
import time

from aiayn.cli import main
from aiayn.train import checkpoint

_write_weights = checkpoint._save_weights


def _slow_write(model, file):
    _write_weights(model, file)
    (file.parent.parent / "SAVING").write_text(file.parent.name)
    time.sleep(float(os.environ.get("SLOW_SAVE_SECONDS", "2")))


checkpoint._save_weights = _slow_write

if __name__ == "__main__":
    main(sys.argv[1:])
