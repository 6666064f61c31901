"""The pure cores: recommender, learner, evaluation, baselines, augmentation and inference.

Nothing here touches Kafka: each module is a plain library, tested without a broker, and its thin
async shell lives under :mod:`streamrec.stream` with the same name (``models.learner`` and
``stream.worker.learner``, ``models.augmentation`` and ``stream.worker.augmentation``, ...).
"""
