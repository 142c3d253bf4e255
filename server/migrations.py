"""Schema migrations: plain SQL applied in order, each recorded in ``schema_migrations``.

The SQL sticks to what PostgreSQL also runs (``ON CONFLICT``, ``DOUBLE PRECISION``, ISO 8601
text times). The SQLite idioms: ``INTEGER PRIMARY KEY`` for the ledger's commit-ordered id (a
rowid alias; a PostgreSQL dialect would write ``BIGINT GENERATED ALWAYS AS IDENTITY``), and
``WITHOUT ROWID`` on ``stock`` (its rows live in the primary-key tree, one B-tree per upsert
instead of two; a PostgreSQL dialect drops the clause). The
ledger is append-only, so without AUTOINCREMENT its ids still never repeat.
"""

from __future__ import annotations

# A migration whose SQL starts with this line runs with foreign keys off (SQLite's procedure for
# rebuilding a table that others point at), and the keys are checked before its commit.
FOREIGN_KEYS_OFF = "-- foreign keys off\n"

# 0018: what the order lines' picks took off the books, not yet shipped (both engines run it).
OFF_BOOKS = """
        ALTER TABLE order_lines ADD COLUMN picked_off_books DOUBLE PRECISION NOT NULL DEFAULT 0;
        UPDATE order_lines SET picked_off_books = picked - shipped - COALESCE((
            SELECT SUM(a.qty) FROM order_allocations a WHERE a.order_id = order_lines.order_id
            AND a.line = order_lines.line AND a.staged AND a.qty > 0), 0)
        WHERE status = 'open' AND picked - shipped - COALESCE((
            SELECT SUM(a.qty) FROM order_allocations a WHERE a.order_id = order_lines.order_id
            AND a.line = order_lines.line AND a.staged AND a.qty > 0), 0) > 0
        """

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_ledger",
        """
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            seq BIGINT NOT NULL,
            type TEXT NOT NULL,
            event_time TEXT NOT NULL,
            received_at TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('mqtt', 'http')),
            item TEXT,
            gtin TEXT,
            sku TEXT,
            lot TEXT,
            serial TEXT,
            epc TEXT,
            sscc TEXT,
            qty DOUBLE PRECISION NOT NULL,
            from_location TEXT,
            to_location TEXT,
            operator TEXT,
            read_kind TEXT,
            read_raw TEXT,
            symbology TEXT,
            tag TEXT,
            antenna INTEGER,
            rssi DOUBLE PRECISION,
            reads INTEGER,
            first_seen TEXT,
            last_seen TEXT,
            detail TEXT
        );
        CREATE INDEX events_device_seq ON events (site, device, seq);

        CREATE TABLE movements (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL REFERENCES events (id),
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            type TEXT NOT NULL,
            item TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            location TEXT NOT NULL,
            qty DOUBLE PRECISION NOT NULL,
            event_time TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE INDEX movements_item_location ON movements (item, location, lot);

        CREATE TABLE stock (
            item TEXT NOT NULL,
            location TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            quantity DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (item, location, lot)
        );
        CREATE INDEX stock_location ON stock (location);

        CREATE TABLE rejections (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            source TEXT NOT NULL,
            topic TEXT,
            site TEXT,
            device TEXT,
            event_id TEXT,
            reason TEXT NOT NULL,
            payload TEXT NOT NULL
        );
        CREATE INDEX rejections_event ON rejections (event_id);

        CREATE TABLE devices (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            last_seen TEXT,
            last_seq BIGINT,
            events BIGINT NOT NULL DEFAULT 0,
            online BOOLEAN,
            status_at TEXT,
            backlog BIGINT,
            PRIMARY KEY (site, device)
        );
        """,
    ),
    (
        "0002_master_data",
        """
        CREATE TABLE items (
            sku TEXT PRIMARY KEY,
            description TEXT NOT NULL DEFAULT '',
            tracking TEXT NOT NULL DEFAULT 'none' CHECK (tracking IN ('none', 'lot', 'serial')),
            unit TEXT NOT NULL DEFAULT 'EA',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );

        CREATE TABLE item_gtins (
            gtin TEXT PRIMARY KEY CHECK (length(gtin) = 14),
            sku TEXT NOT NULL REFERENCES items (sku) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL
        );
        CREATE INDEX item_gtins_sku ON item_gtins (sku, ordinal);

        CREATE TABLE locations (
            site TEXT NOT NULL,
            code TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('site', 'zone', 'aisle', 'bin', 'virtual')),
            parent TEXT,
            name TEXT NOT NULL DEFAULT '',
            gln TEXT CHECK (gln IS NULL OR length(gln) = 13),
            gln_extension TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (site, code),
            CHECK ((kind = 'site') = (parent IS NULL)),
            FOREIGN KEY (site, parent) REFERENCES locations (site, code)
                DEFERRABLE INITIALLY DEFERRED
        );
        CREATE INDEX locations_parent ON locations (site, parent, code);
        CREATE UNIQUE INDEX locations_gln ON locations (gln, gln_extension);

        CREATE TABLE location_barcodes (
            site TEXT NOT NULL,
            barcode TEXT NOT NULL,
            code TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            PRIMARY KEY (site, barcode),
            FOREIGN KEY (site, code) REFERENCES locations (site, code) ON DELETE CASCADE
                DEFERRABLE INITIALLY DEFERRED
        );
        CREATE INDEX location_barcodes_location ON location_barcodes (site, code, ordinal);
        CREATE INDEX location_barcodes_text ON location_barcodes (barcode);
        """,
    ),
    (
        "0003_ledger_read_indexes",
        """
        CREATE INDEX events_serial ON events (serial, gtin) WHERE serial IS NOT NULL;
        CREATE INDEX events_epc ON events (epc) WHERE epc IS NOT NULL;
        """,
    ),
    (
        "0004_exceptions_counts",
        """
        CREATE TABLE exceptions (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('negative_stock', 'unknown_item',
                'unknown_location', 'serial_conflict', 'late_after_count', 'rejected')),
            status TEXT NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'adjusted', 'dismissed', 'cleared')),
            raised_at TEXT NOT NULL,
            site TEXT,
            device TEXT,
            event_id TEXT,
            last_event_id TEXT,
            occurrences BIGINT NOT NULL DEFAULT 1,
            rejection_id BIGINT,
            count_id BIGINT,
            item TEXT,
            lot TEXT,
            location TEXT,
            serial TEXT,
            quantity DOUBLE PRECISION,
            detail TEXT NOT NULL,
            resolved_at TEXT,
            resolved_by TEXT,
            resolved_token TEXT,
            reason TEXT,
            adjustment_event_id TEXT
        );
        CREATE INDEX exceptions_status ON exceptions (status, id);
        CREATE INDEX exceptions_kind ON exceptions (kind, id);
        CREATE INDEX exceptions_event ON exceptions (event_id);
        CREATE INDEX exceptions_last_event ON exceptions (last_event_id);

        CREATE TABLE site_stock (
            item TEXT NOT NULL,
            site TEXT NOT NULL,
            location TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            quantity DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (item, site, location, lot)
        ) WITHOUT ROWID;
        INSERT INTO site_stock (item, site, location, lot, quantity)
            SELECT item, site, location, lot, SUM(qty) FROM movements
            GROUP BY item, site, location, lot;
        DROP TABLE stock;
        ALTER TABLE site_stock RENAME TO stock;
        CREATE INDEX stock_location ON stock (location, item, site, lot);
        CREATE INDEX exceptions_open_line ON exceptions (kind, item, location, lot)
            WHERE status = 'open';

        CREATE TABLE held_movements (
            id INTEGER PRIMARY KEY,
            exception_id BIGINT NOT NULL REFERENCES exceptions (id),
            event_id TEXT NOT NULL REFERENCES events (id),
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            type TEXT NOT NULL,
            item TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            location TEXT NOT NULL,
            qty DOUBLE PRECISION NOT NULL,
            event_time TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE INDEX held_movements_exception ON held_movements (exception_id);

        CREATE TABLE serial_locations (
            identity TEXT NOT NULL,
            serial TEXT NOT NULL,
            site TEXT NOT NULL,
            location TEXT,
            event_id TEXT NOT NULL,
            event_time TEXT NOT NULL,
            PRIMARY KEY (identity, serial)
        );

        CREATE TABLE counts (
            id INTEGER PRIMARY KEY,
            site TEXT NOT NULL,
            location TEXT NOT NULL,
            origin TEXT NOT NULL CHECK (origin IN ('edge', 'api')),
            status TEXT NOT NULL
                CHECK (status IN ('open', 'needs_decision', 'posted', 'cancelled', 'late')),
            counted_at TEXT NOT NULL,
            event_id TEXT,
            started_by TEXT,
            closed_at TEXT,
            closed_by TEXT,
            decision TEXT CHECK (decision IN ('counted', 'difference')),
            decided_at TEXT,
            decided_by TEXT,
            adjustment_event_id TEXT
        );
        CREATE INDEX counts_location ON counts (site, location, id);
        CREATE INDEX counts_status ON counts (status, id);

        CREATE TABLE count_lines (
            count_id BIGINT NOT NULL REFERENCES counts (id),
            item TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            counted DOUBLE PRECISION,
            expected DOUBLE PRECISION NOT NULL DEFAULT 0,
            on_hand_at_close DOUBLE PRECISION,
            adjustment DOUBLE PRECISION,
            PRIMARY KEY (count_id, item, lot)
        );

        CREATE TABLE location_counts (
            site TEXT NOT NULL,
            location TEXT NOT NULL,
            counted_at TEXT NOT NULL,
            count_id BIGINT NOT NULL,
            PRIMARY KEY (site, location)
        )
        """,
    ),
    (
        "0005_held_by_count",
        """
        ALTER TABLE exceptions ADD COLUMN held_by_count_id BIGINT
        """,
    ),
    (
        "0006_presence_figures",
        """
        ALTER TABLE devices ADD COLUMN oldest_unsynced_s DOUBLE PRECISION;
        ALTER TABLE devices ADD COLUMN backlog_at TEXT
        """,
    ),
    (
        "0007_event_documents",
        """
        ALTER TABLE events ADD COLUMN doc_kind TEXT;
        ALTER TABLE events ADD COLUMN doc_id TEXT;
        ALTER TABLE events ADD COLUMN doc_check TEXT;
        CREATE INDEX events_document ON events (doc_kind, doc_id) WHERE doc_id IS NOT NULL
        """,
    ),
    (
        # The documents' exception kinds. SQLite cannot alter a CHECK, so the table is rebuilt
        # (its rows and ids kept; held_movements points at those ids) with foreign keys off.
        "0008_document_exception_kinds",
        FOREIGN_KEYS_OFF
        + """
        CREATE TABLE exceptions_new (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('negative_stock', 'unknown_item',
                'unknown_location', 'serial_conflict', 'late_after_count', 'rejected',
                'receipt_over', 'receipt_short', 'receipt_unexpected', 'receipt_unknown',
                'order_over', 'order_unexpected', 'order_unknown')),
            status TEXT NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'adjusted', 'dismissed', 'cleared')),
            raised_at TEXT NOT NULL,
            site TEXT,
            device TEXT,
            event_id TEXT,
            last_event_id TEXT,
            occurrences BIGINT NOT NULL DEFAULT 1,
            rejection_id BIGINT,
            count_id BIGINT,
            item TEXT,
            lot TEXT,
            location TEXT,
            serial TEXT,
            quantity DOUBLE PRECISION,
            detail TEXT NOT NULL,
            resolved_at TEXT,
            resolved_by TEXT,
            resolved_token TEXT,
            reason TEXT,
            adjustment_event_id TEXT,
            held_by_count_id BIGINT
        );
        INSERT INTO exceptions_new (id, kind, status, raised_at, site, device, event_id,
            last_event_id, occurrences, rejection_id, count_id, item, lot, location, serial,
            quantity, detail, resolved_at, resolved_by, resolved_token, reason,
            adjustment_event_id, held_by_count_id)
        SELECT id, kind, status, raised_at, site, device, event_id, last_event_id, occurrences,
            rejection_id, count_id, item, lot, location, serial, quantity, detail, resolved_at,
            resolved_by, resolved_token, reason, adjustment_event_id, held_by_count_id
        FROM exceptions;
        DROP TABLE exceptions;
        ALTER TABLE exceptions_new RENAME TO exceptions;
        CREATE INDEX exceptions_status ON exceptions (status, id);
        CREATE INDEX exceptions_kind ON exceptions (kind, id);
        CREATE INDEX exceptions_event ON exceptions (event_id);
        CREATE INDEX exceptions_last_event ON exceptions (last_event_id);
        CREATE INDEX exceptions_open_line ON exceptions (kind, item, location, lot)
            WHERE status = 'open'
        """,
    ),
    (
        # Expected receipts (ASN, purchase orders): the document as accepted (``digest``: of its
        # canonical form, for idempotency), its lines (``item`` keyed as the ledger keys items,
        # ``sku`` the master-data item it resolved to), its pallets with their child EPCs, and
        # what closing it found. A child EPC's ``ident`` is what it is matched by: GTIN and
        # serial for an SGTIN (URN, Digital Link or a barcode's AI 21 alike), else the URI.
        # ``receipt_exceptions`` ties the exceptions the receipt raised to it (one open record
        # per line, item or pallet). ``events_sscc``: received pallets.
        "0009_receipts",
        """
        CREATE TABLE receipts (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            site TEXT NOT NULL,
            supplier TEXT NOT NULL,
            expected_date TEXT NOT NULL,
            location TEXT,
            source TEXT NOT NULL CHECK (source IN ('json', 'epcis')),
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
            version BIGINT NOT NULL DEFAULT 1,
            digest TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT,
            closed_at TEXT,
            closed_by TEXT
        );
        CREATE INDEX receipts_status ON receipts (status, seq);
        CREATE INDEX receipts_site ON receipts (site, status, seq);

        CREATE TABLE receipt_pallets (
            receipt_id TEXT NOT NULL REFERENCES receipts (id),
            sscc TEXT NOT NULL CHECK (length(sscc) = 18),
            ordinal INTEGER NOT NULL,
            PRIMARY KEY (receipt_id, sscc)
        );
        CREATE INDEX receipt_pallets_sscc ON receipt_pallets (sscc);

        CREATE TABLE receipt_lines (
            receipt_id TEXT NOT NULL REFERENCES receipts (id),
            line INTEGER NOT NULL,
            item TEXT NOT NULL,
            sku TEXT NOT NULL,
            gtin TEXT,
            lot TEXT NOT NULL DEFAULT '',
            qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
            sscc TEXT,
            PRIMARY KEY (receipt_id, line),
            FOREIGN KEY (receipt_id, sscc) REFERENCES receipt_pallets (receipt_id, sscc)
        );

        CREATE TABLE receipt_epcs (
            receipt_id TEXT NOT NULL REFERENCES receipts (id),
            ident TEXT NOT NULL,
            epc TEXT NOT NULL,
            sscc TEXT NOT NULL,
            sku TEXT,
            gtin TEXT,
            serial TEXT,
            ordinal INTEGER NOT NULL,
            PRIMARY KEY (receipt_id, ident),
            FOREIGN KEY (receipt_id, sscc) REFERENCES receipt_pallets (receipt_id, sscc)
        );
        CREATE INDEX receipt_epcs_ident ON receipt_epcs (ident);

        CREATE TABLE receipt_discrepancies (
            receipt_id TEXT NOT NULL REFERENCES receipts (id),
            n INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('over', 'short', 'unexpected')),
            line INTEGER,
            sscc TEXT,
            item TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            expected DOUBLE PRECISION NOT NULL,
            received DOUBLE PRECISION NOT NULL,
            difference DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL,
            exception_id BIGINT REFERENCES exceptions (id),
            PRIMARY KEY (receipt_id, n)
        );

        CREATE TABLE receipt_exceptions (
            exception_id BIGINT PRIMARY KEY REFERENCES exceptions (id),
            receipt_id TEXT NOT NULL,
            site TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL
        );
        CREATE INDEX receipt_exceptions_subject ON receipt_exceptions (receipt_id, kind, subject);

        CREATE INDEX events_sscc ON events (sscc) WHERE sscc IS NOT NULL
        """,
    ),
    (
        # Outbound orders (server/orders.py): the document as accepted (``digest`` of its
        # canonical form, for idempotency; ``seq`` its arrival order), its lines (``item`` as
        # ordered, ``sku`` the master-data item it resolved to; quantities ordered, allocated
        # and not yet picked, picked, shipped, backordered), the stock reserved for each line
        # (``order_allocations``: per stock line, as stock keys it; ``staged``: goods a pick put
        # somewhere, kept from other orders until shipped), backorders (demand we cannot meet
        # for lack of stock) and their fills, and the exceptions the floor's events raised.
        "0010_orders",
        """
        CREATE TABLE orders (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            site TEXT NOT NULL,
            ship_to TEXT NOT NULL,
            priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 9),
            due TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
            version BIGINT NOT NULL DEFAULT 1,
            digest TEXT NOT NULL,
            received_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            closed_at TEXT,
            cancelled_by TEXT,
            reason TEXT
        );
        CREATE INDEX orders_status ON orders (status, seq);
        CREATE INDEX orders_site ON orders (site, status, seq);

        CREATE TABLE order_lines (
            order_id TEXT NOT NULL REFERENCES orders (id),
            line INTEGER NOT NULL,
            item TEXT NOT NULL,
            sku TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            qty DOUBLE PRECISION NOT NULL CHECK (qty > 0),
            allocated DOUBLE PRECISION NOT NULL DEFAULT 0,
            picked DOUBLE PRECISION NOT NULL DEFAULT 0,
            shipped DOUBLE PRECISION NOT NULL DEFAULT 0,
            backordered DOUBLE PRECISION NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
            picked_at TEXT,
            closed_at TEXT,
            PRIMARY KEY (order_id, line)
        );
        CREATE INDEX order_lines_sku ON order_lines (order_id, sku);
        CREATE INDEX order_lines_open ON order_lines (order_id, line) WHERE status = 'open';

        CREATE TABLE order_allocations (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            line INTEGER NOT NULL,
            site TEXT NOT NULL,
            item TEXT NOT NULL,
            location TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            allocated DOUBLE PRECISION NOT NULL,
            qty DOUBLE PRECISION NOT NULL,
            staged BOOLEAN NOT NULL DEFAULT FALSE,
            allocated_at TEXT NOT NULL,
            FOREIGN KEY (order_id, line) REFERENCES order_lines (order_id, line)
        );
        CREATE INDEX order_allocations_stock ON order_allocations (item, site, location, lot)
            WHERE qty > 0;
        CREATE INDEX order_allocations_line ON order_allocations (order_id, line) WHERE qty > 0;

        CREATE TABLE backorders (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            line INTEGER NOT NULL,
            site TEXT NOT NULL,
            sku TEXT NOT NULL,
            lot TEXT NOT NULL DEFAULT '',
            qty DOUBLE PRECISION NOT NULL,
            open_qty DOUBLE PRECISION NOT NULL,
            since TEXT NOT NULL,
            why TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'filled', 'cancelled')),
            closed_at TEXT,
            FOREIGN KEY (order_id, line) REFERENCES order_lines (order_id, line)
        );
        CREATE INDEX backorders_open_item ON backorders (site, sku) WHERE status = 'open';
        CREATE INDEX backorders_line ON backorders (order_id, line);
        CREATE INDEX backorders_item ON backorders (sku, id);

        CREATE TABLE backorder_fills (
            id INTEGER PRIMARY KEY,
            backorder_id BIGINT NOT NULL REFERENCES backorders (id),
            filled_at TEXT NOT NULL,
            qty DOUBLE PRECISION NOT NULL,
            how TEXT NOT NULL CHECK (how IN ('allocated', 'picked')),
            event_id TEXT,
            item TEXT,
            location TEXT,
            lot TEXT,
            allocation_id BIGINT
        );
        CREATE INDEX backorder_fills_backorder ON backorder_fills (backorder_id, id);

        CREATE TABLE order_exceptions (
            exception_id BIGINT PRIMARY KEY REFERENCES exceptions (id),
            order_id TEXT NOT NULL,
            line INTEGER
        );
        CREATE INDEX order_exceptions_order ON order_exceptions (order_id, exception_id)
        """,
    ),
    (
        # The KPIs' reads (server/recordaccuracy.py, server/docktostock.py,
        # server/orderkpis.py): final counts by time; the rows that make a receiving line
        # (receives, put-aways' sources) by event time, with the columns naming the line; picks
        # against orders by event time; orders by acceptance and by close. Partial where they
        # touch the ledger: only those rows pay for them, and times grow, so their inserts land
        # near the index's end.
        "0011_kpi_indexes",
        """
        CREATE INDEX counts_posted ON counts (site, counted_at) WHERE status = 'posted';
        CREATE INDEX movements_receiving ON movements (site, event_time, item, location, lot)
            WHERE type = 'receive' OR (type = 'putaway' AND qty < 0);
        CREATE INDEX events_order_picks ON events (site, event_time)
            WHERE doc_kind = 'order' AND type = 'pick';
        CREATE INDEX orders_received ON orders (site, received_at);
        CREATE INDEX orders_closed ON orders (site, closed_at) WHERE status = 'closed'
        """,
    ),
    (
        # A device that publishes, on its own topic, a batch claiming another site or device
        # (server/ingest.py): counted on the topic's device, the one the broker authenticated.
        "0012_topic_mismatches",
        """
        ALTER TABLE devices ADD COLUMN topic_mismatches BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE devices ADD COLUMN topic_mismatch_at TEXT
        """,
    ),
    (
        # Who did what through the API (server/audit.py): the token's name, never the token.
        # Read by id (the cursor), by actor or action then id, or from a time on.
        "0013_audit",
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_actor ON audit (actor, id);
        CREATE INDEX audit_action ON audit (action, id);
        CREATE INDEX audit_at ON audit (at)
        """,
    ),
    (
        # PostgreSQL only (server/pg.py gives its SQL): stock pages keep 10 % free, so the
        # upsert of an on-hand line writes its new row version into the same page and no index
        # entry (a HOT update). SQLite updates a row in place: nothing to do there.
        "0014_stock_fillfactor",
        "-- PostgreSQL only (server/pg.py)",
    ),
    (
        # PostgreSQL only (server/pg.py gives its SQL): movements.event_id -> events(id) is no
        # longer checked there, row by row (a locking look-up into events a ledger row: half of
        # the COPY of a batch's movements). Integrity is kept by the one code that writes both,
        # in one transaction: a movement is staged only from an event the same pass inserts
        # (Store._apply: a batch's new events are COPY'd before its movements; Store.post
        # inserts its event first), and no code deletes an event or changes its id. SQLite
        # keeps the key (checked in process, and its apply path was not measured as slowed).
        "0015_movements_event_key_pg",
        "-- PostgreSQL only (server/pg.py)",
    ),
    (
        # The totes an order names (server/orders.py): its floor copy carries them, so a tote's
        # label selects the order on a handheld. Looked up by tote (one open order per tote).
        "0016_order_totes",
        """
        CREATE TABLE order_totes (
            order_id TEXT NOT NULL REFERENCES orders (id),
            tote TEXT NOT NULL,
            PRIMARY KEY (order_id, tote)
        );
        CREATE INDEX order_totes_tote ON order_totes (tote, order_id)
        """,
    ),
    (
        # EPCIS 2.0 events captured whole (server/epcisstore.py): the document without its
        # events; each event's JSON as received and the columns the export filters on (UTC
        # event times, canonical identifiers); the EPCs MATCH_anyEPC looks in. Ids are given
        # by the one writer, in commit order: the export's cursor. One event per eventID, and
        # beside it its error declaration (``declared``).
        "0017_epcis_capture",
        """
        CREATE TABLE epcis_captures (
            id INTEGER PRIMARY KEY,
            captured_at TEXT NOT NULL,
            captured_by TEXT,
            document TEXT NOT NULL,
            events INTEGER NOT NULL
        );
        CREATE TABLE epcis_events (
            id INTEGER PRIMARY KEY,
            capture_id BIGINT NOT NULL REFERENCES epcis_captures (id),
            ident TEXT NOT NULL,
            declared INTEGER NOT NULL CHECK (declared IN (0, 1)),
            digest TEXT NOT NULL,
            core_digest TEXT NOT NULL,
            type TEXT NOT NULL,
            event_time TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            biz_step TEXT,
            read_point TEXT,
            biz_location TEXT,
            context TEXT,
            body TEXT NOT NULL,
            sent_record_time TEXT,
            UNIQUE (ident, declared)
        );
        CREATE INDEX epcis_events_event_time ON epcis_events (event_time);
        CREATE INDEX epcis_events_recorded_at ON epcis_events (recorded_at);
        CREATE INDEX epcis_events_type ON epcis_events (type, id);
        CREATE INDEX epcis_events_biz_step ON epcis_events (biz_step, id);
        CREATE INDEX epcis_events_read_point ON epcis_events (read_point, id);
        CREATE INDEX epcis_events_biz_location ON epcis_events (biz_location, id);
        CREATE TABLE epcis_event_epcs (
            uri TEXT NOT NULL,
            event_row BIGINT NOT NULL REFERENCES epcis_events (id),
            PRIMARY KEY (uri, event_row)
        )
        """,
    ),
    (
        # A ship against an order line of goods its picks already took off the books (picked
        # without a ``to``, so not staged, and not shipped since) takes them off a second time:
        # raised as ``order_ship_off_books`` (server/picking.py), the ledger left as the floor
        # said. ``picked_off_books``: what the line's picks took off the books and no ship has
        # shipped yet. Filled for open lines from what they show: picked, not shipped, not
        # staged. The exceptions' CHECK widened as 0008 did (PostgreSQL: server/pg.py).
        "0018_order_ship_off_books",
        FOREIGN_KEYS_OFF
        + """
        CREATE TABLE exceptions_new (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('negative_stock', 'unknown_item',
                'unknown_location', 'serial_conflict', 'late_after_count', 'rejected',
                'receipt_over', 'receipt_short', 'receipt_unexpected', 'receipt_unknown',
                'order_over', 'order_unexpected', 'order_unknown', 'order_ship_off_books')),
            status TEXT NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'adjusted', 'dismissed', 'cleared')),
            raised_at TEXT NOT NULL,
            site TEXT,
            device TEXT,
            event_id TEXT,
            last_event_id TEXT,
            occurrences BIGINT NOT NULL DEFAULT 1,
            rejection_id BIGINT,
            count_id BIGINT,
            item TEXT,
            lot TEXT,
            location TEXT,
            serial TEXT,
            quantity DOUBLE PRECISION,
            detail TEXT NOT NULL,
            resolved_at TEXT,
            resolved_by TEXT,
            resolved_token TEXT,
            reason TEXT,
            adjustment_event_id TEXT,
            held_by_count_id BIGINT
        );
        INSERT INTO exceptions_new (id, kind, status, raised_at, site, device, event_id,
            last_event_id, occurrences, rejection_id, count_id, item, lot, location, serial,
            quantity, detail, resolved_at, resolved_by, resolved_token, reason,
            adjustment_event_id, held_by_count_id)
        SELECT id, kind, status, raised_at, site, device, event_id, last_event_id, occurrences,
            rejection_id, count_id, item, lot, location, serial, quantity, detail, resolved_at,
            resolved_by, resolved_token, reason, adjustment_event_id, held_by_count_id
        FROM exceptions;
        DROP TABLE exceptions;
        ALTER TABLE exceptions_new RENAME TO exceptions;
        CREATE INDEX exceptions_status ON exceptions (status, id);
        CREATE INDEX exceptions_kind ON exceptions (kind, id);
        CREATE INDEX exceptions_event ON exceptions (event_id);
        CREATE INDEX exceptions_last_event ON exceptions (last_event_id);
        CREATE INDEX exceptions_open_line ON exceptions (kind, item, location, lot)
            WHERE status = 'open';
        """ + OFF_BOOKS,
    ),
)
