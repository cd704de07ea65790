"""The server's asyncio plumbing: one engine output stream relayed as text deltas (stop strings applied), several
streams merged, a client's disconnect turned into cancellation, and chunks encoded as server-sent events.

Cancelling a coroutine that reads an engine stream closes the stream, which aborts its engine request, so a
client that goes away frees its slots.
"""

import asyncio
import json
import sys
import traceback

from openmimo.infer.api_request import APIError, api_error_body, error_body
from openmimo.infer.textstream import IncrementalDecoder, find_stop


class ClientGone(Exception):
    """The client disconnected before its reply was ready."""


async def relay(gen, tokenizer, n: int, stops: list[str], emit) -> None:
    """Read the engine output stream ``gen`` of one request with ``n`` samples; ``await emit(index, text_delta,
    token_ids, logprobs, finish_reason)`` per output.  A sample ends at its first stop string (the text from
    the match on is cut) or its end; ``finish_reason`` is then ``"stop"`` or ``"length"``."""
    decs = [IncrementalDecoder(tokenizer) for _ in range(n)]
    done = [False] * n
    try:
        async for o in gen:
            if done[o.index]:
                continue
            dec = decs[o.index]
            text = dec.push(o.token_ids, final=bool(o.finish_reason))  # a short window per push (textstream.py)
            reason = o.finish_reason
            if stops:
                cut = find_stop(dec.text, stops, len(dec.text) - len(text))
                if cut is not None:
                    text = text[: max(0, cut - (len(dec.text) - len(text)))]
                    reason = "stop"
            if reason:
                done[o.index] = True
                reason = "length" if reason == "length" else "stop"
            await emit(o.index, text, o.token_ids, o.logprobs, reason)
            if all(done):
                break
    finally:
        await gen.aclose()  # aborts the engine request if it is still running


async def wait_disconnect(request) -> None:
    """Return when the client has gone away (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request, coro):
    """Await ``coro``; cancel it (which aborts its engine requests) and raise ClientGone if the client leaves first."""
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientGone()
    return task.result()


class _Failed:
    """Put on the merge queue by a coroutine that raised: the consumer re-raises at once."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


_END = object()  # put on the merge queue by a coroutine that finished


async def merged(coros, q: asyncio.Queue):
    """Run ``coros`` (which put items on ``q``) concurrently and yield the items as they come, as lists: each list
    holds every item that was ready at once (a backlog costs one hand-over, not one per item), each coroutine's
    end marked on ``q`` after its last item, its exception re-raised as soon as it comes.  When the consumer stops
    early (a disconnected client cancels it) the coroutines are cancelled, which aborts their engine requests."""
    async def run(c):
        try:
            await c
        except BaseException as e:
            q.put_nowait(_Failed(e))
            raise
        q.put_nowait(_END)

    tasks = [asyncio.ensure_future(run(c)) for c in coros]
    done_all = asyncio.gather(*tasks)
    left = len(tasks)
    try:
        while left:
            batch = []
            item = await q.get()
            while True:
                if item is _END:
                    left -= 1
                elif type(item) is _Failed:
                    raise item.error
                else:
                    batch.append(item)
                if q.empty():
                    break
                item = q.get_nowait()
            if batch:
                yield batch
    finally:
        for t in tasks:
            t.cancel()
        # the gather finishes once the cancellations land; retrieve its outcome then, so that a dropped client
        # leaves no "exception was never retrieved" report in the log
        done_all.add_done_callback(lambda f: f.cancelled() or f.exception())


async def sse_events(chunks):
    """Lists of JSON chunks -> server-sent events (one string per list, one event per chunk) ending with
    ``data: [DONE]``; an error after the stream started is reported in-band (``data: {"error": ...}``) and the
    stream still ends properly."""
    try:
        async for batch in chunks:
            yield "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in batch)
    except APIError as e:
        yield f"data: {json.dumps(api_error_body(e))}\n\n"
    except Exception as e:  # the stream has started: report in-band, then end it properly
        traceback.print_exc(file=sys.stderr)
        err = error_body(f"internal server error: {type(e).__name__}: {e}"[:500], "server_error")
        yield f"data: {json.dumps(err)}\n\n"
    yield "data: [DONE]\n\n"
