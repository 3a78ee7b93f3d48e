"""The container files agree with the repository (no Docker needed): everything the Dockerfile
copies exists and survives .dockerignore, it installs the locked dependencies, runs the console
script pyproject.toml declares as a non-root user, checks /healthz on the port it serves; and
docker-compose.yml runs two replicas of that image on one PostgreSQL. The image's command, run
here as the image would run it, holds the HTTP edge limits without a proxy."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import socket
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.simulator import SimulatorServer
from harness.service import ROOT, ServiceProcess, service_env
from harness.waiting import free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        """Exec form (a JSON array) or shell form, with --flags left in."""
        text = self.arguments.strip()
        if text.startswith("["):
            words: list[str] = json.loads(text)
            return words
        return shlex.split(text)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped, tagged by stage."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    stage = ""
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arguments, re.IGNORECASE)
            stage = match.group(1) if match else arguments.strip()
        instructions.append(Instruction(stage, keyword, arguments.strip()))
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())
STAGES = [i.stage for i in INSTRUCTIONS if i.keyword == "FROM"]
FINAL = STAGES[-1]


def final(keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def only(keyword: str) -> Instruction:
    found = final(keyword)
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def copy_sources(instruction: Instruction) -> list[str] | None:
    """The build-context sources of a COPY, or None for COPY --from=<stage>."""
    words = instruction.words()
    if any(word.startswith("--from=") for word in words):
        return None
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def context_copies() -> list[str]:
    sources: list[str] = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword in ("COPY", "ADD"):
            sources.extend(copy_sources(instruction) or [])
    return sources


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


class DockerIgnore:
    """.dockerignore as Docker applies it: patterns relative to the context root, `**` for any
    number of folders, a match on a folder excludes what is inside, later `!` lines re-include."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((negate, pattern))

    @staticmethod
    def _matches(pattern: str, path: str) -> bool:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.fullmatch(regex, path) is not None

    def excluded(self, path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negate, pattern in self.rules:
            if any(self._matches(pattern, prefix) for prefix in prefixes):
                verdict = not negate
        return verdict


def files_under(source: str) -> list[str]:
    path = ROOT / source
    if path.is_file():
        return [source.strip("/")]
    return sorted(
        str(file.relative_to(ROOT))
        for file in path.rglob("*")
        if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
    )


class TestDockerfile:
    def test_it_is_multi_stage_on_a_slim_python_image(self) -> None:
        assert len(STAGES) >= 2
        base = next(i for i in INSTRUCTIONS if i.keyword == "ARG" and "PYTHON_IMAGE" in i.arguments)
        assert re.search(r"python:3\.1[1-9][^ ]*-slim", base.arguments), base.arguments
        assert all("${PYTHON_IMAGE}" in i.arguments for i in INSTRUCTIONS if i.keyword == "FROM")

    @pytest.mark.parametrize("source", sorted(set(context_copies())))
    def test_every_copied_path_exists_and_is_not_dockerignored(self, source: str) -> None:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        ignore = DockerIgnore(DOCKERIGNORE.read_text())
        files = files_under(source)
        assert files, f"COPY {source}: nothing to copy"
        excluded = [file for file in files if ignore.excluded(file)]
        assert excluded == [], f".dockerignore drops {excluded} that COPY {source} needs"

    def test_it_installs_the_lock_file_and_the_lock_pins_every_dependency(self) -> None:
        runs = " ".join(i.arguments for i in INSTRUCTIONS if i.keyword == "RUN")
        match = re.search(r"pip install[^&;]*?-r\s+(\S+)", runs)
        assert match, "no `pip install -r <lock file>`"
        lock = match.group(1)
        assert lock in context_copies(), f"{lock} is installed but never copied in"
        pinned = {
            re.split(r"[=\[]", line)[0].strip().lower().replace("_", "-")
            for line in (ROOT / lock).read_text().splitlines()
            if "==" in line and not line.lstrip().startswith("#")
        }
        for requirement in pyproject()["project"]["dependencies"]:
            name = re.split(r"[<>=!~\[; ]", requirement)[0].lower().replace("_", "-")
            assert name in pinned, f"{name} is a dependency but {lock} does not pin it"
        # The project itself goes in without re-resolving what the lock file pinned.
        assert re.search(r"pip install --no-deps \.", runs)

    def test_the_entry_point_is_the_declared_console_script_serving_on_the_exposed_port(
        self,
    ) -> None:
        scripts = pyproject()["project"]["scripts"]
        entrypoint = only("ENTRYPOINT").words()
        assert entrypoint[0] in scripts, f"{entrypoint} is not a console script of pyproject"
        assert scripts[entrypoint[0]] == "app.cli:main"
        command = only("CMD").words()
        assert command[0] == "serve"
        options = dict(zip(command[1::2], command[2::2], strict=False))
        assert options["--host"] == "0.0.0.0"  # reachable from outside the container
        assert "--graceful-timeout" in options
        exposed = {word.split("/")[0] for i in final("EXPOSE") for word in i.words()}
        assert exposed == {options["--port"]}

    def test_it_runs_as_a_non_root_user(self) -> None:
        user = final("USER")[-1].words()[0]
        assert user.split(":")[0] not in ("root", "0")
        creates_user = " ".join(i.arguments for i in final("RUN"))
        assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", creates_user)
        # The one folder it must write to (the default SQLite store) belongs to that user.
        assert f"chown {user}:{user} /data" in creates_user

    def test_the_healthcheck_asks_healthz_on_the_served_port(self) -> None:
        healthcheck = only("HEALTHCHECK").arguments
        port = dict(zip(only("CMD").words()[1::2], only("CMD").words()[2::2], strict=False))
        assert f"127.0.0.1:{port['--port']}/healthz" in healthcheck

    def test_migrations_are_found_in_the_image_without_a_source_checkout(self) -> None:
        """app/store/migrate.py looks at ALEMBIC_CONFIG first (tests/store/test_migrations.py runs
        this layout): the image must set it to where it copies alembic.ini and migrations/."""
        env = " ".join(i.arguments for i in final("ENV"))
        match = re.search(r"ALEMBIC_CONFIG=(\S+)", env)
        assert match, "the final stage does not set ALEMBIC_CONFIG"
        ini = match.group(1)
        workdir = only("WORKDIR").arguments
        destinations = {}
        for instruction in final("COPY"):
            sources = copy_sources(instruction)
            if sources is not None:
                target = posixpath.normpath(posixpath.join(workdir, instruction.words()[-1]))
                for source in sources:
                    destinations[source.strip("/")] = target
        folder = posixpath.dirname(ini)
        assert destinations.get("alembic.ini") in (ini, folder)
        assert destinations.get("migrations") == posixpath.join(folder, "migrations")


class ImageCommand(ServiceProcess):
    """The final stage's ENTRYPOINT and CMD, run from the source tree on a loopback port."""

    def command(self) -> list[str]:
        entrypoint = only("ENTRYPOINT").words()
        assert pyproject()["project"]["scripts"][entrypoint[0]] == "app.cli:main"
        command = only("CMD").words()
        for option, value in (("--host", "127.0.0.1"), ("--port", str(self.port))):
            command[command.index(option) + 1] = value
        return [sys.executable, "-m", "app.cli", *entrypoint[1:], *command]


def test_the_image_command_refuses_oversized_header_blocks_without_a_proxy(
    database_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """: the limits hold in the container itself, that is, in what its command runs."""
    server = ImageCommand(
        service_env(database_url, sim), log_path=tmp_path / "image.log", port=free_port()
    ).start()
    try:
        answers = []
        for padding in (15 * 1024, 17 * 1024):
            request = (
                b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                + b"X-Pad: "
                + b"v" * padding
                + b"\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
                answer = b""
                try:
                    sock.sendall(request)
                    while piece := sock.recv(65536):
                        answer += piece
                except (ConnectionResetError, BrokenPipeError):
                    pass
            answers.append(answer[:12])
        assert answers[0] == b"HTTP/1.1 200"
        assert answers[1] in (b"HTTP/1.1 431", b"")
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        server.terminate()


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    for path in (".env", ".env.production", ".git/config", "data/intercom-sync.db", ".venv/x"):
        assert ignore.excluded(path), path
    assert not ignore.excluded(".env.example")


def test_compose_runs_two_replicas_of_the_image_on_one_postgres() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:1[5-9].*", postgres["image"])
    assert "healthcheck" in postgres
    replicas = {
        name: service
        for name, service in services.items()
        if name != "postgres" and service.get("build") == "."
    }
    assert len(replicas) >= 2, f"expected two replicas built from the Dockerfile: {services}"
    images = {service["image"] for service in replicas.values()}
    assert len(images) == 1, "the replicas must run the same image"
    for name, service in replicas.items():
        database_url = service["environment"]["DATABASE_URL"]
        assert database_url.startswith("postgresql://"), name
        assert "@postgres:" in database_url, f"{name} must use the compose postgres service"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Longer than `serve --graceful-timeout` so a stop is graceful, not a kill.
        grace = int(str(service["stop_grace_period"]).rstrip("s"))
        timeout = dict(zip(only("CMD").words()[1::2], only("CMD").words()[2::2], strict=False))
        assert grace > int(timeout["--graceful-timeout"])
    ports = [service["ports"][0].split(":")[0] for service in replicas.values()]
    assert len(set(ports)) == len(ports), "two replicas cannot publish the same host port"
