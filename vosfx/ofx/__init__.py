"""The vosfx side of the OpenFX effect (plugins/ofx): a worker process that keeps one tracking
session per effect instance and answers the effect's requests over a local channel.

Importing this package imports nothing heavy; :mod:`vosfx.ofx.worker` loads the engine only
when the first frame is rendered.
"""
