"""Process entry points. ``run_stream_worker`` runs the Faust worker until SIGTERM/SIGINT.

Faust's worker handles the signals itself: it stops the agents, flushes the producer, commits the
acknowledged offsets and closes the tables, so a clean stop loses nothing and re-reads nothing.
"""

from __future__ import annotations

import asyncio

import faust

from stream.app import build_app
from stream.kafka_admin import ensure_topics
from stream.settings import Settings


def run_stream_worker(settings: Settings) -> None:
    # Topics first, with the configured partition count, before Faust or a producer can auto-create them.
    asyncio.run(ensure_topics(settings))
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    built = build_app(settings)
    worker = faust.Worker(built.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
