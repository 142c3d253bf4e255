"""Who hears that an order changed, once the change is committed: the floor's copy of its pick
list (``server.docpublish`` sends it; a closed or cancelled order's copy is withdrawn).

Orders change inside transactions that are not theirs (a batch hook runs inside the ledger's),
so a change is only noted there; a thread of the desk then waits for the writer to be free (the
transaction that noted it has committed or rolled back), reads the order as committed and tells
the listeners ``("order", site, id, expected or None)``. A rolled-back change is told as the
order stands, which the floor already has: harmless. Changes noted in a burst are told once.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import cast

from floorsync.edge.expected import Expected
from floorsync.server.ledger import Store

log = logging.getLogger(__name__)

KIND = "order"
# (kind, site, id, the expected list; None: withdrawn), called after the commit
Listener = Callable[[str, str, str, Expected | None], None]
# an order's id -> (its site, its floor copy or None once not open); None: no such order
Render = Callable[[str], tuple[str, Expected | None] | None]
Opened = Callable[[], list[Expected]]  # every open order's floor copy


class OrderDesk:
    """The orders of one store; ``desk_of(store)`` finds it."""

    def __init__(self, store: Store, render: Render, opened: Opened) -> None:
        # weakly: ``_desks`` keeps the desk while the store lives; a desk holding its store
        # strongly would keep both for ever
        self._store = cast(Store, weakref.proxy(store))
        self._render, self._opened = render, opened
        self._listeners: list[Listener] = []
        self._pending: set[str] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False

    def open_expected(self) -> list[Expected]:
        """Every open order's floor copy (the document publisher's provider of orders)."""
        return self._opened()

    def add_listener(self, listener: Listener) -> None:
        with self._wake:
            self._listeners.append(listener)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="order-desk",
                                                daemon=True)
                self._thread.start()

    def remove_listener(self, listener: Listener) -> None:
        with self._wake:
            if listener in self._listeners:
                self._listeners.remove(listener)
            self._wake.notify_all()
        if not self._listeners and self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def changed(self, order_ids: Iterable[str]) -> None:
        """These orders changed (any thread, inside the changing transaction or after it)."""
        with self._wake:
            if self._listeners:
                self._pending.update(order_ids)
                self._wake.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Every change noted so far told (for tests and a clean stop)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or not self._listeners)
                if not self._listeners:
                    self._pending.clear()
                    self._wake.notify_all()
                    return
                ids, self._pending, self._busy = sorted(self._pending), set(), True
            try:
                with self._store._lock:  # the noting transaction has ended
                    pass
                for ident in ids:
                    self._tell(ident)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _tell(self, ident: str) -> None:
        try:
            found = self._render(ident)
        except Exception:
            log.exception("order %s: its floor copy could not be read", ident)
            return
        if found is None:
            return
        site, expected = found
        for listener in list(self._listeners):
            try:
                listener(KIND, site, ident, expected)
            except Exception:
                log.exception("order listener %r failed", listener)


_desks: weakref.WeakKeyDictionary[Store, OrderDesk] = weakref.WeakKeyDictionary()


def open_desk(store: Store, render: Render, opened: Opened) -> OrderDesk:
    """The store's one desk (made once)."""
    desk = _desks.get(store)
    if desk is None:
        desk = _desks[store] = OrderDesk(store, render, opened)
    return desk


def changed(store: Store, order_ids: Iterable[str]) -> None:
    """Note changed orders with the store's desk, if it has one."""
    desk = _desks.get(store)
    if desk is not None:
        desk.changed(order_ids)
