"""CI parity (issue 15, item 6): the workflow runs .ci/run; .ci/run runs both suites whatever the
first one did; the browser tests find chromium under either distribution's name."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import yaml

from tests.browser.portal_support import find_chromium

ROOT = Path(__file__).resolve().parents[1]


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_chromium_is_found_under_either_name(tmp_path, monkeypatch):
    monkeypatch.delenv("BEEKEEPER_CHROMIUM", raising=False)
    ubuntu = tmp_path / "ubuntu"
    ubuntu.mkdir()
    _executable(ubuntu / "chromium-browser")
    monkeypatch.setenv("PATH", str(ubuntu))
    assert find_chromium() == str(ubuntu / "chromium-browser")
    debian = tmp_path / "debian"
    debian.mkdir()
    _executable(debian / "chromium")
    monkeypatch.setenv("PATH", f"{debian}{os.pathsep}{ubuntu}")
    assert find_chromium() == str(debian / "chromium")
    monkeypatch.setenv("BEEKEEPER_CHROMIUM", str(ubuntu / "chromium-browser"))
    assert find_chromium() == str(ubuntu / "chromium-browser")


def _fake_python3(bin_dir: Path, log: Path | None, gateway_tests_pass: bool = True) -> None:
    """A python3 whose `-m venv DIR` makes a venv of stubs: its pip succeeds, its python says the
    bot and Flask are absent, its pytest (the gateway distribution's tests) logs and passes or fails."""
    record = f'echo "gateway $(basename $0) $1" >> {log}' if log else "true"
    (bin_dir / "python3").write_text(f"""#!/bin/sh
[ "$1" = -m ] && [ "$2" = venv ] || exit 2
mkdir -p "$3/bin"
for tool in pip python; do printf '#!/bin/sh\\n%s\\nexit 0\\n' '{record}' > "$3/bin/$tool"; done
printf '#!/bin/sh\\n%s\\nexit %s\\n' '{record}' {0 if gateway_tests_pass else 1} > "$3/bin/pytest"
chmod +x "$3/bin/pip" "$3/bin/python" "$3/bin/pytest"
""")
    (bin_dir / "python3").chmod(0o755)


def test_the_workflow_runs_the_one_ci_script():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "bash .ci/run" in runs
    assert not [r for r in runs if "pytest" in r], "tests run only through .ci/run"


def test_the_ci_script_runs_both_suites_and_fails_at_the_end(tmp_path):
    """Run the script's test section with a pytest that fails on SQLite: PostgreSQL still runs,
    and the exit status is 1 naming the failed suite."""
    script = (ROOT / ".ci" / "run").read_text()
    section = script[script.index("failed=()"):]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "pytest").write_text(f'#!/bin/sh\necho "pytest ${{BEEKEEPER_TEST_DATABASE_URL:-sqlite}}" >> {log}\n'
                                    '[ -n "$BEEKEEPER_TEST_DATABASE_URL" ]\n')
    (bin_dir / "ruff").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "npm").write_text(f'#!/bin/sh\necho "npm $1 in $(basename $(dirname $PWD))/$(basename $PWD)" >> {log}\n')
    for name in ("pytest", "ruff", "npm"):
        (bin_dir / name).chmod(0o755)
    _fake_python3(bin_dir, log)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("BEEKEEPER_TEST_DATABASE_URL", None)
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + section], env=env, capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1
    # The gateway distribution alone, the JavaScript client (its build is used by a Python test),
    # then both suites.
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith("gateway pytest")] == ["gateway pytest -q"]
    assert [c for c in calls if not c.startswith("gateway ")] == [
        "npm ci in clients/js", "npm test in clients/js", "pytest sqlite",
        "pytest postgresql://postgres@127.0.0.1:5432/postgres"]
    assert calls.index("gateway pytest -q") < calls.index("npm ci in clients/js")
    assert "CI FAILED: SQLite suite" in result.stdout


def test_a_failing_javascript_client_fails_ci_at_the_end(tmp_path):
    """The JavaScript gateway client's step (issue 19) is collected like the suites."""
    script = (ROOT / ".ci" / "run").read_text()
    section = script[script.index("failed=()"):]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pytest").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "ruff").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "npm").write_text('#!/bin/sh\n[ "$1" != test ]\n')
    for name in ("pytest", "ruff", "npm"):
        (bin_dir / name).chmod(0o755)
    _fake_python3(bin_dir, None)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + section], env=env, capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1
    assert "CI FAILED: JavaScript client" in result.stdout


def test_failing_gateway_distribution_tests_fail_ci_at_the_end(tmp_path):
    """The gateway distribution's own tests (issue 17) are collected like the suites."""
    script = (ROOT / ".ci" / "run").read_text()
    section = script[script.index("failed=()"):]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pytest", "ruff", "npm"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    _fake_python3(bin_dir, None, gateway_tests_pass=False)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + section], env=env, capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1
    assert "CI FAILED: gateway distribution" in result.stdout
