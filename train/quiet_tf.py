"""TensorFlow's start-up lines, held back so a command's first words are its own.

TensorFlow 2.21 logs "oneDNN custom operations are on" through absl before absl's logging is set up, so
TF_CPP_MIN_LOG_LEVEL cannot hide it; on some CPUs (AVX-512 with AMX, as here) it comes twice, with absl's
own warning each time. Four lines before a one-line error make it a five-line one. `install()` (done by
`train/__init__.py`, before any module of ours can load TensorFlow) wraps its first import: while it loads,
the process's stderr goes through a pipe, and every line but these passes on at once, so an import that
fails or aborts still shows all it said.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # its INFO lines (the CPU's instruction sets), which it can hide

CHATTER = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                     rb"|I\d{4} .*\] oneDNN custom operations are on\. .*)$")


def _pass_on(read_end: int, to: int) -> None:
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not CHATTER.match(line.rstrip(b"\n")):
                os.write(to, line)


class _Quiet(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.finder.done = True
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr to guard
            return self._exec(module)
        # TensorFlow's own lines are a few hundred bytes: far from filling the pipe while its C++ start-up
        # holds the GIL and the relay cannot read
        read_end, write_end = os.pipe()
        relay = threading.Thread(target=_pass_on, args=(read_end, saved), daemon=True)
        relay.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            self._exec(module)
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer closes: the relay drains it and ends
            relay.join()
            os.close(saved)

    def _exec(self, module):
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader


class _FirstImport(importlib.abc.MetaPathFinder):
    def __init__(self, module: str):
        self.module, self.done, self.looking = module, False, False

    def find_spec(self, name, path=None, target=None):
        # stays in sys.meta_path (another thread may be walking it) and wraps until the module is loaded: a mere
        # probe (importlib.util.find_spec) loads nothing and must not use it up
        if self.done or self.looking or name != self.module:
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.looking = False
        if spec is not None and spec.loader is not None:
            spec.loader = _Quiet(spec.loader, self)
        return spec


def install(module: str = "tensorflow") -> None:
    """Before `module` is first imported; a no-op once it is, or if already installed for it."""
    if module not in sys.modules and not any(getattr(f, "module", None) == module for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport(module))


def caught(module: str = "tensorflow") -> bool:
    """Whether `module` was loaded through the wrapper (it was imported after `install`)."""
    return any(getattr(f, "module", None) == module and f.done for f in sys.meta_path)
