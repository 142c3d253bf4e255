"""The ledger benchmark on PostgreSQL, tiny: its figures are there and the ledger it leaves is
exact (every movement in stock once); its scratch database is dropped (no speed asserts)."""

from __future__ import annotations

import psycopg

from floorsync.server.bench import PG_PREFIX, run
from tests import pgkit


def _bench_databases() -> set[str]:
    with psycopg.connect(pgkit.ADMIN, autocommit=True) as conn:
        return {name for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PG_PREFIX + "%",))}


def test_ledger_benchmark_on_postgresql_leaves_an_exact_ledger() -> None:
    before = _bench_databases()
    result = run(on_hand=2_000, batches=3, lookups=20, db=pgkit.ADMIN)
    assert result["engine"] == "postgresql"
    assert result["events_applied"] == 1_500 == result["ledger_events"]
    assert result["ledger_movements"] == 3_000  # a put-away is two ledger rows
    assert result["ledger_movements_without_event"] == 0  # no foreign key there: checked here
    assert result["ledger_stock_lines"] == 2_000  # 40 items x 50 bins, nothing new
    assert result["ledger_stock_total"] == result["ledger_stock_expected"] == 20_000
    assert result["ledger_lines_off"] == 0  # every line is its start plus its movements
    assert result["exceptions_raised"] == 0
    assert result["baseline"] in ("execute", "executemany", "copy_temp", "unnest")
    assert result["raw_pg_upserts_per_s"] == result[f"raw_{result['baseline']}_per_s"] == max(
        result[f"raw_{way}_per_s"] for way in ("execute", "executemany", "copy_temp", "unnest"))
    assert result["movements_per_s"] > 0 and result["ratio"] > 0
    assert 0 < result["stock_http_p50_ms"] <= result["stock_http_p99_ms"]
    assert _bench_databases() <= before  # its own database is gone
