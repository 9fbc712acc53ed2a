"""Follow one object through the API: list it, then watch it, for as long as asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.resources import Resource

log = logging.getLogger("switchyard.kube")

OnChange = Callable[[dict[str, Any] | None], Awaitable[None]]


async def follow(
    client: KubeClient,
    res: Resource,
    namespace: str,
    name: str,
    on_change: OnChange,
    stop: asyncio.Event,
    max_delay: float = 30.0,
) -> None:
    """Call ``on_change`` with the object (None while it does not exist) now and after
    every change, until cancelled (``stop`` also ends it, between events and retries).

    410 Gone (the watch fell too far behind) lists again at once. Any other failure is
    logged and retried with a growing delay: a refused credential (401) or a missing
    permission (403) as an error, since only a person can fix it.
    """
    what = f"{res.kind} {namespace}/{name}"
    selector = {"metadata.name": name}
    delay = 1.0
    while not stop.is_set():
        try:
            items, version = await client.list(res, namespace, fields=selector)
            await on_change(items[0] if items else None)
            delay = 1.0
            async for kind, obj in client.watch(res, namespace, version, fields=selector):
                if kind in ("ADDED", "MODIFIED"):
                    await on_change(obj)
                elif kind == "DELETED":
                    await on_change(None)
                if stop.is_set():
                    return
            continue
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            if exc.status == 410:
                continue
            level = logging.ERROR if exc.status in (401, 403) else logging.WARNING
            log.log(level, "following %s: %s; retrying in %.0fs", what, exc, delay)
        except Exception as exc:  # whatever happens, keep following
            log.warning("following %s: %s; retrying in %.0fs", what, exc, delay, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)
