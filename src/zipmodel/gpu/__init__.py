"""Loading onto an accelerator (an optional extra: torch with CUDA, imported lazily).

:mod:`zipmodel.gpu.staging` moves decoded chunks to the device through a few reused pinned host
buffers, with non-blocking copies on a side stream (DESIGN §6). A decoder that runs on the
device is the step after.
"""
