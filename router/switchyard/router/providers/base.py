"""The HTTP plumbing every adapter shares: ``HTTPAdapter``.

One pooled ``aiohttp`` session per upstream. Errors become the router's typed
``UpstreamError``s carrying the provider's status, its error type and its
``Retry-After``; the provider's own error text is kept short and never holds
our credentials (we never send them back, and upstreams don't echo them), and reaches a
client only when it is in the protocol's error shape. Redirects are not followed, and
every address connected to passes the address policy (``providers.addresses``).
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson

from switchyard.router.contract import Network, Provider, url_refusal
from switchyard.router.core.adapter import ProbeResult
from switchyard.router.core.balance import Balancer, Endpoint, Pick, affinity_key
from switchyard.router.core.chat import FLUSH, ChatRequest, ChatResult, Relayed, StreamEvent
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.core.slots import with_slot
from switchyard.router.errors import (
    BadRequest,
    InternalError,
    UpstreamAddressRefused,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from switchyard.router.protocols.sse import BlockReader, EventRelay
from switchyard.router.providers import load
from switchyard.router.providers.addresses import AddressGuard, GuardedResolver, RefusedAddress
from switchyard.router.providers.read_watch import ReadWatch
from switchyard.router.tracing import with_trace

log = logging.getLogger("switchyard.router")

#: What every call to a provider says it comes from.
USER_AGENT = "Switchyard"

_MAX_ERROR_TEXT = 300
#: The most endpoints one call tries before it fails as the provider's failure.
_MAX_ENDPOINT_TRIES = 3
#: Seconds an endpoint the table dropped has to finish the calls waiting on it.
REMOVED_GRACE = 5.0
#: Answers that say this endpoint, not the request, is the trouble: another may serve.
_ENDPOINT_STATUSES = frozenset({429, 502, 503, 504})

T = TypeVar("T")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` (delta-seconds or HTTP date) or ``retry-after-ms``."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HTTPAdapter(abc.ABC):
    """An ``Adapter`` (see ``core.adapter``) that speaks HTTP; one subclass per protocol."""

    #: Where a server of this protocol publishes its load (``providers.load``); None:
    #: nowhere, and its endpoints are balanced on the router's own in-flight counts.
    metrics_path: str | None = "/metrics"

    def __init__(
        self, provider: Provider, api_key: str | None, allowed: Sequence[Network] = ()
    ) -> None:
        self.provider = provider
        self.api_key = api_key
        self.base_url = provider.url
        #: What the table lets providers reach beyond the defaults (providerNetworks).
        self.allowed = tuple(allowed)
        #: Why this provider may not be reached at all (its baseUrl's host); None: it may.
        self.refused = url_refusal(provider.provider_type, self.base_url, self.allowed)
        t = provider.timeouts
        self.connect_timeout = t.connect_ms / 1000
        self.first_token_timeout = t.first_token_ms / 1000
        self._total_timeout = t.total_ms / 1000
        self._session: aiohttp.ClientSession | None = None
        self._call_timeout = aiohttp.ClientTimeout(
            total=self._total_timeout, sock_connect=self.connect_timeout
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            total=self._total_timeout,
            sock_connect=self.connect_timeout,
            sock_read=self.first_token_timeout,
        )
        self._probe_timeout = aiohttp.ClientTimeout(
            total=min(self._total_timeout, 10.0), sock_connect=self.connect_timeout
        )
        #: The provider's endpoints, when it has several (``core.balance``); None: its
        #: baseUrl is called.
        self.balancer: Balancer | None = None
        self._scrapers = load.Scrapers(self)
        self.retarget(provider)

    def retarget(self, provider: Provider) -> None:
        """The table's provider now: an edit that keeps how it is reached keeps the
        adapter, and its endpoints (pods that came or went) are followed here."""
        self.provider = provider
        removed = list(self.balancer.endpoints.values()) if self.balancer is not None else []
        if not provider.endpoints:
            self.balancer = None
        elif self.balancer is None:
            self.balancer = Balancer(self.base_url, provider.endpoints)
        else:
            _, removed = self.balancer.update(self.base_url, provider.endpoints)
        self._scrapers.sync()
        self._let_go(removed)

    @staticmethod
    def _let_go(removed: Sequence[Endpoint]) -> None:
        """Endpoints the table no longer lists (a pod terminating, say) finish what they
        hold if they answer within ``REMOVED_GRACE`` seconds; calls still waiting on
        them then go elsewhere. A pod killed mid-answer may hold its connections open,
        silent, until the kubelet's grace period ends it."""
        waiting = [ep for ep in removed if ep.waits]
        if not waiting:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for ep in waiting:
            loop.call_later(REMOVED_GRACE, Balancer.abandon, ep)

    def key_of(self, req: ChatRequest, model_name: str) -> int | None:
        """The request's affinity key when the provider has endpoints to choose from."""
        return affinity_key(req, model_name) if self.balancer is not None else None

    @property
    def total_timeout(self) -> float:
        return self._total_timeout

    # -- the interface ----------------------------------------------------
    @abc.abstractmethod
    async def complete(self, req: ChatRequest, model_name: str, max_tokens: int) -> ChatResult:
        """One non-streaming completion."""

    @abc.abstractmethod
    def stream(
        self, req: ChatRequest, model_name: str, max_tokens: int
    ) -> AsyncIterator[StreamEvent]:
        """A streaming completion; the last event is ``Finish``."""

    @abc.abstractmethod
    async def list_models(self) -> list[str]:
        """The model names the provider serves, where its API can say."""

    async def count_tokens(self, req: ChatRequest, model_name: str) -> int | None:
        """None: only protocols with a counting endpoint override this."""
        return None

    async def probe(self, model_names: Sequence[str]) -> ProbeResult:
        """List models, which every supported API answers cheaply, and check that each
        declared model is among them."""
        if self.refused is not None:
            return ProbeResult(
                "unhealthy", None, time.time(), f"refused: {self.refused}", refused=True
            )
        started = time.monotonic()
        try:
            models = await self.list_models()
        except UpstreamError as exc:
            refused = isinstance(exc, UpstreamAddressRefused)
            return ProbeResult("unhealthy", None, time.time(), exc.detail, refused=refused)
        latency = (time.monotonic() - started) * 1000
        missing = [m for m in dict.fromkeys(model_names) if models and not self.serves(models, m)]
        if missing:
            return ProbeResult(
                "degraded",
                latency,
                time.time(),
                f"not served: {', '.join(missing)}",
                models,
                missing,
            )
        return ProbeResult("healthy", latency, time.time(), "ok", models)

    @staticmethod
    def serves(models: list[str], name: str) -> bool:
        """Whether the listing ``models`` holds the model the table calls ``name``."""
        return name in models

    # -- plumbing -----------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self.refused is not None:
            raise UpstreamAddressRefused(
                f"provider {self._name()!r} may not be reached: its {self.refused}",
                provider=self._name(),
            )
        if self._session is None or self._session.closed:
            # Every address connected to is checked against the policy: a name's as it
            # is resolved (so a name can keep its allowed addresses), and every socket's,
            # literal or resolved, as it is opened.
            guard = AddressGuard(self._name(), self.provider.provider_type, self.allowed)
            connector = aiohttp.TCPConnector(
                limit=self.provider.max_connections,
                ttl_dns_cache=300,
                keepalive_timeout=60,
                resolver=GuardedResolver(guard),
                socket_factory=guard.socket,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Every call's: a call gives only what it adds or changes (an adapter's
                # key is its own for life). aiohttp copies these in C; a dict per call
                # would be converted and merged header by header. The user agent names
                # Switchyard, not the HTTP client and its version (aiohttp's own).
                headers=self.headers() | {"User-Agent": USER_AGENT},
                timeout=self._call_timeout,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                # Streamed tool calls can arrive as one long line.
                read_bufsize=4 * 1024 * 1024,
                auto_decompress=True,
                # A jar would keep what any answer sets, without bound, and send it with
                # every caller's later requests to the provider.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        await self._scrapers.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """Authentication and protocol headers for every request."""

    @abc.abstractmethod
    def error_type(self, status: int, body: bytes) -> tuple[str | None, str | None]:
        """The provider's error type and message from an error body in its protocol's
        shape; no message when the body is not in that shape."""

    def _name(self) -> str:
        return self.provider.name

    def encode(self, body: dict[str, Any]) -> bytes:
        """The request body's bytes; failing here is the router's fault, not the provider's."""
        try:
            return orjson.dumps(body)
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            raise InternalError(
                f"cannot encode the request for provider {self._name()!r}: {exc}"
            ) from exc

    def unreadable(self, exc: Exception, status: int | None = None) -> UpstreamProtocolError:
        """The provider answered something the protocol's reader could not make sense of."""
        if not isinstance(exc, orjson.JSONDecodeError):
            log.warning("unreadable answer from provider %s", self._name(), exc_info=exc)
        what = "is not JSON" if isinstance(exc, orjson.JSONDecodeError) else "makes no sense"
        return UpstreamProtocolError(
            f"the provider's answer {what} ({type(exc).__name__})",
            provider=self._name(),
            upstream_status=status,
        )

    async def embed(self, req: EmbeddingRequest, model_name: str) -> EmbeddingResult:
        """Protocols without an embeddings API: selection never sends such requests here
        (``contract.EMBEDDING_TYPES``)."""
        raise BadRequest(f"provider {self._name()!r} has no embeddings API", field="model")

    def post_json(
        self,
        url: str,
        body: dict[str, Any],
        read: Callable[[Any], T],
        headers: dict[str, str] | None = None,
        key: int | None = None,
    ) -> Awaitable[T]:
        """POST and ``read`` the JSON of a 2xx answer; raise typed errors otherwise.
        ``headers``: this request's, where they add to ``headers()``; ``key``: its
        affinity key, for a provider with endpoints. Awaited at once by its callers
        (coroutines themselves): without endpoints, one coroutine fewer on every call."""
        data = self.encode(body)
        if self.balancer is None:
            return self._post_json(url, data, read, headers)
        return self._post_on_endpoints(url, data, read, headers, key)

    async def _post_on_endpoints(
        self,
        url: str,
        data: bytes,
        read: Callable[[Any], T],
        headers: dict[str, str] | None,
        key: int | None,
    ) -> T:
        value, _ = await self.on_endpoints(
            url, key, lambda at, slot: self._post_json(at, with_slot(data, slot), read, headers)
        )
        return value

    async def _post_json(
        self, url: str, data: bytes, read: Callable[[Any], T], headers: dict[str, str] | None
    ) -> T:
        try:
            async with self.session.post(
                url,
                data=data,
                headers=with_trace(headers),
                timeout=self._call_timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise self.status_error(resp.status, resp.headers, raw)
        except UpstreamError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise self.connection_error(exc) from None
        except TimeoutError:
            raise UpstreamTimeout(
                f"no complete answer within {self._total_timeout:g}s", provider=self._name()
            ) from None
        except aiohttp.ClientError as exc:
            raise self.connection_error(exc) from None
        try:
            return read(orjson.loads(raw))
        except UpstreamError:
            raise
        except Exception as exc:
            raise self.unreadable(exc, 200) from None

    async def on_endpoints(
        self,
        url: str,
        key: int | None,
        call: Callable[[str, int | None], Awaitable[T]],
        *,
        hold: bool = False,
    ) -> tuple[T, Pick | None]:
        """``call`` at the endpoint the balancer picks (``url`` moved onto it, with the
        llama.cpp slot to name, if any), and at the next when an endpoint fails as only
        an endpoint can: it cannot be reached, it hung up, or it answered 429 or
        502-504. That endpoint is taken out alone; the call fails (and the provider's
        breaker hears of it) only when every endpoint tried failed. ``hold``: the call
        goes on after ``call`` returns (a stream), and its caller gives the endpoint
        back with ``release``."""
        balancer = self.balancer
        if balancer is None:
            return await call(url, None), None
        if self._scrapers.idle(balancer):
            self._scrapers.sync(serving=True)
        tail = url[len(self.base_url) :]
        tried: list[Endpoint] = []
        while True:
            pick = balancer.pick(key, tried)
            if pick is None:
                raise UpstreamConnectError(
                    f"provider {self._name()!r} has no endpoint left to try",
                    provider=self._name(),
                )
            ep = pick.endpoint
            ep.in_flight += 1
            wait = asyncio.timeout(None)  # fired by ``Balancer.abandon``
            try:
                try:
                    async with wait:
                        ep.waits.add(wait)
                        value = await call(ep.base_url + tail, pick.slot)
                except TimeoutError:
                    if not wait.expired():
                        raise
                    raise UpstreamConnectError(
                        f"provider {self._name()!r}: its endpoint went away mid-call",
                        provider=self._name(),
                        detail=f"endpoint {ep.address} takes no connections",
                    ) from None
                finally:
                    ep.waits.discard(wait)
            except UpstreamError as exc:
                pick.done()
                if not self.endpoint_fault(exc):
                    raise
                balancer.failed(ep, str(exc))
                tried.append(ep)
                # The endpoints listed now (the table may have changed meanwhile).
                others = [e for e in balancer.endpoints.values() if e not in tried]
                if len(tried) >= _MAX_ENDPOINT_TRIES or not others:
                    raise
                log.info(
                    "provider %s: endpoint %s failed (%s); trying another",
                    self._name(),
                    ep.address,
                    exc.detail,
                )
                continue
            except BaseException:
                pick.done()
                raise
            if not hold:
                pick.done()
            balancer.succeeded(ep)
            return value, pick

    @staticmethod
    def endpoint_fault(exc: UpstreamError) -> bool:
        """Whether another endpoint of the same provider may well answer instead."""
        if isinstance(exc, UpstreamConnectError):
            return True
        return isinstance(exc, UpstreamStatusError) and exc.upstream_status in _ENDPOINT_STATUSES

    def release(self, pick: Pick | None, failure: UpstreamError | None = None) -> None:
        """A held call (``pick``) ended; ``failure``: how, when the endpoint failed it."""
        if pick is None:
            return
        pick.done()
        if failure is not None and self.balancer is not None and self.endpoint_fault(failure):
            self.balancer.failed(pick.endpoint, str(failure))

    async def get_json(self, url: str, read: Callable[[Any], T]) -> T:
        value, _ = await self.on_endpoints(url, None, lambda at, _: self._get_json(at, read))
        return value

    async def _get_json(self, url: str, read: Callable[[Any], T]) -> T:
        try:
            async with self.session.get(
                url, timeout=self._probe_timeout, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise self.status_error(resp.status, resp.headers, raw)
        except UpstreamError:
            raise
        except TimeoutError:
            raise UpstreamTimeout("no answer in time", provider=self._name()) from None
        except aiohttp.ClientError as exc:
            raise self.connection_error(exc) from None
        try:
            return read(orjson.loads(raw))
        except UpstreamError:
            raise
        except Exception as exc:
            raise self.unreadable(exc, 200) from None

    async def open_stream(
        self,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        whole: bool = False,
        expect: str | None = None,
        key: int | None = None,
    ) -> tuple[aiohttp.ClientResponse, Pick | None]:
        """POST a streaming request and return the response once its headers say 2xx,
        with the endpoint it came from (to ``release`` when the answer is read).

        The first-token timeout is aiohttp's read timeout: no byte for that long,
        before or after the headers, ends the call (from a stream's second read on,
        ``stream_events`` keeps it with a ``ReadWatch``). The total timeout bounds all.
        ``whole``: an answer made before its first byte is sent (embeddings), bounded by
        the total timeout alone. ``expect``: the media type an answer passed on unread
        must have; what another server (not an LLM API) would answer never reaches a
        client as if it were the provider's.
        """
        data = self.encode(body)
        if self.balancer is None:
            return await self._open_stream(url, data, headers, whole, expect), None
        return await self.on_endpoints(
            url,
            key,
            lambda at, slot: self._open_stream(at, with_slot(data, slot), headers, whole, expect),
            hold=True,
        )

    async def _open_stream(
        self,
        url: str,
        data: bytes,
        headers: dict[str, str] | None,
        whole: bool,
        expect: str | None,
    ) -> aiohttp.ClientResponse:
        try:
            resp = await self.session.post(
                url,
                data=data,
                headers=with_trace(headers),
                timeout=self._call_timeout if whole else self._stream_timeout,
                allow_redirects=False,
            )
            if resp.status >= 300:
                raw = await resp.read()
                resp.release()
                raise self.status_error(resp.status, resp.headers, raw)
            if expect is not None and resp.content_type != expect:
                resp.close()
                log.warning(
                    "provider %s answered HTTP %d with %r where %s was expected",
                    self._name(),
                    resp.status,
                    resp.headers.get("content-type", "")[:_MAX_ERROR_TEXT],
                    expect,
                )
                raise UpstreamProtocolError(
                    f"the provider's answer is not {expect}",
                    provider=self._name(),
                    upstream_status=resp.status,
                )
            return resp
        except UpstreamError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise self.connection_error(exc) from None
        except TimeoutError:
            limit = self._total_timeout if whole else self.first_token_timeout
            raise UpstreamTimeout(f"no answer within {limit:g}s", provider=self._name()) from None
        except aiohttp.ClientError as exc:
            raise self.connection_error(exc) from None

    async def relay_body(
        self, url: str, body: dict[str, Any], key: int | None = None
    ) -> AsyncIterator[bytes]:
        """POST and, once the headers say 2xx, the answer's bytes as they arrive (the
        whole call bounded by the total timeout)."""
        resp, pick = await self.open_stream(
            url, body, whole=True, expect="application/json", key=key
        )
        return self._chunks(resp, pick)

    async def _chunks(
        self, resp: aiohttp.ClientResponse, pick: Pick | None
    ) -> AsyncIterator[bytes]:
        failure: UpstreamError | None = None
        try:
            while chunk := await resp.content.readany():
                yield chunk
        except TimeoutError:
            raise UpstreamTimeout("the answer stalled", provider=self._name()) from None
        except aiohttp.ClientError as exc:
            failure = self.connection_error(exc)
            raise failure from None
        finally:
            resp.release()
            self.release(pick, failure)

    async def stream_events(
        self,
        url: str,
        body: dict[str, Any],
        reader: BlockReader,
        headers: dict[str, str] | None = None,
        key: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """POST a streaming request and read it as it arrives: each read's events (neutral
        ones from a ``LineReader``, the provider's own from an ``EventRelay``), then
        ``FLUSH`` (unless the read is one ``Relayed`` block)."""
        # Events passed on unread must be events.
        expect = "text/event-stream" if isinstance(reader, EventRelay) else None
        resp, pick = await self.open_stream(url, body, headers, expect=expect, key=key)
        content = resp.content
        failure: UpstreamError | None = None
        # aiohttp's read timeout resets a timer each read; from a stream's second read
        # on, a ReadWatch keeps the same deadline with one timer (a stream that comes in
        # one read never needs it).
        watch: ReadWatch | None = None
        seen = False
        try:
            while block := await content.readany():
                if watch is not None:
                    watch.saw()
                elif seen:
                    watch = ReadWatch(resp, self.first_token_timeout)
                seen = True
                try:
                    events = reader.feed(block)
                except UpstreamError:
                    raise
                except Exception as exc:
                    raise self.unreadable(exc, 200) from None
                for event in events:
                    yield event
                if reader.failure is not None:
                    raise reader.failure
                if reader.done:
                    return
                # A block relayed whole is one write already (``completions._sse``).
                if events and type(events[-1]) is not Relayed:
                    yield FLUSH
        except TimeoutError:
            raise UpstreamTimeout("the stream stalled", provider=self._name()) from None
        except aiohttp.ClientError as exc:
            failure = self.connection_error(exc)
            raise failure from None
        finally:
            if watch is not None:
                watch.stop()
            resp.release()
            self.release(pick, failure)
        raise reader.incomplete()

    def status_error(self, status: int, headers: Any, raw: bytes) -> UpstreamStatusError:
        """A 4xx or 5xx answer, or a redirect: never followed, since the address it names
        was never checked and the request's key would go with it."""
        err_type, message = self.error_type(status, raw) if status >= 400 else (None, None)
        if status < 400:
            log.warning(
                "provider %s answered HTTP %d to %r, which is not followed",
                self._name(),
                status,
                str(headers.get("location", ""))[:_MAX_ERROR_TEXT],
            )
            message = "provider error (a redirect, not followed)"
        elif message is None:
            # Not this protocol's error: whatever answered (a proxy's page, another
            # service at a mistaken address) says nothing a tenant may read.
            log.warning(
                "provider %s answered HTTP %d with a body that is not its protocol's error: %r",
                self._name(),
                status,
                raw[:_MAX_ERROR_TEXT],
            )
            message = "provider error"
        if status in (401, 403):
            # Providers quote part of a rejected key back; tenants must not see it.
            message = "the provider rejected Switchyard's credentials for it"
        retry_after = parse_retry_after(headers.get("retry-after-ms"))
        retry_after = retry_after / 1000 if retry_after is not None else None
        if retry_after is None:
            retry_after = parse_retry_after(headers.get("retry-after"))
        return UpstreamStatusError(
            f"HTTP {status}{f' {err_type}' if err_type else ''}: {message[:_MAX_ERROR_TEXT]}",
            provider=self._name(),
            upstream_status=status,
            retry_after=retry_after,
            upstream_type=err_type,
        )

    def connection_error(self, exc: BaseException) -> UpstreamError:
        """The error for a failed exchange: tenants see what went wrong, never where.

        The provider's address (and the exception's own text, which may hold it)
        goes to ``detail``: the router's log and the provider's status.
        """
        where = self.provider.display_url
        if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
            exc.os_error, RefusedAddress
        ):
            # Where the name led is in the log (``AddressGuard``), never in what tenants
            # read: the message, the provider's status, a health check's answer.
            return UpstreamAddressRefused(
                f"provider {self._name()!r} may not be reached: its address is not allowed",
                provider=self._name(),
                detail=f"{where}: refused: {exc.os_error}",
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            # The OS error's own text can quote the address ("Connect call failed (...)").
            errno = exc.os_error.errno
            reason = os.strerror(errno) if errno else type(exc.os_error).__name__
            return UpstreamConnectError(
                f"cannot connect to provider {self._name()!r}: {reason}",
                provider=self._name(),
                detail=f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}",
            )
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamConnectError(
                f"cannot connect to provider {self._name()!r}: timed out",
                provider=self._name(),
                detail=f"cannot connect to {where}: timed out",
            )
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
            return UpstreamConnectError(
                "the provider closed the connection mid-answer", provider=self._name()
            )
        return UpstreamConnectError(
            f"the exchange with provider {self._name()!r} failed ({type(exc).__name__})",
            provider=self._name(),
            detail=f"{where}: {type(exc).__name__}: {exc}",
        )
