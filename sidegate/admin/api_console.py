"""The web console: four static files (HTML, two scripts, CSS in sidegate/admin/console/) served by the admin API.

The files hold no secret, so their routes are declared public (sidegate/admin/policy.py; the
paths are :func:`is_console_path`); everything they show comes from the token-protected JSON endpoints, called by the
page with the admin token the user pasted. The Content-Security-Policy allows only these files' own
script and style (no inline script, no other origin), so the console works offline and a hostile
value shown in it cannot run code. Every answer of the admin API gets ``X-Content-Type-Options:
nosniff`` (set here, once, on the app).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from sidegate.admin.policy import public

CONSOLE = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FILES = {
    "": ("index.html", "text/html"),
    "lib.js": ("lib.js", "text/javascript"),
    "app.js": ("app.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
}
_SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_console_path(path: str) -> bool:
    """Whether ``path`` is one of the console's public files (no token needed)."""
    return path == CONSOLE or (path.startswith(CONSOLE + "/") and path[len(CONSOLE) + 1 :] in _FILES)


@dataclass(slots=True, frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, _File]:
    """Read once at start: a few tens of KB, served from memory, revalidated by ETag."""
    root = resources.files("sidegate.admin") / "console"
    out = {}
    for name, (filename, ctype) in _FILES.items():
        body = (root / filename).read_bytes()
        out[name] = _File(body, ctype, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


def _handler(files: dict[str, _File]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @public
    async def serve(request: web.Request) -> web.StreamResponse:
        f = files.get(request.match_info.get("name", ""))
        if f is None:
            raise web.HTTPNotFound()
        # no-cache: revalidate every time, so an upgraded gateway never runs a stale script.
        headers = {**_SECURITY, "Cache-Control": "no-cache", "ETag": f.etag}
        if request.headers.get("If-None-Match") == f.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=f.body, content_type=f.content_type, charset="utf-8", headers=headers)

    return serve


@public
async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(CONSOLE + "/")


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def register(app: web.Application) -> None:
    serve = _handler(_load())
    r = app.router
    r.add_get(CONSOLE, _redirect)
    r.add_get(CONSOLE + "/", serve)
    r.add_get(CONSOLE + "/{name:(?:app|lib)\\.js|app\\.css}", serve)
    app.on_response_prepare.append(_nosniff)
