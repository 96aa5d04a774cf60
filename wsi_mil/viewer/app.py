"""The Flask app of ``wsi-mil view`` and the server that runs it.

Routes only translate HTTP to :class:`~wsi_mil.viewer.service.ViewerService` calls: the URL
carries a slide id, a layer name and integer tile addresses (Flask's converters reject
anything else with 404), and every error becomes a short JSON answer, never a traceback page.
The page and its scripts are package data under ``static/``; OpenSeadragon is vendored there,
so the page works without the internet.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from wsi_mil.extras import require_extra

require_extra("viewer", "the viewer (wsi-mil view)")  # this module is the Flask app

from flask import Flask, Response, jsonify, request, send_from_directory  # noqa: E402
from werkzeug.exceptions import HTTPException  # noqa: E402

from wsi_mil.viewer.params import LOOPBACK_HOSTS, ViewerParams  # noqa: E402
from wsi_mil.viewer.service import ViewerBadRequest, ViewerNotFound, ViewerService  # noqa: E402

STATIC = Path(__file__).parent / "static"
#: tiles never change while the server runs (the project's files are read once)
TILE_CACHE = "private, max-age=3600"

log = logging.getLogger(__name__)


def create_app(service: ViewerService) -> Flask:
    """The web app over one :class:`ViewerService`."""
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # a rating is a few hundred bytes
    app.url_map.merge_slashes = False  # "//etc/passwd" is refused, not redirected

    if is_loopback(service.params.host):

        @app.before_request
        def loopback_only() -> tuple[Response, int] | None:
            # a page elsewhere cannot reach this server through a DNS name it controls
            # (DNS rebinding): on loopback only loopback names are answered
            host = (
                request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            )
            if not is_loopback(host.strip("[]")):
                return jsonify({"error": f"unexpected Host {request.host!r}"}), 400
            return None

    def tile(data: bytes, mimetype: str) -> Response:
        response = Response(data, mimetype=mimetype)
        response.headers["Cache-Control"] = TILE_CACHE
        return response

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/config")
    def config() -> Response:
        return jsonify(service.config())

    @app.get("/api/slides")
    def slides() -> Response:
        return jsonify(service.slide_list())

    @app.get("/api/slides/<slide_id>")
    def slide(slide_id: str) -> Response:
        return jsonify(service.slide_detail(slide_id))

    @app.get("/api/slides/<slide_id>/at")
    def measure(slide_id: str) -> Response:
        try:
            x, y = float(request.args["x"]), float(request.args["y"])
        except (KeyError, ValueError) as exc:
            raise ViewerBadRequest("x and y must be numbers (level-0 px)") from exc
        if not (abs(x) < 1e9 and abs(y) < 1e9):
            raise ViewerBadRequest("x and y must be finite level-0 coordinates")
        return jsonify(service.measure(slide_id, x, y))

    @app.get("/api/slides/<slide_id>/rating")
    def get_rating(slide_id: str) -> Response:
        return jsonify({"rater": service.params.rater, "rating": service.rating(slide_id)})

    @app.post("/api/slides/<slide_id>/rating")
    def post_rating(slide_id: str) -> Response:
        data = request.get_json(silent=True)
        path = service.submit_rating(slide_id, data)
        assert service.ratings is not None  # submit_rating refuses when there is no rater
        return jsonify({"saved": True, "file": path.name, "count": service.ratings.count()})

    @app.get("/slides/<slide_id>.dzi")
    def slide_dzi(slide_id: str) -> Response:
        return Response(service.slide_dzi(slide_id), mimetype="application/xml")

    @app.get("/slides/<slide_id>_files/<int:level>/<int:col>_<int:row>.jpeg")
    def slide_tile(slide_id: str, level: int, col: int, row: int) -> Response:
        return tile(service.slide_tile(slide_id, level, col, row), "image/jpeg")

    @app.get("/layers/<slide_id>/<layer>.dzi")
    def layer_dzi(slide_id: str, layer: str) -> Response:
        return Response(service.layer_dzi(slide_id, layer), mimetype="application/xml")

    @app.get("/layers/<slide_id>/<layer>_files/<int:level>/<int:col>_<int:row>.png")
    def layer_tile(slide_id: str, layer: str, level: int, col: int, row: int) -> Response:
        return tile(service.layer_tile(slide_id, layer, level, col, row), "image/png")

    def error(status: int, message: str) -> tuple[Response, int]:
        return jsonify({"error": message}), status

    @app.errorhandler(ViewerNotFound)
    def not_found(exc: ViewerNotFound) -> tuple[Response, int]:
        return error(404, str(exc.args[0]) if exc.args else "not found")

    @app.errorhandler(ViewerBadRequest)
    def bad_request(exc: ViewerBadRequest) -> tuple[Response, int]:
        return error(400, str(exc))

    @app.errorhandler(PermissionError)
    def forbidden(exc: PermissionError) -> tuple[Response, int]:
        return error(403, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> tuple[Response, int]:
        log.exception("viewer: %s %s failed", request.method, request.path)
        return error(500, f"{type(exc).__name__}: the server could not answer this request")

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` keeps the server on this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(service: ViewerService, params: ViewerParams) -> Any:
    """A threaded WSGI server (werkzeug's) bound to ``params.host:params.port``."""
    from werkzeug.serving import make_server as werkzeug_server

    return werkzeug_server(params.host, params.port, create_app(service), threaded=True)


def url_of(server: Any, host: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.server_port}/"
