"""Property-based API testing with schemathesis against a running platform: every route of the
OpenAPI document, with a valid token, statefully where links allow. Zero 5xx answers and zero
schema violations are accepted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform import platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e
ST = str(Path(sys.executable).with_name("st"))


def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = platform_env(data, DEVPUSH_API_RATE_LIMIT="0", DEVPUSH_VERIFY_DOMAINS="false")
    platform = start_platform(data, env=env)
    try:
        wait_health(platform.app_url)
        token = platform.token()
        headers = {"Authorization": f"Bearer {token}"}
        team = httpx.get(f"{platform.app_url}/api/v1/teams", headers=headers).json()[0]["slug"]
        httpx.post(
            f"{platform.app_url}/api/v1/teams/{team}/projects",
            headers=headers,
            json={"name": "seed", "start_command": "python3 app.py"},
        ).raise_for_status()
        result = subprocess.run(
            [
                ST,
                "run",
                f"{platform.app_url}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error,response_schema_conformance,"
                "content_type_conformance,status_code_conformance",
                "--max-examples",
                "15",
                "--workers",
                "1",
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-time",
                "150",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        platform.stop()
    output = result.stdout + result.stderr
    cases = re.search(r"Test cases:\s*(\d+)", output)
    print(f"schemathesis ran {cases.group(1) if cases else '?'} test cases")
    print(output[-4000:])
    assert cases is not None and int(cases.group(1)) > 100, output[-3000:]
    assert result.returncode == 0, output[-6000:]
