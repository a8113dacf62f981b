"""Inject one failure into a real entry point run, so the error boundary's tests run the real stage.

On ``PYTHONPATH`` (only tests/test_error_boundary.py puts this directory there):

- ``VLA_TEST_FAULT=<module>:<function>:<kind>`` makes ``<function>`` of ``<module>`` raise when it is called
  (wrapped as the module is imported, before the stage script binds the name). ``<kind>``: ``MemoryError``
  (the host), ``torch_oom`` (``torch.OutOfMemoryError`` with CUDA's own text), ``RuntimeError`` (a bug);
- ``VLA_TEST_WRITE_FAULT=<ENOSPC|EACCES>:<substring>`` makes ``Path.write_text``/``write_bytes`` of a path
  containing ``<substring>`` fail as a full disk (or a denied permission) fails the real write.
"""

import errno
import importlib.abc
import importlib.util
import os
import pathlib
import sys

_FAULT = os.environ.get("VLA_TEST_FAULT")
_WRITE_FAULT = os.environ.get("VLA_TEST_WRITE_FAULT")


def _error(kind: str) -> BaseException:
    if kind == "MemoryError":
        return MemoryError()
    if kind == "torch_oom":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total "
                                      "capacity; 77.50 GiB already allocated)")
    return RuntimeError("injected bug")


class _RaiseIn(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, function: str, kind: str):
        self.module, self.function, self.kind = module, function, kind

    def find_spec(self, name, path, target=None):
        if name != self.module:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)

            def raising(*args, **kwargs):
                raise _error(self.kind)

            setattr(module, self.function, raising)

        spec.loader.exec_module = exec_module
        return spec


def _failing_writes(code: int, substring: str) -> None:
    for name in ("write_text", "write_bytes"):
        original = getattr(pathlib.Path, name)

        def write(self, *args, _original=original, **kwargs):
            if substring in str(self):
                raise OSError(code, os.strerror(code), str(self)) if code != errno.EACCES else \
                    PermissionError(code, os.strerror(code), str(self))
            return _original(self, *args, **kwargs)

        setattr(pathlib.Path, name, write)


if _FAULT:
    sys.meta_path.insert(0, _RaiseIn(*_FAULT.split(":")))
if _WRITE_FAULT:
    _code, _substring = _WRITE_FAULT.split(":", 1)
    _failing_writes(getattr(errno, _code), _substring)
