"""Value classes that are dataclasses to every caller that asks, without running
``@dataclass`` when their module is imported.

``@dataclass`` compiles an ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and
frozen ``__setattr__``/``__delattr__`` for every class with ``exec``, and imports
``dataclasses`` (with ``inspect``, ``ast`` and ``dis``): together more than a provider
module's own code costs to import. A ``Record`` subclass declares its fields as a
dataclass does (annotations, defaults, ``field(default_factory=...)``) and writes its
``__init__`` out; repr, equality, hashing and frozenness come from the base class, built
from the field names. The first time anyone asks for ``__dataclass_fields__`` or
``__dataclass_params__`` (``dataclasses.fields``, ``is_dataclass``, ``replace``,
``asdict``, dataclasses-json...), ``dataclasses.dataclass(init=False, repr=False,
eq=False)`` is applied to the class, which then holds real ``Field`` objects and params
(``frozen``, ``init``, ``repr``, ``eq`` set to what the class does). Only ``vars(cls)``
shows the difference: it lists ``__dataclass_fields__`` from that moment on.

    class Point(FrozenRecord):
        x: int
        tags: List[str] = field(default_factory=list)

        def __init__(self, x: int, tags: List[str] = FACTORY) -> None:
            state = self.__dict__
            state["x"] = x
            state["tags"] = [] if tags is FACTORY else tags

Subclasses of a record class are plain subclasses (as a subclass of a dataclass not
decorated itself): only classes deriving from ``Record`` or ``FrozenRecord`` directly
declare fields.
"""

from __future__ import annotations

import threading
from operator import attrgetter
from typing import Any, Dict, Tuple

__all__ = ["Record", "FrozenRecord", "field", "FACTORY", "field_names"]


class _Factory:
    __slots__ = ()

    def __repr__(self) -> str:  # as dataclasses shows it in a signature
        return "<factory>"


#: The default of an ``__init__`` parameter whose field has a ``default_factory``.
FACTORY: Any = _Factory()
_NOTHING = object()
_lock = threading.RLock()
_repr_running: set = set()


class _FieldOptions:
    """What ``field(...)`` was given, passed to ``dataclasses.field`` when the class
    becomes a dataclass."""

    __slots__ = ("options",)

    def __init__(self, options: Dict[str, Any]) -> None:
        self.options = options


def field(**options: Any) -> Any:
    """``dataclasses.field(...)`` (same keywords) without importing dataclasses."""
    return _FieldOptions(options)


def field_names(cls: type) -> Tuple[str, ...]:
    """The field names of a record class (or instance), in order, without making it a
    dataclass."""
    return cls._record_names  # type: ignore[attr-defined, no-any-return]


def _frozen_error(message: str) -> AttributeError:
    from dataclasses import FrozenInstanceError  # only on this error path

    return FrozenInstanceError(message)


def _make_dataclass(cls: type) -> None:
    """Apply ``@dataclass`` to ``cls`` (once): it adds the fields and params, nothing else."""
    with _lock:
        if "__dataclass_fields__" in cls.__dict__:
            return
        import dataclasses

        for name, options in cls._record_options.items():  # type: ignore[attr-defined]
            setattr(cls, name, dataclasses.field(**options))  # dataclass puts the default back, or none
        # frozen=False: a frozen dataclass refuses a class whose __setattr__ is not its own
        # (FrozenRecord's is inherited, but would be replaced); the params say what the class does.
        dataclasses.dataclass(cls, init=False, repr=False, eq=False)
        params = cls.__dict__["__dataclass_params__"]
        params.init = params.repr = params.eq = True
        params.frozen = cls._record_frozen  # type: ignore[attr-defined]


class _DataclassAttribute:
    """``__dataclass_fields__`` / ``__dataclass_params__`` before the class is a
    dataclass: asking makes it one (which stores both in the class, ahead of this)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type) -> Any:
        for cls in owner.__mro__:
            if "_record_names" in cls.__dict__:
                _make_dataclass(cls)
                return cls.__dict__[self.name]
        raise AttributeError(f"type object {owner.__name__!r} has no attribute {self.name!r}")


class Record:
    """Base of a mutable value class (see the module doc); eq by fields, unhashable."""

    __slots__ = ()
    _record_base = True  # a base of records, not one (in this class's own __dict__ only)
    _record_frozen = False

    __dataclass_fields__ = _DataclassAttribute("__dataclass_fields__")
    __dataclass_params__ = _DataclassAttribute("__dataclass_params__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_record_base" in cls.__dict__ or not any("_record_base" in base.__dict__ for base in cls.__bases__):
            return  # FrozenRecord, or a subclass of a record class: its fields are its base's
        names = tuple(cls.__dict__.get("__annotations__", {}))
        options: Dict[str, Dict[str, Any]] = {}
        for name in names:
            value = cls.__dict__.get(name, _NOTHING)
            if isinstance(value, _FieldOptions):
                options[name] = value.options
                if "default" in value.options:
                    setattr(cls, name, value.options["default"])
                else:
                    delattr(cls, name)
        cls._record_names = names
        cls._record_options = options
        cls._record_shown = tuple(name for name in names if options.get(name, {}).get("repr", True))
        cls._record_shown_values = staticmethod(_values_of(cls._record_shown))
        # The compared fields as a tuple: what dataclasses compares and hashes.
        cls._record_values = staticmethod(_values_of(tuple(name for name in names
                                                            if options.get(name, {}).get("compare", True))))
        cls.__match_args__ = names
        if "__hash__" not in cls.__dict__:
            cls.__hash__ = _hash if cls._record_frozen else None  # type: ignore[assignment]

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is self.__class__:
            values = self._record_values  # type: ignore[attr-defined]
            return values(self) == values(other)  # type: ignore[no-any-return]
        return NotImplemented

    def __repr__(self) -> str:
        key = id(self), threading.get_ident()
        if key in _repr_running:  # a value holding itself (dataclasses shows it so)
            return "..."
        _repr_running.add(key)
        try:
            shown = ", ".join([f"{name}={value!r}" for name, value in  # type: ignore[attr-defined]
                               zip(self._record_shown, self._record_shown_values(self))])
        finally:
            _repr_running.discard(key)
        return f"{self.__class__.__qualname__}({shown})"


def _values_of(names: Tuple[str, ...]) -> Any:
    """A function giving the tuple of an instance's ``names`` attributes."""
    if len(names) > 1:
        return attrgetter(*names)
    return lambda value: tuple([getattr(value, name) for name in names])


def _hash(self: Any) -> int:
    return hash(self._record_values(self))


class FrozenRecord(Record):
    """Base of a frozen value class: assigning or deleting an attribute raises
    ``dataclasses.FrozenInstanceError`` (an ``AttributeError``), as a frozen dataclass's."""

    __slots__ = ()
    _record_base = True
    _record_frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if "_record_names" in type(self).__dict__ or name in self._record_names:  # type: ignore[attr-defined]
            raise _frozen_error(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if "_record_names" in type(self).__dict__ or name in self._record_names:  # type: ignore[attr-defined]
            raise _frozen_error(f"cannot delete field {name!r}")
        object.__delattr__(self, name)
