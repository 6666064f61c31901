import random

import pytest

from streamrec.models.drift import DriftMonitor


def test_no_alarm_on_a_stationary_loss():
    monitor = DriftMonitor()
    rng = random.Random(0)
    assert not any(monitor.update(rng.gauss(1.0, 0.1)) for _ in range(3000))
    assert monitor.alarms == 0 and monitor.lr_multiplier() == 1.0


def test_alarm_on_a_jump_then_a_decaying_boost():
    monitor = DriftMonitor(boost=3.0, boost_steps=4)
    rng = random.Random(1)
    for _ in range(2000):
        monitor.update(rng.gauss(1.0, 0.1))
    fired_at = next(i for i in range(2000) if monitor.update(rng.gauss(2.0, 0.1)))
    assert fired_at < 200 and monitor.alarms == 1
    assert [monitor.lr_multiplier() for _ in range(6)] == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0, 1.0])
    for _ in range(1000):  # the new regime is stationary: no second alarm, and ADWIN follows it
        monitor.update(rng.gauss(2.0, 0.1))
    assert monitor.alarms == 1 and monitor.estimate == pytest.approx(2.0, abs=0.1)


def test_invalid_boost():
    with pytest.raises(ValueError):
        DriftMonitor(boost=0.5)
