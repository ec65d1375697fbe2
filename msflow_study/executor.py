"""Executing the study's notebooks with papermill, robust to a kernel reply whose wake-up was missed."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any


def execute_notebook(src: str | os.PathLike, out: str | os.PathLike, parameters: dict[str, Any], cwd: str | os.PathLike,
                     cell_timeout: int | None = None, progress_bar: bool = False, say=print):
    """Execute the notebook ``src`` into ``out`` with papermill (kernel ``python3``, run from ``cwd``).

    Every wait on the kernel's shell and IOPub channels is cut into slices of at most :data:`POLL_SLICE_S` seconds
    (:func:`sliced_get_msg`): the asyncio poll of pyzmq can miss the wake-up of a message that has arrived, and it
    finds the message only when its poll times out. Papermill waits for a cell's reply with one poll as long as the
    cell timeout, forever without one: here the explorer page's ``execute_reply``, sent by the kernel 1.5 s into the
    cell, was read 600 s later, when the cell timeout expired (the timestamps are in the executed page; twice, the
    kernel meanwhile idle and answering a second client at once), and without a timeout such a wait never ended (three
    renders and one CI run hung). With slices, such a message is read within a slice.

    ``cell_timeout`` (seconds) is for notebooks whose every cell is quick: a cell that runs past it is taken for a
    lost reply, and the notebook is executed once more; a second timeout is raised. Notebooks that train get no
    timeout, as a training cell may run for hours on a CPU."""
    import papermill as pm

    attempts = 2 if cell_timeout else 1
    for attempt in range(1, attempts + 1):
        try:
            with _sliced_kernel_polls(POLL_SLICE_S):
                return pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                                           progress_bar=progress_bar, execution_timeout=cell_timeout)
        except TimeoutError:  # nbclient's CellTimeoutError
            if attempt == attempts:
                raise
            say(f"{Path(src).name}: a cell ran past {cell_timeout} s (a lost kernel reply); executing the notebook once more")


POLL_SLICE_S = 2.0


"""The longest single poll of a kernel channel in :func:`execute_notebook`: a reply whose wake-up was missed waits at
most this long."""


def sliced_get_msg(get_msg, slice_s: float):
    """An async ``get_msg(timeout=None)`` of a kernel channel that polls ``get_msg`` in slices of at most ``slice_s``
    seconds until ``timeout`` (forever if None), then raises ``queue.Empty`` as ``get_msg`` does."""
    from queue import Empty

    async def get_msg_sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_s if deadline is None else min(slice_s, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_sliced


@contextlib.contextmanager
def _sliced_kernel_polls(slice_s: float):
    """Within the block, papermill's notebook client polls its kernel channels with :func:`sliced_get_msg`."""
    import papermill.engines as engines
    from nbclient.util import run_sync

    base = engines.PapermillNotebookClient

    class SlicedClient(base):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = sliced_get_msg(channel.get_msg, slice_s)
            return kc

        # nbclient binds its synchronous wrapper to its own coroutine; papermill calls the wrapper
        start_new_kernel_client = run_sync(async_start_new_kernel_client)

    engines.PapermillNotebookClient = SlicedClient
    try:
        yield
    finally:
        engines.PapermillNotebookClient = base
