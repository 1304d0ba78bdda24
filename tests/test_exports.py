"""Every package shows its API in `__init__.__all__`, and all of it imports (STYLE.md 1)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["runtime", "sandbox", "strategies", "evals", "training"])
def test_all_is_complete_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    for name in exported:
        assert getattr(module, name) is not None, f"{package}.{name}"
    public = {name for name, value in vars(module).items()
              if not name.startswith("_") and getattr(value, "__module__", "").startswith(package)
              and not isinstance(value, type(importlib))}
    assert public <= set(exported), f"public but not in __all__: {sorted(public - set(exported))}"
