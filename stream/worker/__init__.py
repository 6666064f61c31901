"""The stream worker: events in, validated and applied to user state, trained on, published, served.

Data flows one way through its modules: ``contract`` (what an event is) → ``ingest`` (a fetched batch
into table updates and dead letters) → ``user_state`` → ``augmentation`` → ``learner`` (test, then
train) → ``publisher`` (embeddings) and ``api`` (HTTP); ``app`` wires them into one Faust app and
``process`` runs it.
"""
