"""dataclasses-json's ``to_dict``/``to_json``/``from_dict``/``from_json``/``schema``,
with dataclasses-json (and marshmallow under it) imported on first use.

Importing dataclasses-json costs more than the rest of the package together (it loads
marshmallow, which loads ``importlib.metadata``), while most programs route calls and
never serialise a Completion or read a configuration file. The methods here have the
signatures of ``dataclasses_json.DataClassJsonMixin`` and call it once loaded; the
classes are registered as its virtual subclasses at that moment (as ``@dataclass_json``
does), so ``isinstance(x, DataClassJsonMixin)`` holds once anything was serialised or
parsed, and at once when dataclasses-json was already imported.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union

__all__ = ["LazyJsonMixin", "lazy_dataclass_json", "json_field"]

T = TypeVar("T")
_mixin: Any = None
_classes: List[type] = []
_lock = threading.Lock()


def _api() -> Any:
    """``dataclasses_json.DataClassJsonMixin``, imported (and our classes registered) once."""
    global _mixin
    if _mixin is None:
        from dataclasses_json import DataClassJsonMixin

        with _lock:
            for cls in _classes:
                DataClassJsonMixin.register(cls)
            _mixin = DataClassJsonMixin
    return _mixin


def _register(cls: type) -> None:
    with _lock:
        _classes.append(cls)
        if _mixin is not None:
            _mixin.register(cls)
    if _mixin is None and "dataclasses_json" in sys.modules:
        _api()  # already paid for by someone else: register now


def json_field(
    *, encoder: Optional[Callable] = None, decoder: Optional[Callable] = None, exclude: Optional[Callable] = None
) -> Dict[str, dict]:
    """The field metadata ``dataclasses_json.config(encoder=, decoder=, exclude=)`` builds,
    without importing it."""
    settings = {name: value for name, value in
                (("encoder", encoder), ("decoder", decoder), ("exclude", exclude)) if value is not None}
    return {"dataclasses_json": settings}


class LazyJsonMixin:
    """Base class giving a dataclass dataclasses-json's methods (see the module doc)."""

    dataclass_json_config: Optional[dict] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register(cls)

    def to_json(
        self,
        *,
        skipkeys: bool = False,
        ensure_ascii: bool = True,
        check_circular: bool = True,
        allow_nan: bool = True,
        indent: Optional[Union[int, str]] = None,
        separators: Optional[Tuple[str, str]] = None,
        default: Optional[Callable] = None,
        sort_keys: bool = False,
        **kw: Any,
    ) -> str:
        """This object as JSON (``dataclasses_json.DataClassJsonMixin.to_json``)."""
        return _api().to_json(
            self, skipkeys=skipkeys, ensure_ascii=ensure_ascii, check_circular=check_circular,
            allow_nan=allow_nan, indent=indent, separators=separators, default=default,
            sort_keys=sort_keys, **kw,
        )

    @classmethod
    def from_json(
        cls: Type[T], s: Any, *, parse_float: Any = None, parse_int: Any = None, parse_constant: Any = None,
        infer_missing: bool = False, **kw: Any,
    ) -> T:
        """An instance from JSON text (``DataClassJsonMixin.from_json``)."""
        return _api().from_json.__func__(
            cls, s, parse_float=parse_float, parse_int=parse_int, parse_constant=parse_constant,
            infer_missing=infer_missing, **kw,
        )

    @classmethod
    def from_dict(cls: Type[T], kvs: Any, *, infer_missing: bool = False) -> T:
        """An instance from a dict (``DataClassJsonMixin.from_dict``)."""
        return _api().from_dict.__func__(cls, kvs, infer_missing=infer_missing)

    def to_dict(self, encode_json: bool = False) -> Dict[str, Any]:
        """This object as a dict (``DataClassJsonMixin.to_dict``)."""
        return _api().to_dict(self, encode_json)

    @classmethod
    def schema(
        cls, *, infer_missing: bool = False, only: Any = None, exclude: Any = (), many: bool = False,
        context: Any = None, load_only: Any = (), dump_only: Any = (), partial: bool = False, unknown: Any = None,
    ) -> Any:
        """The marshmallow schema of this class (``DataClassJsonMixin.schema``)."""
        return _api().schema.__func__(
            cls, infer_missing=infer_missing, only=only, exclude=exclude, many=many, context=context,
            load_only=load_only, dump_only=dump_only, partial=partial, unknown=unknown,
        )


_METHODS = ("to_json", "from_json", "from_dict", "to_dict", "schema")


def lazy_dataclass_json(cls: Type[T]) -> Type[T]:
    """``@dataclass_json`` without importing dataclasses-json: the methods of
    ``LazyJsonMixin`` put on ``cls`` (whose bases stay as they are)."""
    for name in _METHODS:
        setattr(cls, name, LazyJsonMixin.__dict__[name])
    if not hasattr(cls, "dataclass_json_config"):
        cls.dataclass_json_config = None  # type: ignore[attr-defined]
    _register(cls)
    return cls
