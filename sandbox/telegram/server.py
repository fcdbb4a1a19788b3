"""The sandbox HTTP server: the Bot API at ``/bot<token>/<method>``, file downloads at
``/file/bot<token>/<path>``, and the control API (``/client/...``, ``/business/...``,
``/groups/...``, ``/sandbox/...``; see sandbox/telegram/README.md).

The bridge talks to it through python-telegram-bot's real HTTP stack
(``telegram.Bot(token, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot")``), so what is
tested is the code path that runs against Telegram, not a mock of it.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import string
import time
from typing import Any

from aiohttp import web

from .api_base import Described
from .botapi import BotApi
from .control import ControlApi
from .control_business import BusinessControl
from .control_groups import GroupControl
from .errors import ApiError, not_found, unauthorized
from .faults import FaultPlan
from .params import read_params
from .ratelimit import SendRateLimiter
from .state import BotIdentity, SandboxState
from .webhook import WebhookSettings

log = logging.getLogger("sandbox.telegram")

TOKEN_SHAPE = re.compile(r"(\d{1,20}):[A-Za-z0-9_-]{1,200}")
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
MAX_CLIENT_BODY = 50 * 1000 * 1000 + 1024 * 1024


def generate_token() -> str:
    """A token shaped like a real one: ``<bot id>:<35 characters of [A-Za-z0-9_-]>``."""
    bot_id = 1_000_000_000 + secrets.randbelow(7_000_000_000)
    secret = "AA" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(33))
    return f"{bot_id}:{secret}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _api_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


class TelegramSandbox:
    """A local stand-in for ``api.telegram.org`` serving one bot.

    ``port=0`` picks a free port; after :meth:`start`, ``url`` is e.g.
    ``http://127.0.0.1:40123``. A stopped sandbox can be started again on the same port, which
    emulates a Telegram outage without losing queued updates.

    The bot's BotFather settings: ``group_privacy`` (privacy mode, on by default as on
    Telegram) and ``business_mode`` (whether business accounts can connect it).
    ``allow_local_webhooks`` accepts ``http://`` webhooks on any port so tests can run a local
    receiver; ``webhook_retry_initial`` is the first delay before a failed delivery is retried
    (it doubles up to 60 s).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        rate_limits: bool = True,
        *,
        bot_username: str = "houseline_sandbox_bot",
        bot_first_name: str = "Houseline Sandbox",
        first_update_id: int | None = None,
        group_privacy: bool = True,
        business_mode: bool = True,
        allow_local_webhooks: bool = False,
        webhook_retry_initial: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token or generate_token()
        match = TOKEN_SHAPE.fullmatch(self.token)
        if match is None:
            raise ValueError("token must look like '<bot id>:<secret of [A-Za-z0-9_-]>'")
        self.state = SandboxState(
            BotIdentity(
                int(match.group(1)),
                bot_first_name,
                bot_username,
                can_read_all_group_messages=not group_privacy,
                can_connect_to_business=business_mode,
            ),
            first_update_id=first_update_id,
        )
        self.limiter = SendRateLimiter(enabled=rate_limits)
        self.faults = FaultPlan()
        self.api = BotApi(
            self.state,
            self.limiter,
            time.monotonic,
            WebhookSettings(allow_local=allow_local_webhooks, retry_initial=webhook_retry_initial),
        )
        self.control = ControlApi(self.state, self.faults)
        self.business_control = BusinessControl(self.state)
        self.group_control = GroupControl(self.state)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ properties

    @property
    def bot_username(self) -> str:
        return self.state.bot.username

    @property
    def bot_id(self) -> int:
        return self.state.bot.id

    @property
    def rate_limits(self) -> bool:
        return self.limiter.enabled

    @rate_limits.setter
    def rate_limits(self, enabled: bool) -> None:
        self.limiter.enabled = enabled

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        self.state.updates.reopen()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        await self.api.webhook.start()
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        log.info(
            "event=sandbox_started url=%s bot_id=%d rate_limits=%s",
            self.url,
            self.bot_id,
            self.rate_limits,
        )

    async def stop(self) -> None:
        """Answer pending long polls and client waits, then close every connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.api.webhook.stop()
        self.state.updates.close()
        self.state.outbox.notify()
        await runner.cleanup()
        log.info("event=sandbox_stopped url=%s", self.url)

    async def __aenter__(self) -> TelegramSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_CLIENT_BODY)
        self.control.add_routes(app)
        self.business_control.add_routes(app)
        self.group_control.add_routes(app)
        app.router.add_get("/file/{rest:.*}", self._download)
        app.router.add_route("*", "/{rest:.*}", self._bot_api)
        return app

    def _check_token(self, token: str) -> None:
        """Malformed tokens get 404 and well-formed wrong ones 401, as on Telegram."""
        if TOKEN_SHAPE.fullmatch(token) is None:
            raise not_found()
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise unauthorized()

    @staticmethod
    def _split(path: str, prefix: str) -> tuple[str, str]:
        """``{prefix}<token>/<rest>`` into token and rest; 404 when the path is not of that form."""
        if not path.startswith(prefix):
            raise not_found()
        token, slash, rest = path[len(prefix) :].partition("/")
        if not slash or not rest:
            raise not_found()
        return token, rest

    async def _bot_api(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        method = "-"
        try:
            token, requested = self._split(request.path, "/bot")
            self._check_token(token)
            found = self.api.lookup(requested) if "/" not in requested else None
            if found is None:
                raise not_found()
            method, handler = found
            fault = self.faults.take(method)
            if fault is not None:
                log.info("event=fault_injected method=%s status=%d", method, fault.error_code)
                raise fault
            params = await read_params(request)
            result = await handler(params)
        except ApiError as exc:
            response = _api_response(exc.body(), exc.error_code, exc.headers)
        except Exception:  # a sandbox bug must answer, not kill the connection
            log.exception("event=bot_api_crash method=%s", method)
            response = _api_response(
                {"ok": False, "error_code": 500, "description": "Internal Server Error"}, 500
            )
        else:
            body: dict[str, Any] = {"ok": True}
            if isinstance(result, Described):
                body["result"] = result.result
                body["description"] = result.description
            else:
                body["result"] = result
            response = _api_response(body)
        level = logging.DEBUG if method == "getUpdates" and response.status == 200 else logging.INFO
        log.log(
            level,
            "event=bot_api_call method=%s http_method=%s status=%d duration_ms=%.1f",
            method,
            request.method,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def _download(self, request: web.Request) -> web.StreamResponse:
        try:
            token, file_path = self._split(request.path, "/file/bot")
            self._check_token(token)
            stored = self.state.files_by_path.get(file_path)
            if stored is None:
                raise not_found()
        except ApiError as exc:
            log.info("event=file_download status=%d", exc.error_code)
            return _api_response(exc.body(), exc.error_code, exc.headers)
        log.info("event=file_download status=200 size=%d", len(stored.content))
        return web.Response(body=stored.content, content_type="application/octet-stream")
