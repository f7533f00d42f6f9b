"""The distribution stands alone: importing it pulls in neither the bot nor its web stack, and the
package exports what its README documents."""

from __future__ import annotations

import subprocess
import sys

import beekeeper_gateway


def test_importing_the_package_loads_no_bot_and_no_web_framework():
    code = ("import sys, beekeeper_gateway, beekeeper_gateway.asgi; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('bot', 'flask', 'werkzeug', 'sqlalchemy', 'sqlmodel', 'starlette')); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_names():
    for name in beekeeper_gateway.__all__:
        assert hasattr(beekeeper_gateway, name), name
    assert {"AllowlistClient", "AllowlistMiddleware", "AllowlistASGIMiddleware", "keyformat"} <= set(
        beekeeper_gateway.__all__)
    assert beekeeper_gateway.__version__ == "0.1.0"
