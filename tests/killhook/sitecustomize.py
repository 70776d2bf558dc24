"""Loaded at start-up by a Python process with this folder on PYTHONPATH (tests only): when KITPKG_TEST_KILL_AT is
set, the fold trainers kitpkg.train.cv builds carry kill_at.KillAt, so a real `kitpkg cv` (or notebook kernel) dies
by SIGKILL at that point. Nothing is imported until kitpkg.train.cv is."""
import importlib.util
import os
import sys


class _OnImport:
    """Installs the kill into kitpkg.train.cv right after that module runs."""

    def find_spec(self, name, path=None, target=None):
        if name != "kitpkg.train.cv":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            from kill_at import KILL_VAR, install

            install(module, os.environ[KILL_VAR])

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("KITPKG_TEST_KILL_AT"):
    sys.meta_path.insert(0, _OnImport())
