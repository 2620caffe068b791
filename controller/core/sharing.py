"""Equal parts of parsed policies, kept once.

The loop keeps every parsed policy between cycles (see ``policyfile``), and a fleet of thousands of
rollouts is stamped from a few shapes: the same steps, guardrails naming the same templates with the
same bounds, the same variants and prose. Policy models are frozen, so parts equal in value can be
one object: a policy then costs little more than what is its own (its name, its flag key).

:class:`Parts` replaces, bottom-up, each model, list, dict and string of a freshly validated model by
the equal one it already holds. Only what the validation just produced or was given (JSON values are
the input's own lists and dicts) is changed, and only before anyone else sees it; a part it holds is
never changed. Two parts are equal when they have the same type and equal fields (floats by their
exact text, so that ``1``, ``1.0`` and ``True`` stay apart); a dict is shared only when its keys are
strings, and only values of types whose equal values read the same (not datetimes: two time zones).
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")

MAX_PARTS = 200_000  # past this many, the table starts afresh (parts already shared stay shared)


class Parts:
    """``own``: model types whose instances are one per policy by construction (they carry its name
    or flag key). Their fields are shared; they themselves are not held, which would cost a table
    entry for nothing."""

    def __init__(self, own: tuple[type[BaseModel], ...] = (), max_parts: int = MAX_PARTS) -> None:
        self.own = own
        self.max_parts = max_parts
        self._held: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self._held)

    def share(self, value: T) -> T:
        """``value``, or the part equal to it already held (which is then held for later calls)."""
        if len(self._held) >= self.max_parts:
            self._held.clear()
        shared, _ = self._share(value)
        return shared  # type: ignore[no-any-return]

    def _share(self, value: Any) -> tuple[Any, Any]:
        """The shared value and its key (None: not shareable; kept as it is)."""
        if isinstance(value, BaseModel):
            return self._model(value)
        if type(value) is list:
            items = [self._share(item) for item in value]
            if any(key is None for _, key in items):
                return value, None
            value[:] = [item for item, _ in items]
            return self._held_for((list, tuple(key for _, key in items)), value)
        if type(value) is dict:
            if any(type(name) is not str for name in value):
                return value, None  # 1, 1.0 and True are one key to a dict: only text keys are safe
            entries = {name: self._share(item) for name, item in value.items()}
            if any(key is None for _, key in entries.values()):
                return value, None
            for name, (item, _) in entries.items():
                value[name] = item
            return self._held_for((dict, tuple((name, key) for name, (_, key) in entries.items())), value)
        if type(value) is tuple:
            parts = [self._share(item) for item in value]
            if any(key is None for _, key in parts):
                return value, None
            if any(item is not original for (item, _), original in zip(parts, value, strict=True)):
                value = tuple(item for item, _ in parts)
            return self._held_for((tuple, tuple(key for _, key in parts)), value)
        if type(value) is str:
            held = self._held.setdefault(value, value)  # the only keys that are strings
            return held, held
        return value, _scalar_key(value)

    def _model(self, model: BaseModel) -> tuple[Any, Any]:
        fields = model.__dict__  # a frozen model refuses setattr; its fresh __dict__ is still its own
        keys = []
        shareable = True
        for name, item in fields.items():
            shared, key = self._share(item)
            if shared is not item:
                fields[name] = shared
            shareable = shareable and key is not None
            keys.append(key)  # a type's fields always come in the same order
        # Which fields the document set (pydantic keeps a set per model, never changed once frozen).
        fields_set, set_key = self._held_for(
            ("fields_set", frozenset(model.__pydantic_fields_set__)), model.__pydantic_fields_set__
        )
        object.__setattr__(model, "__pydantic_fields_set__", fields_set)
        if (
            not shareable
            or isinstance(model, self.own)
            or model.__pydantic_extra__
            or model.__pydantic_private__
        ):
            return model, None
        return self._held_for((type(model), tuple(keys), set_key), model)

    def _held_for(self, key: Any, value: Any) -> tuple[Any, Any]:
        held = self._held.setdefault(key, value)
        return held, id(held)  # held parts live as long as the table, so their ids are theirs


def _scalar_key(value: Any) -> Any:
    """A key for a number, a date, an enum member or None; None (not shared) for any other value:
    some types call values equal that are shown differently (a datetime in two time zones)."""
    if isinstance(value, float):
        return (float, repr(value))
    if type(value) in _EXACT or isinstance(value, Enum):
        return (type(value), value)
    return None


_EXACT = (int, bool, type(None), date, timedelta)  # equal values of these types look the same
