"""Executing notebooks with papermill: a kernel reply whose wake-up was missed costs one poll slice, not the cell timeout."""

from pathlib import Path

import pytest

from msflow_study import executor, pipeline


def test_a_quick_notebook_whose_cell_hangs_is_executed_once_more(tmp_path, monkeypatch):
    module = pipeline
    calls = []

    def execute_notebook(src, out, **kwargs):
        calls.append(kwargs["execution_timeout"])
        if len(calls) == 1:
            raise TimeoutError("A cell timed out while it was being executed, after 5 seconds.")
        Path(out).write_text("{}")

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    executed = tmp_path / "book" / "executed"
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "EXECUTED", executed)
    monkeypatch.setattr(module, "WORK", tmp_path / ".msflow-study")
    log = []
    assert module.execute("explore", executed / "explore.ipynb", {}, True, log, cell_timeout=5)
    assert calls == [5, 5] and log[-1].startswith("executed")
    # without a timeout (a notebook that trains) nothing is retried, and a failure is logged, not raised
    calls.clear()
    assert not module.execute("explore", executed / "other.ipynb", {}, True, log)
    assert calls == [None] and log[-1].startswith("FAILED explore {}: TimeoutError")
    # a second timeout is not retried again: the page is reported as failed
    def always_hangs(src, out, **kwargs):
        calls.append(kwargs["execution_timeout"])
        raise TimeoutError("again")

    calls.clear()
    monkeypatch.setattr("papermill.execute_notebook", always_hangs)
    assert not module.execute("explore", executed / "third.ipynb", {}, True, log, cell_timeout=5)
    assert calls == [5, 5] and log[-1] == ("FAILED explore {}: TimeoutError: again (partial notebook in "
                                           ".msflow-study/failed/third.ipynb; the book has no such page)")


def test_kernel_channel_polls_are_sliced_so_a_missed_wake_up_costs_one_slice():
    import asyncio
    import time
    from queue import Empty

    waits = []

    def channel(arrives_at: float | None):
        """A channel's get_msg that, as pyzmq's asyncio poll after a missed wake-up, sees a message that has arrived
        only when its poll times out."""
        start = time.monotonic()

        async def get_msg(timeout=None):
            waits.append(timeout)
            await asyncio.sleep(timeout)
            if arrives_at is not None and time.monotonic() - start >= arrives_at:
                return {"msg_type": "execute_reply"}
            raise Empty

        return get_msg

    sliced = executor.sliced_get_msg(channel(0.0), slice_s=0.05)
    t0 = time.monotonic()
    assert asyncio.run(sliced(timeout=30)) == {"msg_type": "execute_reply"}  # one slice, not the 30 s timeout
    assert time.monotonic() - t0 < 5 and waits == [0.05]
    waits.clear()
    assert asyncio.run(executor.sliced_get_msg(channel(0.12), 0.05)(timeout=None))["msg_type"] == "execute_reply"
    assert waits == [0.05, 0.05, 0.05]  # no timeout: polls slice by slice until the message is read
    waits.clear()
    t0 = time.monotonic()
    with pytest.raises(Empty):  # nothing arrives: Empty at the timeout, as the channel's own get_msg
        asyncio.run(executor.sliced_get_msg(channel(None), 0.05)(timeout=0.12))
    assert 0.12 <= time.monotonic() - t0 < 2 and max(waits) == 0.05 and sum(waits) == pytest.approx(0.12, abs=0.02)


def test_notebooks_are_executed_by_a_client_with_sliced_polls_and_papermill_is_restored(monkeypatch):
    import papermill.engines as engines

    base, seen = engines.PapermillNotebookClient, []

    def execute_notebook(src, out, **kwargs):
        seen.append(engines.PapermillNotebookClient)
        raise RuntimeError("stop here")

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    with pytest.raises(RuntimeError, match="stop here"):
        executor.execute_notebook("a.ipynb", "b.ipynb", {}, ".")
    assert issubclass(seen[0], base) and seen[0] is not base  # the sliced client, during the call only
    assert engines.PapermillNotebookClient is base


def test_a_real_execution_polls_its_kernel_through_the_slices(tmp_path, monkeypatch):
    import nbformat

    sliced = []
    real = executor.sliced_get_msg

    def spy(get_msg, slice_s):
        inner = real(get_msg, slice_s)

        async def get_msg_spied(timeout=None):
            sliced.append(timeout)
            return await inner(timeout)

        return get_msg_spied

    monkeypatch.setattr(executor, "sliced_get_msg", spy)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("6 * 7")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = executor.execute_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {}, tmp_path, cell_timeout=60)
    assert out.cells[0].outputs[0]["data"]["text/plain"] == "42"
    assert 60 in sliced  # the cell's reply was awaited through the sliced channel, with the cell timeout as deadline
