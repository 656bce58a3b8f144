"""The package surface: the torch-free layers import no torch, every package says what it holds, and no exported
name shadows a module of the same name."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import bsnas


@pytest.mark.parametrize("modules", ["bsnas.arch", "bsnas.arch.cost", "bsnas.arch.plan", "bsnas.arch.zoo",
                                     "bsnas.space", "bsnas.space.summary"])
def test_the_torch_free_layers_import_no_torch(modules):
    """`import bsnas.arch.cost` loaded torch through bsnas/__init__.py."""
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _packages():
    return [bsnas, *(importlib.import_module(info.name) for info in pkgutil.walk_packages(bsnas.__path__, "bsnas.")
                     if info.ispkg)]


@pytest.mark.parametrize("package", _packages(), ids=lambda package: package.__name__)
def test_every_package_has_a_docstring_and_an_all_that_shadows_no_module(package):
    assert package.__doc__ and package.__doc__.strip()
    assert package.__all__ and all(hasattr(package, name) for name in package.__all__)
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert not modules & set(package.__all__), f"{package.__name__} exports names of its own modules"
