"""The runner-image catalog on the admin page, in a real browser against a real `devpush up` on
the docker runtime (Podman): the images present with their language, version and size, the
project running on one after a deploy, a rebuild clicked on the page and followed to its end
with the script's own output, and the refusals: a non-admin, an unknown or hostile name, and a
platform that can't build (the process runtime), which says how to build from the host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ADMIN, Mailbox, new_context, screenshot, sign_in
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e
MEMBER = "casey@example.com"
PYTHON = "localhost/devpush-runner-python:3.11"
NODE = "localhost/devpush-runner-node:22"


@pytest.fixture(scope="module")
def docker_dashboard(docker_web_platform: RunningPlatform) -> str:
    return f"http://localhost:{docker_web_platform.env['DEVPUSH_HTTP_PORT']}"


@pytest.fixture(scope="module")
def admin_page(browser: Browser, docker_dashboard: str, mailbox: Mailbox) -> Iterator[Page]:
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, docker_dashboard, mailbox, ADMIN)
    yield page
    context.close()


def redis_keys(platform: RunningPlatform, pattern: str) -> list[str]:
    """Keys of the platform's own (embedded) Redis."""
    from devpush.runstate import redis_url
    from devpush.settings import Settings

    fields = {k[8:].lower(): v for k, v in platform.env.items() if k.startswith("DEVPUSH_")}
    client = redis.Redis.from_url(redis_url(Settings(**fields)))
    try:
        return sorted(k.decode() for k in client.keys(pattern))
    finally:
        client.close()


def csrf(page: Page) -> str:
    headers = page.locator("body").get_attribute("hx-headers") or "{}"
    match = re.search(r'"X-CSRF-Token":\s*"([^"]+)"', headers)
    assert match, headers
    return match.group(1)


def test_the_catalog_lists_images_with_language_version_and_size(
    admin_page: Page, docker_dashboard: str
) -> None:
    page = admin_page
    page.goto(f"{docker_dashboard}/admin")  # a new load, not a jump
    python = page.locator(f"#images tr[data-image='{PYTHON}']")
    expect(python.locator("[data-col=language]")).to_have_text("python")
    expect(python.locator("[data-col=version]")).to_contain_text("3.11")
    expect(python.locator("[data-col=version]")).to_contain_text(re.compile(r"uv \d+\.\d+"))
    expect(python.locator("[data-col=size]")).to_have_text(re.compile(r"^[1-9]\d+ MB$"))
    expect(python).to_contain_text("default")
    expect(python).to_contain_text("python-3.11")  # the script's name for it
    node = page.locator(f"#images tr[data-image='{NODE}']")
    expect(node.locator("[data-col=language]")).to_have_text("node")
    # the exact Node.js version from its label, not just the tag's "22"
    expect(node.locator("[data-col=version]")).to_contain_text(re.compile(r"^22\.\d+\.\d+"))
    expect(node.locator("[data-col=version]")).to_contain_text("npm")
    # every target of the script has a button: present ones are rebuilt
    for name in ("python-3.11", "python-3.13", "node-20", "node-22"):
        row = page.locator(f"#images tr[data-target='{name}']")
        expect(row.locator("button[type=submit]")).to_have_text("Rebuild")
    expect(page.locator("[data-testid=build-on-host]")).to_have_count(0)


def test_a_running_project_shows_next_to_its_image(
    admin_page: Page,
    docker_dashboard: str,
    docker_web_platform: RunningPlatform,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    platform = docker_web_platform
    api = Api(platform.app_url, platform.token(ADMIN), platform.proxy_url)
    repo = make_repo(tmp_path_factory.mktemp("repos") / "imaged", body="on the runner")
    (repo / ".python-version").write_text("3.11\n")
    commit(repo, "on Python 3.11")
    project = api.project(repo, "imaged")
    deployment = api.wait(api.deploy(project["id"])["id"], timeout=180)
    assert deployment["conclusion"] == "succeeded", deployment
    assert deployment["config"]["plan"]["image"] == PYTHON
    page = admin_page
    page.goto(f"{docker_dashboard}/admin")  # a new load, not a jump
    users = page.locator(f"#images tr[data-image='{PYTHON}'] [data-col=users]")
    link = users.locator(f"a[href='/projects/{project['id']}']")
    expect(link).to_have_text("imaged")
    expect(page.locator(f"#images tr[data-image='{NODE}'] [data-col=users]")).to_have_text("—")
    screenshot(page, "admin-runner-images")
    link.click()
    expect(page).to_have_url(re.compile(rf"/projects/{project['id']}$"))


def test_rebuild_from_the_page_until_it_succeeds(
    admin_page: Page, docker_dashboard: str, docker_web_platform: RunningPlatform
) -> None:
    page = admin_page
    page.goto(f"{docker_dashboard}/admin")  # a new load, not a jump
    row = page.locator("#images tr[data-target='python-3.11']")
    row.locator("button:has-text('Rebuild')").click()
    expect(page).to_have_url(re.compile(r"/admin"))
    expect(page.locator("main")).to_contain_text("Building python-3.11")
    # the page follows the build (HTMX) to its end, without a reload
    state = page.locator("#images tr[data-target='python-3.11'] [data-build-state]")
    expect(state).to_have_text("succeeded", timeout=600_000)
    output = page.locator("#images tr[data-output='python-3.11'] [data-testid=build-output]")
    # the script's own lines: inputs unchanged, so the image is kept as it is
    expect(output).to_contain_text(f"[runner-images] image {PYTHON}: up to date")
    expect(page.locator("#images tr[data-target='python-3.11']")).to_contain_text("exit code 0")
    expect(page.locator("#images tr[data-target='python-3.11'] button")).to_have_text("Rebuild")
    screenshot(page, "admin-runner-image-rebuilt")
    # the image is still there, still the default, under the same tag
    page.goto(f"{docker_dashboard}/admin")  # a new load, not a jump
    expect(page.locator(f"#images tr[data-image='{PYTHON}']")).to_contain_text("default")
    assert redis_keys(docker_web_platform, "arq:job:runner-image:*") == []  # done, not kept


def test_unknown_and_hostile_names_are_refused(
    admin_page: Page, docker_dashboard: str, docker_web_platform: RunningPlatform
) -> None:
    page = admin_page
    page.goto(f"{docker_dashboard}/admin")
    token = csrf(page)
    for name in ("python-3.12", "python-3.11; touch /tmp/owned", "--refresh", "..%2F..%2Fetc"):
        answer = page.request.post(
            f"{docker_dashboard}/admin/images/{quote(name, safe='%')}/build",
            form={"csrf_token": token},
            max_redirects=0,
        )
        assert answer.status == 422, (name, answer.status)
        assert "There is no runner image" in answer.text()
        assert "python-3.11, python-3.13, node-20, node-22" in answer.text()
    assert redis_keys(docker_web_platform, "arq:job:runner-image:*") == []
    states = redis_keys(docker_web_platform, "devpush:runner-image:*")
    assert states in ([], ["devpush:runner-image:python-3.11"])  # the rebuild's, if it ran


def test_a_non_admin_gets_404(
    browser: Browser, docker_dashboard: str, docker_web_platform: RunningPlatform
) -> None:
    docker_web_platform.cli("user", "create", "--email", MEMBER)
    link = docker_web_platform.cli("user", "link", MEMBER).stdout.strip()
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{docker_dashboard}{httpx.URL(link).raw_path.decode()}")
    expect(page).not_to_have_url(re.compile(r"/auth/"))
    answer = page.goto(f"{docker_dashboard}/admin")
    assert answer is not None and answer.status == 404
    expect(page.locator("#images")).to_have_count(0)
    refused = page.request.post(
        f"{docker_dashboard}/admin/images/python-3.11/build",
        form={"csrf_token": csrf(page)},
        max_redirects=0,
    )
    assert refused.status == 404
    assert redis_keys(docker_web_platform, "arq:job:runner-image:*") == []
    context.close()


def test_a_platform_that_cannot_build_says_how_to_build_on_the_host(
    browser: Browser, dashboard: str, mailbox: Mailbox, web_platform: RunningPlatform
) -> None:
    """The process runtime (no docker runtime): no buttons, the host command instead, and the
    POST is refused."""
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard, mailbox, ADMIN)
    page.goto(f"{dashboard}/admin")
    note = page.locator("#images [data-testid=build-on-host]")
    expect(note).to_contain_text("no docker runtime")
    expect(note).to_contain_text("sudo scripts/runner-images.sh NAME")
    row = page.locator("#images tr[data-target='node-22']")
    expect(row).to_contain_text("sudo scripts/runner-images.sh node-22")
    expect(page.locator("#images form[action*='/admin/images/']")).to_have_count(0)
    refused = page.request.post(
        f"{dashboard}/admin/images/node-22/build", form={"csrf_token": csrf(page)}, max_redirects=0
    )
    assert refused.status == 409
    assert "sudo scripts/runner-images.sh node-22" in refused.text()
    assert redis_keys(web_platform, "arq:job:runner-image:*") == []
    context.close()
