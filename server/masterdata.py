"""Master data: items and the location tree, with their all-or-nothing CSV imports.

Items (``server.items``) are keyed by SKU, each GTIN belonging to one item; locations
(``server.locations``) form a tree per site, found by code, barcode or GLN; both import from CSV
(``server.csvimport``). Both are read and written through ``MasterData``, one object over the
store made of the two (their shared plumbing is ``server.mastertables``).

Every write is one transaction on the store's single writer and is checked inside it (``BEGIN
IMMEDIATE`` holds the write lock, so a check never races another write); reads use the store's
per-thread readers. The ledger's apply path checks events against master data from the store's
in-memory caches (``server.checks``), which every write here drops.
"""

from __future__ import annotations

from floorsync.server.items import ItemMaster
from floorsync.server.locations import LocationMaster


class MasterData(ItemMaster, LocationMaster):
    """Items and locations in the store's database, written through its one writer."""
