"""A small ordered thread pool that carries DSPy's context (LM, adapter, callbacks) into its workers."""

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    num_threads: int = 1,
    on_result: Callable[[int, R], None] | None = None,
) -> list[R]:
    """Apply `fn` to every item, in up to `num_threads` threads, and return the results in input order.

    Each call runs in a copy of the caller's `contextvars` context, so `dspy.context(lm=..., callbacks=...)`
    set around this call applies inside the workers, and a worker's own context changes stay local to it.
    Unlike `dspy.Parallel`, nothing is ever resubmitted, so every LM call is made exactly once.

    Args:
        fn: The function; exceptions it raises propagate to the caller (after pending work is cancelled).
        items: The inputs.
        num_threads: Worker threads; 1 runs everything in the calling thread.
        on_result: Called as `on_result(index, result)` in the calling thread as results complete.

    Returns:
        `[fn(item) for item in items]`.
    """
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    if num_threads <= 1 or len(items) <= 1:
        for index, item in enumerate(items):
            results[index] = fn(item)
            if on_result is not None:
                on_result(index, results[index])
        return results

    with ThreadPoolExecutor(max_workers=min(num_threads, len(items))) as pool:
        futures = {pool.submit(contextvars.copy_context().run, fn, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                if on_result is not None:
                    on_result(index, results[index])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results

