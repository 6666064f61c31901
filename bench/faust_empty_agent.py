"""A Faust agent that does nothing but count (``take_events``): the framework's own ceiling.

Run by ``bench/ingest.py`` as ``python -m streamrec.bench.faust_empty_agent TOTAL OUT_FILE`` with the same
STREAMREC_* environment; writes the measured events/s to OUT_FILE and exits.
"""

from __future__ import annotations

import os
import sys
import time

import faust

from streamrec.stream.kafka.security import faust_credentials
from streamrec.stream.settings import Settings

settings = Settings()
total, out_file = int(sys.argv[1]), sys.argv[2]
app = faust.App(
    f"{settings.app_id}-empty",
    broker=";".join(f"kafka://{host}" for host in settings.bootstrap_servers.split(",")),
    broker_credentials=faust_credentials(settings),
    store="memory://",
    web_enabled=False,
    datadir=str(settings.state_dir / "empty-agent"),
    consumer_auto_offset_reset="earliest",
    broker_max_poll_records=settings.max_poll_records,
    stream_buffer_maxsize=20000,  # Faust's per-stream buffer (the worker has no Faust streams)
)
topic = app.topic(*settings.interaction_topics, key_serializer="raw", value_serializer="raw")
seen = {"n": 0, "t0": 0.0}


@app.agent(topic)
async def count(stream: faust.StreamT) -> None:
    async for events in stream.take_events(settings.batch_size, within=0.2):
        seen["t0"] = seen["t0"] or time.perf_counter()
        seen["n"] += len(events)
        if seen["n"] >= total:
            with open(out_file, "w") as f:  # noqa: ASYNC230 - last act before exit
                f.write(str(seen["n"] / (time.perf_counter() - seen["t0"])))
            os._exit(0)  # the measurement is written; no need for a graceful shutdown


if __name__ == "__main__":
    # --without-web: Faust's worker command turns the web server on whatever web_enabled says, and on its
    # fixed default port (6066) the measurement failed whenever a stream worker was running beside it.
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
