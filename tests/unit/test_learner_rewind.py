"""The learner's rewind: a partition's training start is recorded only once a checkpoint holds it.

The lineage promise (docs/delivery.md point 4, checked by bench/torture.py) needs every partition a
model trains to appear in a checkpoint at its start before anything of it is trained. A rewind
cancelled while that checkpoint was written (a rebalance interrupting the table recovery that ran
it) used to leave the partition recorded but not checkpointed; the next rewind then took it as
known, and the lineage's first checkpoint of it came after training had begun (a torture run:
56 samples trained in ranges that held none).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from aiokafka.structs import TopicPartition

from streamrec.models.checkpoint import list_checkpoints
from streamrec.stream.settings import Settings
from streamrec.stream.worker.learner import Learner

CLICKS_0, CLICKS_1 = TopicPartition("streamrec.clicks", 0), TopicPartition("streamrec.clicks", 1)


class Ends:
    async def highwaters(self, *tps: TopicPartition) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 500)


def checkpointed_offsets(directory: Path) -> list[dict[str, dict[int, int]]]:
    return [torch.load(p, weights_only=True, map_location="cpu")["offsets"] for p in list_checkpoints(directory)]


@pytest.fixture
def learner(tmp_path: Path) -> Iterator[Learner]:
    made = Learner(Settings(state_dir=tmp_path, augment=False, param_sync=False))
    yield made
    made.close()  # it owns the baselines' process


def test_new_partitions_are_checkpointed_at_their_start_before_they_count_as_trained(learner: Learner) -> None:
    rewound = asyncio.run(learner.rewind(Ends(), {CLICKS_0: 40, CLICKS_1: 0}))
    assert rewound == {}  # nothing to rewind: the model starts where the group starts
    assert learner.trained == {("streamrec.clicks", 0): 40, ("streamrec.clicks", 1): 0}
    assert checkpointed_offsets(learner.settings.checkpoint_dir) == [{"streamrec.clicks": {0: 40, 1: 0}}]


def test_a_rewind_cancelled_while_checkpointing_records_nothing_and_the_next_one_checkpoints_again(
    learner: Learner, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    written = learner._write

    def slow_write(*args: Any, **kwargs: Any) -> None:
        release.wait(10)
        written(*args, **kwargs)

    monkeypatch.setattr(learner, "_write", slow_write)

    async def scenario() -> None:
        first = asyncio.ensure_future(learner.rewind(Ends(), {CLICKS_0: 40}))
        await asyncio.sleep(0.2)  # in the checkpoint's write
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert learner.trained == {}  # not recorded: no checkpoint was known to hold it
        release.set()
        # The next assignment starts the partition later (the group's commit moved on): that is its start.
        assert await learner.rewind(Ends(), {CLICKS_0: 55}) == {}

    asyncio.run(scenario())
    assert learner.trained == {("streamrec.clicks", 0): 55}
    # Both writes were at model version 0, so the newer replaced the older: the lineage starts at 55.
    assert checkpointed_offsets(learner.settings.checkpoint_dir) == [{"streamrec.clicks": {0: 55}}]


def test_a_known_partition_behind_the_commit_is_rewound_without_a_new_checkpoint(learner: Learner) -> None:
    asyncio.run(learner.rewind(Ends(), {CLICKS_0: 40}))
    assert asyncio.run(learner.rewind(Ends(), {CLICKS_0: 90})) == {CLICKS_0: 40}
    assert len(list_checkpoints(learner.settings.checkpoint_dir)) == 1


def test_a_partition_past_its_log_end_restarts_where_the_group_starts(learner: Learner) -> None:
    learner.trained[("streamrec.clicks", 0)] = 900  # the topic was recreated: its log ends at 500 now
    assert asyncio.run(learner.rewind(Ends(), {CLICKS_0: 20})) == {}
    assert learner.trained == {("streamrec.clicks", 0): 20}
    assert checkpointed_offsets(learner.settings.checkpoint_dir) == [{"streamrec.clicks": {0: 20}}]
