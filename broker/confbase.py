"""What every configuration section shares: strict, frozen models and bounded seconds."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_SECONDS", "Seconds", "Strict"]


class Strict(BaseModel):
    """A configuration section: unknown keys are errors, and it cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_SECONDS = 10 * 366 * 86_400.0
"""The longest any Seconds or deadline may be (ten years): past it Redis cannot take the
milliseconds, and nothing should live that long in a queue anyway."""
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
