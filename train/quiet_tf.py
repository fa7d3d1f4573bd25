"""TensorFlow's start-up lines, held back so a command's first words are its own.

TensorFlow 2.21 logs "oneDNN custom operations are on" through absl before absl's logging is set up, so
TF_CPP_MIN_LOG_LEVEL cannot hide it; on some CPUs (AVX-512 with AMX, as here) it comes twice, with absl's
own warning each time. Four lines before a one-line error make it a five-line one. `install()` (done by
`train.errors`, which every command imports) wraps the first import of tensorflow: the process's stderr goes to a
file while it loads, then every line of it but these is written back. An import that fails is shown whole.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the rest of the start-up chatter, which it can hide

CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                     r"|I\d{4} .*\] oneDNN custom operations are on\. .*)$")


class _Quiet(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as held:
            os.dup2(held.fileno(), 2)
            failed = True
            try:
                self.loader.exec_module(module)
                failed = False
                module.__loader__ = module.__spec__.loader = self.loader
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                lines = held.read().decode(errors="replace").splitlines(keepends=True)
                kept = lines if failed else [line for line in lines if not CHATTER.match(line.rstrip("\n"))]
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _FirstImport(importlib.abc.MetaPathFinder):
    def __init__(self, module: str):
        self.module = module

    def find_spec(self, name, path=None, target=None):
        if name != self.module:
            return None
        sys.meta_path.remove(self)  # once: what tensorflow imports below it is found the usual way
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Quiet(spec.loader)
        return spec


def install(module: str = "tensorflow") -> None:
    """Before `module` is first imported; a no-op once it is, or if already installed for it."""
    if module not in sys.modules and not any(getattr(f, "module", None) == module for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport(module))
