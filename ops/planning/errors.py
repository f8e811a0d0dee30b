"""Errors of the capacity planner.

    SwitchyardError          (switchyard.broker.errors)
    └── PlanningError        anything the planner cannot do with what it was given
        ├── WorkloadError    a workload file (or trace) that does not parse or validate
        └── ProfileError     a profile file that does not parse, or a pool without one
"""

from __future__ import annotations

from switchyard.broker.errors import SwitchyardError

__all__ = ["PlanningError", "ProfileError", "WorkloadError"]


class PlanningError(SwitchyardError):
    pass


class WorkloadError(PlanningError):
    pass


class ProfileError(PlanningError):
    pass
