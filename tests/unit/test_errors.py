"""The one error tree: every exception class of chatcore lives in ``chatcore.errors``, and its docstring draws them all."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import chatcore
from chatcore import errors
from chatcore.errors import ChatError


def _chatcore_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(chatcore.__path__, "chatcore.")]


def test_no_exception_class_is_defined_outside_errors():
    outside = []
    for name in _chatcore_modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException) and name != "chatcore.errors":
                outside.append(f"{name}.{cls_name}")
    assert outside == []


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    direct: list[type] = cls.__subclasses__()
    for sub in direct:
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_exception_of_errors_is_a_chat_error():
    defined = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__]
    assert all(issubclass(cls, ChatError) for cls in defined)


def test_the_docstring_draws_the_whole_tree():
    """Each line ``<branches> Name  description`` sits one level (4 columns) under its parent."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    assert errors.__doc__ is not None
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s+(?:[│├└─ ]*))([A-Z]\w+)\b", line)
        if match is None:
            continue
        column = len(match.group(1))
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((column, match.group(2)))
    classes = {cls.__name__: cls for cls in _subclasses(ChatError)} | {"ChatError": ChatError}
    assert set(parents) == set(classes)
    for name, parent in parents.items():
        expected = classes[name].__bases__[0]
        assert (parent is None and expected is Exception) or expected.__name__ == parent, name
