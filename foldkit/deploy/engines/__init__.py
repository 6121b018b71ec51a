"""Detect engines: where the per-image work runs — in this process, or on a Ray cluster.

Every engine calls :func:`foldkit.deploy.engines.batch.detect_batch` on each batch of image paths,
so the local and the Ray engine give the same answers by construction; they differ only in who
runs the batches and how the results reach the output files (:mod:`.sinks`).
"""
