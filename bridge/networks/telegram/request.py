"""python-telegram-bot's HTTP transport on aiohttp instead of httpx.

PTB builds every Bot API request (parameters, files, the method's URL) and reads every answer
(``ok``, error codes, ``retry_after``) itself; only the bytes on the wire go through a
:class:`telegram.request.BaseRequest`, its documented seam for another HTTP library. The
bridge already runs aiohttp for the homeserver and its own listeners, and per Bot API call
httpx cost about four times aiohttp's CPU in the bridge process (measured on sendMessage,
10 at a time: 2.7 ms against 0.63 ms), which made it the largest single share of an outbound
message's cost. Requests are sent as PTB's own httpx transport sends them: form fields, and
multipart/form-data when a file is attached, its name in UTF-8 as given (quotes and control
characters percent-escaped, as browsers do); proxies from the environment are honoured and
redirects are not followed, as with httpx.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

#: The class of PTB's "not given" marker (its module is private; the marker is public).
_Default = type(BaseRequest.DEFAULT_NONE)
#: How long writing a request may take when the call gives none: PTB's httpx defaults (an upload
#: gets longer than a form).
WRITE_TIMEOUT_S = 5.0
MEDIA_WRITE_TIMEOUT_S = 20.0
#: What a multipart filename cannot hold as is (aiohttp refuses control characters).
_UNSAFE_IN_FILENAME = re.compile(r'[\x00-\x1f\x7f"]')


class AiohttpRequest(BaseRequest):
    """One connection pool of ``pool_size`` to the Bot API; timeouts in seconds (None: none).

    aiohttp has no write timeout of its own: a call's whole time is bounded by the sum of its
    connect, pool, write and read timeouts, and its answer by the read timeout from the moment
    the request is written. The pool timeout (waiting for a free connection) is added to the
    connect timeout, which in aiohttp covers both."""

    def __init__(
        self,
        *,
        pool_size: int = 1,
        read_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._pool_size = pool_size
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                headers={"User-Agent": self.USER_AGENT},
                trust_env=True,
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        files = request_data is not None and request_data.contains_files
        timeout = self._timeout(read_timeout, write_timeout, connect_timeout, pool_timeout, files)
        try:
            async with self._session.request(
                method, url, data=_body(request_data), timeout=timeout, allow_redirects=False
            ) as response:
                return response.status, await response.read()
        except asyncio.TimeoutError as e:  # aiohttp's own timeouts subclass it too
            raise TimedOut() from e
        except aiohttp.ClientError as e:
            # The class name says what failed when the message is empty (a reset connection).
            raise NetworkError(f"aiohttp.{type(e).__name__}: {e}") from e

    def _timeout(
        self, read: object, write: object, connect: object, pool: object, files: bool
    ) -> aiohttp.ClientTimeout:
        read_s = self._read_timeout if isinstance(read, _Default) else read
        write_default = MEDIA_WRITE_TIMEOUT_S if files else WRITE_TIMEOUT_S
        write_s = write_default if isinstance(write, _Default) else write
        connect_s = self._connect_timeout if isinstance(connect, _Default) else connect
        pool_s = self._pool_timeout if isinstance(pool, _Default) else pool
        parts = (connect_s, pool_s, write_s, read_s)
        return aiohttp.ClientTimeout(
            total=sum(parts) if None not in parts else None,  # type: ignore[arg-type]
            connect=connect_s + pool_s if None not in (connect_s, pool_s) else None,  # type: ignore[operator]
            sock_connect=connect_s,  # type: ignore[arg-type]
            sock_read=read_s,  # type: ignore[arg-type]
        )


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """Form fields, or multipart when the call uploads a file (PTB's httpx transport's choice)."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    if not request_data.contains_files:
        return fields
    # quote_fields=False: aiohttp would otherwise percent-encode every filename ("Q3%20plan.pdf"),
    # which neither Telegram nor any multipart reader decodes.
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in request_data.multipart_data.items():
        form.add_field(name, content, filename=_safe_filename(filename), content_type=mimetype)
    return form


def _safe_filename(name: str) -> str:
    """Quotes and control characters percent-escaped, as browsers (and httpx) send them: a
    newline in a Matrix file's name must not fail the upload."""
    return _UNSAFE_IN_FILENAME.sub(lambda m: f"%{ord(m.group()):02X}", name)
