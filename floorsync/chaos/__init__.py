"""``floorsync chaos``: a randomized fault campaign over the whole product, both paths.

Real parts, each its own process as on a site: the central broker (mosquitto with a persistence
directory), the central service (``floorsync server`` on SQLite), the edge agent (``floorsync
edge --config``) and, for the dock path, a reader-side mosquitto (persistence on) fed by a
simulated Zebra / Impinj network reader that publishes tag-read JSON at QoS 1 with a persistent
session. The handheld path is a scripted serial scanner on a pseudo-terminal read by the edge's
real pyserial path; this process plays the operator and listens for the good-read feedback.

Ground truth is what this process generated; after the faults, the central ledger says, per
generated item, how many events were applied: lost and doubled events are counted. Faults are
drawn by a seeded RNG, one at a time at random moments.

The modules, each importing only those above it:

- ``scenarios``: the fault kinds each path can take, the named scenarios, a scenario's result.
- ``processes``: the brokers, the central service and the edge agent as processes (start, stop,
  kill, restart; the central service stalled; the edge under libfaketime).
- ``handheld``: the operator scanning labels on the pty, and what counts as generated there.
- ``dock``: the network reader at the door, and what counts as generated there.
- ``site``: one scenario's site: its processes and floor set up and torn down, the edge's config.
- ``faults``: each fault kind and how it is injected.
- ``cluster``: the several-hosts scenarios, each on parts of its own: a three-node NATS cluster,
  two central replicas on a PostgreSQL database, a real edge; a broker node, a replica, both, or
  the replicas' database connections lost mid-stream (recovery time per fault).
- ``campaign``: the run of one scenario (faults, recovery, the count), the campaign, the report.

Part of the composition root (like ``floorsync.bench``): it starts ``floorsync server`` and
``floorsync edge`` as subprocesses and reads the ledger file directly, read-only.
"""

from __future__ import annotations

from floorsync.chaos.campaign import HEADER, _line, run_campaign
from floorsync.chaos.cluster import CLUSTER_SCENARIOS
from floorsync.chaos.scenarios import SCENARIOS, Result, Scenario

__all__ = ["CLUSTER_SCENARIOS", "HEADER", "SCENARIOS", "Result", "Scenario", "_line",
           "run_campaign"]
