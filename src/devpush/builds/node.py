"""Node apps: the package manager follows the lockfile, devDependencies are installed for the
build, and the app starts with its framework's production command, or, for frameworks that
build a static site (Vite, create-react-app, Astro, SvelteKit static), the build output is
served by devpush's static server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from devpush.builds.plan import PlanError
from devpush.builds.versions import read

STATIC_SERVER = "python3 /devpush/static_server.py"
# Frameworks whose build is a static site: (dependency, output directory, SPA fallback).
_STATIC = (
    ("react-scripts", "build", True),
    ("@vue/cli-service", "dist", True),
    ("@sveltejs/adapter-static", "build", False),
    ("astro", "dist", False),
    ("vite", "dist", True),
)
# Dependencies that mean the app serves itself, whatever else it uses.
_SERVERS = (
    "express",
    "fastify",
    "koa",
    "hono",
    "@hapi/hapi",
    "@nestjs/core",
    "@astrojs/node",
    "@sveltejs/adapter-node",
)
_DEV_SERVERS = re.compile(
    r"^\s*(vite|vite dev|vite serve|react-scripts start|vue-cli-service serve|next dev|"
    r"astro dev|nuxt dev|ng serve|webpack serve|webpack-dev-server)\b"
)


@dataclass(frozen=True)
class PackageManager:
    name: str  # npm | yarn | pnpm
    lockfile: str | None
    install: str
    run: str  # prefix to run a package.json script

    @property
    def label(self) -> str:
        return (
            f"{self.name} from {self.lockfile}" if self.lockfile else f"{self.name} (no lockfile)"
        )


def package_manager(root: Path, package: dict[str, object]) -> PackageManager:
    declared = str(package.get("packageManager") or "").split("@")[0]
    if declared == "pnpm" or (root / "pnpm-lock.yaml").is_file():
        lock = "pnpm-lock.yaml" if (root / "pnpm-lock.yaml").is_file() else None
        frozen = " --frozen-lockfile" if lock else ""
        return PackageManager(
            "pnpm", lock, f"corepack pnpm install{frozen} --prod=false", "corepack pnpm run"
        )
    if declared == "yarn" or (root / "yarn.lock").is_file():
        lock = "yarn.lock" if (root / "yarn.lock").is_file() else None
        berry = "__metadata:" in read(root / "yarn.lock") or (root / ".yarnrc.yml").is_file()
        if berry:
            flags = " --immutable" if lock else ""
        else:
            flags = (" --frozen-lockfile" if lock else "") + " --production=false"
        return PackageManager("yarn", lock, f"corepack yarn install{flags}", "corepack yarn run")
    for lock in ("package-lock.json", "npm-shrinkwrap.json"):
        if (root / lock).is_file():
            return PackageManager("npm", lock, "npm ci --include=dev", "npm run")
    return PackageManager("npm", None, "npm install --include=dev", "npm run")


@dataclass(frozen=True)
class App:
    framework: str
    start: str
    build: str | None
    static_dir: str | None = None
    spa: bool = False


def detect_app(root: Path, package: dict[str, object], pm: PackageManager) -> App:
    scripts = _strings(package.get("scripts"))
    deps = {**_strings(package.get("devDependencies")), **_strings(package.get("dependencies"))}
    build = f"{pm.run} build" if "build" in scripts else None
    start_script = scripts.get("start")
    serves_itself = any(name in deps for name in _SERVERS)
    if "next" in deps:
        if re.search(r"output\s*:\s*['\"]export['\"]", _next_config(root)):
            return App("next (static export)", _static("out", False), _need(build), "out")
        return App("next", "next start -H $HOST -p $PORT", _need(build))
    if "nuxt" in deps:
        return App("nuxt", "node .output/server/index.mjs", _need(build))
    if "@remix-run/serve" in deps:
        return App("remix", "remix-serve ./build/server/index.js", _need(build))
    if start_script and not _DEV_SERVERS.match(start_script):
        return App(_framework(deps), "npm start", build)
    if not serves_itself:
        for dependency, output, spa in _STATIC:
            if dependency in deps:
                return App(dependency, _static(output, spa), _need(build), output, spa)
    entry = _server_file(root, package)
    if build and not serves_itself:
        # A bundler (webpack, parcel, rollup...) whose output directory is not known before
        # the build: the first of the usual ones that holds an index.html is served.
        static = f"{STATIC_SERVER} dist build out public"
        if entry is None:
            return App("static build", static, build, "dist")
        built = "[ -f dist/index.html ] || [ -f build/index.html ] || [ -f out/index.html ]"
        start = f"if {built}; then exec {static}; else exec node {entry}; fi"
        return App("node or static build", start, build)
    if entry is not None:
        return App(_framework(deps), f"node {entry}", build)
    raise PlanError(
        "package.json has no start script, and no server file (main, server.js, index.js) or "
        "known static build (Vite, create-react-app, Astro, SvelteKit) was found: add "
        '"start": "node server.js" to its scripts'
    )


def _server_file(root: Path, package: dict[str, object]) -> str | None:
    main = package.get("main")
    for entry in ([main] if isinstance(main, str) else []) + ["server.js", "index.js", "app.js"]:
        if re.fullmatch(r"[\w./-]+\.(c|m)?js", entry) and ".." not in entry:
            if (root / entry).is_file():
                return entry
    return None


def _need(build: str | None) -> str:
    if build is None:
        raise PlanError(
            'package.json has no "build" script, which this framework needs: add one '
            '(e.g. "build": "vite build")'
        )
    return build


def _static(directory: str, spa: bool) -> str:
    prefix = "DEVPUSH_STATIC_SPA=1 " if spa else ""
    return f"{prefix}{STATIC_SERVER} {directory}"


def _framework(deps: dict[str, str]) -> str:
    return next((name for name in _SERVERS if name in deps), "node")


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _next_config(root: Path) -> str:
    names = ("next.config.js", "next.config.mjs", "next.config.ts", "next.config.cjs")
    return "\n".join(read(root / name) for name in names)
