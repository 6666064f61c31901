"""The Kafka layer: the embedded broker, topic administration, client security, the batch consumer.

Everything here knows Kafka and Faust's consumer but nothing of recommendations; the stream worker
and the inference service build on it.
"""
