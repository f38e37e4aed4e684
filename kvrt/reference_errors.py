"""kvrt's errors, also the reference's: ``except key_value.aio.errors.InvalidTTLError`` catches kvrt's.

Code written against py-key-value catches its errors by class, and ``except`` matches by
inheritance only. So where py-key-value-aio is installed, each kvrt error class gets the
reference's class of the same name as a second base (``KeyValueError`` gets ``BaseKeyValueError``).
kvrt never imports the reference for this: importing it costs a tenth of a second, and most
programs never do. If it is already imported, kvrt joins its tree at once; if it is installed but
not imported, a finder waits for ``key_value.aio.errors`` to be imported and joins the tree then;
if it is not installed, nothing happens at all.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import MutableMapping, Sequence
from types import ModuleType
from typing import Any

REFERENCE = "key_value.aio.errors"
_RENAMED = {"KeyValueError": "BaseKeyValueError"}


def join_when_imported(errors: MutableMapping[str, Any]) -> None:
    """Join kvrt's error classes (``errors``, the module's namespace) to the reference's, now or on its import."""
    module = sys.modules.get(REFERENCE)
    if module is not None:
        join(errors, module)
        return
    try:
        installed = importlib.util.find_spec("key_value") is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        sys.meta_path.insert(0, _Finder(errors))


def join(errors: MutableMapping[str, Any], reference: ModuleType) -> None:
    """Give each kvrt error class the reference's class of the same name as a further base, parents first."""
    root = errors["_Root"]
    classes = [cls for cls in errors.values() if isinstance(cls, type) and issubclass(cls, root) and cls is not root]
    for cls in sorted(classes, key=lambda cls: len(cls.__mro__)):  # a parent's bases change before its children's
        theirs = getattr(reference, _RENAMED.get(cls.__name__, cls.__name__), None)
        if isinstance(theirs, type) and issubclass(theirs, BaseException) and not issubclass(cls, theirs):
            cls.__bases__ = (*cls.__bases__, theirs)


class _Finder(importlib.abc.MetaPathFinder):
    """Waits for the reference's errors module to be imported, then joins kvrt's errors to it."""

    def __init__(self, errors: MutableMapping[str, Any]) -> None:
        self._errors = errors
        self._looking = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Find the reference's errors module with the other finders, and wrap its loader."""
        if fullname != REFERENCE or self._looking:
            return None
        self._looking = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._looking = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Joining(spec.loader, self)
        return spec

    def joined(self, module: ModuleType) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        join(self._errors, module)


class _Joining(importlib.abc.Loader):
    """The reference's own loader, joining kvrt's errors to the module once it has run."""

    def __init__(self, loader: importlib.abc.Loader, finder: _Finder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """Create the module as its own loader would."""
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run the module as its own loader would, then join kvrt's errors to its classes."""
        self._loader.exec_module(module)
        self._finder.joined(module)
