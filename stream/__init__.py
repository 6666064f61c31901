"""streamrec's streaming side, in four rooms that depend on each other one way.

``tools`` (CLI, demo, replay) → ``worker`` (the stream worker's Faust app) → ``inference`` (the
inference service's transport) → ``kafka`` (broker, admin, security, consumer); ``settings`` and
``metrics`` sit underneath all of them. The maths they run is in :mod:`streamrec.models`.
"""
