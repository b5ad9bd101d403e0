"""An init method for the sweep tests, loaded by import path (``tests.sweep_methods:CrashOnMarkedSeed``).

It is peft's default LoRA init, except that while the file named by ``$INITBENCH_TEST_CRASH_MARKER``
exists, its seed-1 run kills its own process with SIGKILL, as the kernel's out-of-memory killer
would: nothing Python can catch, so the run cannot record its own failure.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from initbench.api import InitMethod

MARKER = "INITBENCH_TEST_CRASH_MARKER"


class CrashOnMarkedSeed(InitMethod):
    summary = "test only: LoRA, but seed 1 dies of SIGKILL while the marker file exists"

    def initialize(self, model, ctx) -> None:
        marker = os.environ.get(MARKER)
        if ctx.seed == 1 and marker and Path(marker).exists():
            os.kill(os.getpid(), signal.SIGKILL)


LOG = "INITBENCH_TEST_RUN_LOG"
SLEEP = "INITBENCH_TEST_SLEEP"


class SlowLogged(InitMethod):
    summary = (
        "test only: LoRA that appends '<seed> <pid>' to $INITBENCH_TEST_RUN_LOG and sleeps $INITBENCH_TEST_SLEEP s"
    )

    def initialize(self, model, ctx) -> None:
        import time

        with open(os.environ[LOG], "a") as log:
            log.write(f"{ctx.seed} {os.getpid()}\n")
        time.sleep(float(os.environ.get(SLEEP, "1")))
