"""Process set-up that must happen before TensorFlow is imported: threads, backend, devices."""

from __future__ import annotations

import os


def setup(threads: int = 1, backend: str = "tensorflow") -> str:
    """Fix the thread pools and the Keras backend; return a description of the device used.

    TensorFlow reads these variables once, when it starts, so this runs before any import of
    keras or tensorflow. One intra-op thread per Snakemake thread keeps parallel jobs from
    oversubscribing the cores.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = backend
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return f"GPU (CUDA_VISIBLE_DEVICES={visible})"
    return "CPU"
