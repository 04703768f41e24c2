"""After ``os.fork()``: the child gets its own connections, threads and locks.

gunicorn ``--preload``, Celery's prefork pool and ``multiprocessing`` (fork start method)
build a Router once and fork workers from it. A forked child inherits the parent's
memory but none of its threads: pooled keep-alive sockets would be shared by two
processes (each reading the other's answers), an executor would believe it still has
workers, a lock held by a parent thread at the moment of the fork would never be
released, and the background health thread would be gone.

One registry for the whole library: objects that hold such things call ``register(self)``
when they are built (held weakly: registering never keeps anything alive). In the child,
right after the fork, every live registered object's ``_after_fork()`` runs (objects
without one get fresh locks, see ``fresh_locks``); what it returns, if callable, runs
once every object is reset (restarting a background thread only after the sockets it
will use are new). The parent is not touched.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Callable, List

__all__ = ["register", "fresh_locks"]

logger = logging.getLogger("multi_llm_orchestrator.forking")

_registered: "weakref.WeakSet[Any]" = weakref.WeakSet()

# The lock types cannot be instantiated themselves: their factories, by type.
_LOCK_FACTORIES = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}


def register(owner: Any) -> None:
    """Reset ``owner`` in a forked child: its ``_after_fork()`` (or ``fresh_locks``)."""
    _registered.add(owner)


def fresh_locks(owner: Any) -> None:
    """Give ``owner`` new locks, conditions and events in place of its own (an Event
    keeps whether it was set): one held by a parent thread during the fork stays held."""
    for name, value in list(vars(owner).items()):
        factory = _LOCK_FACTORIES.get(type(value))
        if factory is not None:
            setattr(owner, name, factory())
        elif isinstance(value, threading.Condition):
            setattr(owner, name, threading.Condition())
        elif isinstance(value, threading.Event):
            event = threading.Event()
            if value.is_set():
                event.set()
            setattr(owner, name, event)


def _after_fork_in_child() -> None:
    restarts: List[Callable[[], Any]] = []
    for owner in list(_registered):
        try:
            reset = getattr(owner, "_after_fork", None)
            if reset is None:
                fresh_locks(owner)
                continue
            restart = reset()
            if callable(restart):
                restarts.append(restart)
        except Exception:  # one broken object must not leave the others shared
            logger.exception("resetting %s after fork failed", type(owner).__name__)
    for restart in restarts:
        try:
            restart()
        except Exception:
            logger.exception("restarting background work after fork failed")


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
