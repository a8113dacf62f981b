"""Faults put into a real entry point's process, so tests run the real stage or command. Only the tests
put this directory on ``PYTHONPATH`` (conftest.run_killed_before_step, tests/test_error_boundary.py,
tests/test_store.py); each fault is off unless its variable is set:

- ``VLA_TEST_SIGKILL_AT_STEP=k``: a process that imports ``vla_pipeline.train.trainer`` SIGKILLs its whole
  process group (``dvc repro`` included, as a user's Ctrl-\\ or an OOM killer would) when the training loop
  is about to run step ``k``: steps before it, and their checkpoints, are complete. ``VLA_TEST_SIGNAL=INT``
  sends that process a Ctrl-C instead. Other processes (``dvc`` itself) never import the module;
- ``VLA_TEST_FAULT=<module>:<function>:<kind>``: ``<function>`` of ``<module>`` raises when called.
  ``<kind>``: ``MemoryError`` (the host), ``torch_oom`` (``torch.OutOfMemoryError`` with CUDA's own
  text), ``RuntimeError`` (a bug);
- ``VLA_TEST_WRITE_FAULT=<ENOSPC|EACCES>:<substring>``: ``Path.write_text``/``write_bytes`` of a path
  containing ``<substring>`` fail as a full disk (or a denied permission) fails the real write.

A function is replaced as its module is imported, before a stage script binds the name.
"""

import errno
import importlib.abc
import importlib.util
import os
import pathlib
import signal
import sys


class _ReplaceOnImport(importlib.abc.MetaPathFinder):
    """Once ``module`` is imported, its ``function`` becomes ``wrap(original)``."""

    def __init__(self, module: str, function: str, wrap):
        self.module, self.function, self.wrap = module, function, wrap

    def find_spec(self, name, path, target=None):
        if name != self.module:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            setattr(module, self.function, self.wrap(getattr(module, self.function)))

        spec.loader.exec_module = exec_module
        return spec


def _kill_before(step: int, how: str):
    def wrap(run_step):
        def run_step_or_die(*args, **kwargs):  # run_step(trainer, batch, step)
            if args[-1] == step and how == "INT":
                # as in a terminal: a background job (CI under nohup, `make ... &`) starts with SIGINT
                # ignored, and Python then installs no KeyboardInterrupt handler
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.kill(os.getpid(), signal.SIGINT)
            elif args[-1] == step:
                os.killpg(os.getpgrp(), signal.SIGKILL)
            return run_step(*args, **kwargs)
        return run_step_or_die
    return wrap


def _error(kind: str) -> BaseException:
    if kind == "MemoryError":
        return MemoryError()
    if kind == "torch_oom":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total "
                                      "capacity; 77.50 GiB already allocated)")
    return RuntimeError("injected bug")


def _raise(kind: str):
    def wrap(original):
        def raising(*args, **kwargs):
            raise _error(kind)
        return raising
    return wrap


def _failing_writes(code: int, substring: str) -> None:
    for name in ("write_text", "write_bytes"):
        original = getattr(pathlib.Path, name)

        def write(self, *args, _original=original, **kwargs):
            if substring in str(self):
                raise OSError(code, os.strerror(code), str(self)) if code != errno.EACCES else \
                    PermissionError(code, os.strerror(code), str(self))
            return _original(self, *args, **kwargs)

        setattr(pathlib.Path, name, write)


if os.environ.get("VLA_TEST_SIGKILL_AT_STEP"):
    sys.meta_path.insert(0, _ReplaceOnImport("vla_pipeline.train.trainer", "run_step", _kill_before(
        int(os.environ["VLA_TEST_SIGKILL_AT_STEP"]), os.environ.get("VLA_TEST_SIGNAL", "KILL"))))
if os.environ.get("VLA_TEST_FAULT"):
    _module, _function, _kind = os.environ["VLA_TEST_FAULT"].split(":")
    sys.meta_path.insert(0, _ReplaceOnImport(_module, _function, _raise(_kind)))
if os.environ.get("VLA_TEST_WRITE_FAULT"):
    _code, _substring = os.environ["VLA_TEST_WRITE_FAULT"].split(":", 1)
    _failing_writes(getattr(errno, _code), _substring)
