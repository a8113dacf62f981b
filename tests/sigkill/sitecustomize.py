"""Kill a training process at an exact step, so a killed-and-resumed test replays exactly.

On ``PYTHONPATH`` with ``VLA_TEST_SIGKILL_AT_STEP=k`` set, every Python process that imports
``vla_pipeline.train.trainer`` SIGKILLs its whole process group (``dvc repro`` included, as a user's
Ctrl-\\ or an OOM killer would) when the training loop is about to run step ``k``: steps before it,
and their checkpoints, are complete. Other processes (``dvc`` itself) never import the module and
are unaffected. Only the tests put this directory on the path.
"""

import importlib.abc
import importlib.util
import os
import signal
import sys

_STEP = os.environ.get("VLA_TEST_SIGKILL_AT_STEP")
_SIGNAL = os.environ.get("VLA_TEST_SIGNAL", "KILL")  # INT: a Ctrl-C to this process instead


class _KillBeforeStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "vla_pipeline.train.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            run_step = module.run_step

            def run_step_or_die(*args, **kwargs):
                if args[-1] == int(_STEP) and _SIGNAL == "INT":  # run_step(trainer, batch, step)
                    # as in a terminal: a background job (CI under nohup, `make ... &`) starts with SIGINT
                    # ignored, and Python then installs no KeyboardInterrupt handler
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    os.kill(os.getpid(), signal.SIGINT)
                elif args[-1] == int(_STEP):
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                return run_step(*args, **kwargs)

            module.run_step = run_step_or_die

        spec.loader.exec_module = exec_module
        return spec


if _STEP:
    sys.meta_path.insert(0, _KillBeforeStep())
