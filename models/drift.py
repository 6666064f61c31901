"""Concept-drift handling: river's ADWIN watches the prequential loss and triggers a reaction.

When the stream changes (a new season, a catalogue overhaul), a model tuned to the old regime
adapts slowly with a learning rate chosen for a stable one. On an ADWIN alarm the monitor raises
the learning-rate multiplier to ``boost`` for ``boost_steps`` training steps, then decays it back
to 1 linearly, and counts the alarm (exported as a metric later).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from river import drift


@dataclass
class DriftMonitor:
    delta: float = 0.002
    boost: float = 3.0
    boost_steps: int = 200
    alarms: int = 0
    _detector: drift.ADWIN = field(init=False, repr=False)
    _steps_left: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.boost < 1 or self.boost_steps < 1:
            raise ValueError("boost must be >= 1 and boost_steps >= 1")
        self._detector = drift.ADWIN(delta=self.delta)

    def update(self, loss: float) -> bool:
        """Feed one prequential loss value; True when this value raised an alarm."""
        self._detector.update(loss)
        if self._detector.drift_detected:
            self.alarms += 1
            self._steps_left = self.boost_steps
            return True
        return False

    def lr_multiplier(self) -> float:
        """The factor for the next training step's learning rate (consumes one boosted step)."""
        if self._steps_left <= 0:
            return 1.0
        factor = 1.0 + (self.boost - 1.0) * self._steps_left / self.boost_steps
        self._steps_left -= 1
        return factor

    @property
    def estimate(self) -> float:
        """ADWIN's current mean of the loss over its adaptive window."""
        return self._detector.estimation
