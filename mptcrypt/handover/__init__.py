"""Mobile handover simulation: a Wi-Fi + LTE host moving between networks, plain MPTCP vs mptcrypt.

Layout: `scenario` (TOML timelines in topologies/scenarios/, parsed and checked, pure), `workload` (the bulk
and request/response applications, one process per namespace), `sampler` (`ss` every 100 ms: per-subflow
counters), `runner` (network, daemons, timeline, measurements, resumption check), `plot` (PNG), `report`
(checks and table), `cli` (`mptcrypt handover`, `python -m mptcrypt.handover`). See docs/handover.md.
"""

from mptcrypt.handover.scenario import Event, Scenario, load_scenario, scenario_files

__all__ = ["Event", "Scenario", "load_scenario", "scenario_files"]
