"""`/healthz` (process up), `/readyz` (database reachable), `/metrics` (Prometheus text)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from bot.core import metrics as metrics_module
from bot.core.config import plain_secret
from bot.core.db import reader

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    runtime = current_app.extensions["beekeeper"]
    try:
        with reader(runtime.engine).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return jsonify(status="unavailable", database=type(exc).__name__), 503
    return jsonify(status="ready")


@bp.get("/metrics")
def metrics():
    """Prometheus text; a bearer token (BEEKEEPER_METRICS_TOKEN) or the local machine only."""
    runtime = current_app.extensions["beekeeper"]
    refusal = metrics_module.scrape_refusal(plain_secret(runtime.settings.metrics_token),
                                            request.headers.get("Authorization"), request.remote_addr,
                                            request.headers)
    if refusal is not None:
        status, reason = refusal
        response = Response(reason, status=status, mimetype="text/plain")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="beekeeper metrics"'
        return response
    return Response(metrics_module.exposition(runtime.engine), mimetype=CONTENT_TYPE_LATEST)
