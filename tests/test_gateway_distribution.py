"""The gateway client is a distribution of its own (gateway/, `beekeeper-gateway`) that the bot
depends on: the two pyprojects, the install commands and the installed package agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import beekeeper_gateway

ROOT = Path(__file__).resolve().parent.parent
BOT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
GATEWAY = tomllib.loads((ROOT / "gateway" / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_bot_depends_on_the_gateway_distribution_of_this_checkout():
    assert GATEWAY["name"] == "beekeeper-gateway"
    # Pinned to the version in gateway/: both are released from this repository together.
    assert f"beekeeper-gateway=={GATEWAY['version']}" in BOT["dependencies"]
    assert metadata.version("beekeeper-gateway") == GATEWAY["version"] == beekeeper_gateway.__version__
    # Editable (`pip install -e ./gateway`): the suite tests this checkout's client, not a stale copy.
    assert Path(beekeeper_gateway.__file__).resolve().is_relative_to(ROOT / "gateway" / "src"), \
        f"beekeeper_gateway is imported from {beekeeper_gateway.__file__}: pip install -e ./gateway"
    assert not (ROOT / "bot" / "gateway.py").exists() and not (ROOT / "bot" / "keyformat.py").exists()


def test_the_gateway_distribution_needs_none_of_the_bot_s_stack():
    names = {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower() for requirement in GATEWAY["dependencies"]}
    assert names == {"requests", "pyjwt", "cryptography", "idna"}


def test_every_install_command_names_gateway_in_the_same_pip_call():
    """pip cannot resolve `beekeeper-gateway` from a path by itself (it is not on an index): the
    README's commands and CI install ./gateway with the bot, in one command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines()[:12] if "pip install" in line]
    assert len(commands) == 2 and all("pip install -e ./gateway -e " in line for line in commands)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -q -c constraints.txt -e ./gateway -e ".[test]"' in ci
    assert '"./gateway[test]"' in ci and 'failed+=("gateway distribution")' in ci
