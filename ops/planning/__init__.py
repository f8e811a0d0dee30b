"""The capacity planner (issue 21): workloads, profiles, the simulator, the plan.

- ``workload.py``: the workload file (traffic, SLOs, prices) and ``--from-redis``;
- ``profile.py`` / ``profiling.py``: a pool's service curve, and measuring it;
- ``simulator.py``: the discrete-event simulator of a pool (admission by
  ``broker/admission_model.py``);
- ``planner.py``: the search for the cheapest worker count meeting the SLOs;
- ``report.py``: the table, the config snippet and the plot; ``cli.py``: the commands.
"""

__all__: list[str] = []
