"""Starting one of the bridge's own HTTP listeners (a network's webhook, metrics)."""

from __future__ import annotations

from aiohttp import web


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on ``host:port``; returns the runner (to stop it) and the port actually
    bound, which differs when 0 was asked for (the tests)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
