"""The inference service's Kafka transport, paired with the pure library in ``streamrec.models.inference``.

``protocol`` is the record format on the two inference topics, ``client`` the stream worker's side
(requests with deadlines), ``worker`` the ``streamrec worker augment`` process around the batcher.
"""
