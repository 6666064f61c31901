"""DynamicBatcher with fake handlers that record the batches they receive (no models, no Kafka)."""

import asyncio
import json
import threading
import time

import pytest

from streamrec.models.inference.batcher import BatcherStopped, DynamicBatcher, Expired, QueueFull


class Recorder:
    """A handler that records each batch, optionally sleeps (a model call) and echoes its payloads."""

    def __init__(self, delay_s: float = 0.0, transform=lambda payload: payload) -> None:
        self.batches: list[list] = []
        self.delay_s = delay_s
        self.transform = transform
        self.threads: set[str] = set()

    def __call__(self, payloads: list) -> list:
        self.batches.append(list(payloads))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self.transform(p) for p in payloads]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_batches_never_exceed_max_batch_and_results_map_to_their_requests():
    handler = Recorder(delay_s=0.002, transform=lambda p: p * 10)

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=8, max_wait_s=0.01, max_queue=1000) as batcher:

            async def one(i):
                await asyncio.sleep((i % 7) * 0.001)  # interleaved arrivals
                return i, await batcher.submit("x", i)

            results = await asyncio.gather(*(one(i) for i in range(300)))
            return results, batcher.stats

    results, stats = run(main())
    assert all(result == i * 10 for i, result in results)
    assert max(len(b) for b in handler.batches) <= 8
    assert sorted(p for b in handler.batches for p in b) == list(range(300))  # each request exactly once
    assert stats.completed == stats.submitted == 300 and stats.batches == len(handler.batches)
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 300
    assert stats.mean_batch_size > 2  # requests really were batched
    assert len(stats.latencies_s) == 300 and stats.queue_depth == 0
    summary = json.loads(json.dumps(stats.as_dict()))  # JSON-ready for a /stats endpoint
    assert summary["completed"] == 300 and set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert len(handler.threads) == 1  # one worker thread, never the event loop's
    assert threading.main_thread().name not in handler.threads


def test_a_full_batch_goes_at_once_and_a_lone_request_after_max_wait():
    handler = Recorder()

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=4, max_wait_s=0.2) as batcher:
            started = time.monotonic()
            await asyncio.gather(*(batcher.submit("x", i) for i in range(4)))
            full_s = time.monotonic() - started
            started = time.monotonic()
            await batcher.submit("x", "alone")
            lone_s = time.monotonic() - started
        return full_s, lone_s

    full_s, lone_s = run(main())
    assert full_s < 0.15  # did not wait for max_wait (0.2 s)
    assert 0.19 <= lone_s < 0.5
    assert handler.batches == [[0, 1, 2, 3], ["alone"]]


def test_length_bucketing_groups_similar_lengths():
    handler = Recorder()

    async def main():
        async with DynamicBatcher(
            {"x": handler}, max_batch=4, max_wait_s=0.05, length_of=lambda kind, text: len(text), bucket_width=10
        ) as batcher:
            texts = [("s" * 5 if i % 2 == 0 else "l" * 50) + str(i) for i in range(8)]  # interleaved lengths
            await asyncio.gather(*(batcher.submit("x", t) for t in texts))

    run(main())
    assert len(handler.batches) == 2
    for batch in handler.batches:
        assert len({len(text) // 10 for text in batch}) == 1, batch


def test_kinds_are_never_mixed_in_a_batch():
    handlers = {"a": Recorder(), "b": Recorder()}

    async def main():
        async with DynamicBatcher(handlers, max_batch=16, max_wait_s=0.01) as batcher:
            await asyncio.gather(*(batcher.submit("a" if i % 3 else "b", i) for i in range(30)))

    run(main())
    assert all(p % 3 for batch in handlers["a"].batches for p in batch)
    assert all(p % 3 == 0 for batch in handlers["b"].batches for p in batch)


def test_a_due_bucket_is_topped_up_from_the_nearest_buckets_of_its_kind():
    handler = Recorder()

    async def main():
        async with DynamicBatcher(
            {"x": handler}, max_batch=3, max_wait_s=0.05, length_of=lambda kind, n: n, bucket_width=10
        ) as batcher:
            await asyncio.gather(*(batcher.submit("x", n) for n in (5, 95, 15, 45)))

    run(main())
    assert handler.batches[0] == [5, 15, 45]  # oldest bucket first, then the closest lengths
    assert handler.batches[1] == [95]


def test_the_oldest_bucket_is_not_starved_by_busy_buckets():
    handler = Recorder(delay_s=0.005)

    async def main():
        async with DynamicBatcher(
            {"x": handler}, max_batch=2, max_wait_s=0.05, length_of=lambda kind, n: n, bucket_width=10
        ) as batcher:
            rare = asyncio.create_task(batcher.submit("x", 500))
            started = time.monotonic()
            busy = []
            while not rare.done() and time.monotonic() - started < 2.0:  # short requests keep filling batches
                busy += [asyncio.create_task(batcher.submit("x", 1)) for _ in range(2)]
                await asyncio.sleep(0.002)
            await rare
            waited = time.monotonic() - started
            await asyncio.gather(*busy)
            return waited

    assert run(main()) < 0.5  # max_wait is 0.05 s; the busy buckets would go on for 2 s


def test_expired_requests_never_reach_the_handler():
    handler = Recorder(delay_s=0.15)

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=1, max_wait_s=0.0) as batcher:
            first = asyncio.create_task(batcher.submit("x", "first"))  # keeps the worker busy for 150 ms
            await asyncio.sleep(0.01)
            late = asyncio.create_task(batcher.submit("x", "late", deadline=time.monotonic() + 0.05))
            fine = asyncio.create_task(batcher.submit("x", "fine", deadline=time.monotonic() + 5))
            with pytest.raises(Expired):
                await batcher.submit("x", "already late", deadline=time.monotonic() - 1)
            with pytest.raises(Expired):
                await late
            assert not first.done()  # failed promptly, while the model was still busy
            assert await first == "first" and await fine == "fine"
            return batcher.stats

    stats = run(main())
    assert handler.batches == [["first"], ["fine"]]
    assert stats.expired == 2 and stats.completed == 2 and stats.submitted == 4


def test_queue_full_at_the_bound_then_accepts_again():
    handler = Recorder(delay_s=0.1)

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=2, max_wait_s=0.0, max_queue=3) as batcher:
            pending = [asyncio.create_task(batcher.submit("x", i)) for i in range(3)]
            await asyncio.sleep(0.01)  # one batch in flight, one request queued: 3 pending
            started = time.monotonic()
            with pytest.raises(QueueFull):
                await batcher.submit("x", 99)
            assert time.monotonic() - started < 0.01  # raised at once, never blocked
            assert batcher.stats.queue_depth == 3
            assert await asyncio.gather(*pending) == [0, 1, 2]
            assert await batcher.submit("x", 4) == 4
            return batcher.stats

    stats = run(main())
    assert stats.rejected == 1 and stats.submitted == 4 and stats.completed == 4


def test_a_failing_handler_fails_only_its_batch():
    def handler(payloads):
        if "boom" in payloads:
            raise RuntimeError("model exploded")
        return [p.upper() for p in payloads]

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=2, max_wait_s=0.01) as batcher:
            results = await asyncio.gather(
                batcher.submit("x", "a"), batcher.submit("x", "boom"), batcher.submit("x", "c"), return_exceptions=True
            )
            after = await batcher.submit("x", "still running")
            return results, after, batcher.stats

    results, after, stats = run(main())
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)  # same batch
    assert results[2] == "C" and after == "STILL RUNNING"
    assert stats.failed == 2 and stats.completed == 2


def test_a_handler_returning_the_wrong_count_fails_its_batch():
    async def main():
        async with DynamicBatcher({"x": lambda payloads: payloads[:-1]}, max_batch=2, max_wait_s=0.0) as batcher:
            with pytest.raises(ValueError, match="returned 0 results for 1"):
                await batcher.submit("x", 1)

    run(main())


def test_unknown_kind_and_not_started():
    async def main():
        batcher = DynamicBatcher({"embed": Recorder()})
        with pytest.raises(BatcherStopped, match="start"):
            await batcher.submit("embed", "x")
        batcher.start()
        with pytest.raises(ValueError, match=r"unknown request kind 'score'.*embed"):
            await batcher.submit("score", "x")
        await batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.submit("embed", "x")

    run(main())


def test_stop_drains_or_cancels_pending_requests():
    async def main(drain: bool):
        handler = Recorder(delay_s=0.05)
        batcher = DynamicBatcher({"x": handler}, max_batch=2, max_wait_s=10.0)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit("x", i)) for i in range(5)]
        await asyncio.sleep(0.01)  # two batches of 2 went at once (full), one request waits for max_wait
        await batcher.stop(drain=drain)
        return await asyncio.gather(*pending, return_exceptions=True), batcher.stats

    drained, stats = run(main(drain=True))
    assert drained == [0, 1, 2, 3, 4] and stats.completed == 5
    cancelled, stats = run(main(drain=False))
    assert cancelled[:2] == [0, 1]  # the batch in flight finishes
    assert all(isinstance(r, BatcherStopped) for r in cancelled[2:])
    assert stats.cancelled == 3 and stats.submitted == stats.completed + stats.cancelled


def test_a_caller_cancelling_withdraws_its_queued_request():
    handler = Recorder()

    async def main():
        async with DynamicBatcher({"x": handler}, max_batch=10, max_wait_s=0.05) as batcher:
            withdrawn = asyncio.create_task(batcher.submit("x", "withdrawn"))
            kept = asyncio.create_task(batcher.submit("x", "kept"))
            await asyncio.sleep(0)
            withdrawn.cancel()
            assert await kept == "kept"
            return batcher.stats

    stats = run(main())
    assert handler.batches == [["kept"]]
    assert stats.cancelled == 1 and stats.queue_depth == 0


def test_invalid_settings():
    with pytest.raises(ValueError):
        DynamicBatcher({})
    with pytest.raises(ValueError):
        DynamicBatcher({"x": Recorder()}, max_batch=0)
    with pytest.raises(ValueError):
        DynamicBatcher({"x": Recorder()}, max_wait_s=-1)
