"""deploy/Dockerfile, checked without a Docker engine: the build context .dockerignore lets in
(by docker's own matching rules), hadolint, the locked and hashed requirements, the data
directory and the health check."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from docker.utils.build import exclude_paths
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from esb.settings import load_settings
from tests.support.dockerfile import DOCKERFILE, environment, last, stage

ROOT = DOCKERFILE.parents[1]
LOCK = ROOT / "deploy" / "requirements.lock"
#: What a build context must never carry: environments, history, local output and caches.
NEVER = (".venv", ".git", "demo-out", ".cluster", "tests", "bench", "esb-targets", ".cache")
CACHES = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".import_linter_cache")


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copied_sources() -> list[str]:
    """The build-context paths every COPY of every stage names (not those from other stages)."""
    found = []
    for name in ("esb", "demo"):
        for instruction in stage(name):
            if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
                found += shlex.split(instruction.arguments)[:-1]
    return found


def context(root: Path) -> set[str]:
    """What the Docker client sends of ``root`` when it builds deploy/Dockerfile."""
    return exclude_paths(str(root), ignore_patterns(), dockerfile="deploy/Dockerfile")


def test_the_context_holds_everything_the_dockerfile_copies() -> None:
    sent = context(ROOT)
    for source in copied_sources():
        assert source in sent, f"COPY {source}: left out of the build context by .dockerignore"
        if (ROOT / source).is_dir():
            tree = (ROOT / source).rglob("*")
            files = [p for p in tree if p.is_file() and "__pycache__" not in p.parts]
            assert files
            assert all(str(p.relative_to(ROOT)) in sent for p in files), source


def test_the_context_leaves_out_environments_history_output_and_caches(tmp_path: Path) -> None:
    """A checkout as a developer's looks after `make install`, `make demo` and a test run."""
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    for source in copied_sources():
        (tmp_path / source / "module.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source / "module.py").write_text("")
    left_over = [
        *(f"{name}/file" for name in NEVER),
        *(f"{name}/file" for name in CACHES),
        *(f"esb/{name}/module.cpython-311.pyc" for name in CACHES),
        "adapters/sql/__pycache__/source.cpython-311.pyc",
        "esb.egg-info/PKG-INFO",
        "http-sink.idempotency.sqlite3",
        "deals.cursor.json",
        "esb-journal.sqlite3",
    ]
    for name in left_over:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    sent = context(tmp_path)
    assert not [name for name in left_over if name in sent]
    copied = tuple(copied_sources())
    assert all(
        path.startswith(copied) or path in (".dockerignore", "deploy/Dockerfile") for path in sent
    ), sorted(sent)


def test_hadolint_finds_nothing_to_say_about_the_dockerfile() -> None:
    tool = Path(sys.executable).with_name("hadolint")
    assert tool.exists(), "hadolint is missing: `make install` installs the dev extras"
    done = subprocess.run(
        [str(tool), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def locked() -> dict[str, tuple[str, int]]:
    """Each locked package's version and how many hashes it carries."""
    found: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", entry)
        if match:
            name = canonicalize_name(match[1])
            found[name] = (match[2], entry.count("--hash=sha256:"))
    return found


def image_extras() -> list[str]:
    """The extras `make lock` locks (the image's adapters' dependencies)."""
    recipe = (ROOT / "Makefile").read_text().split("\nlock:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"--extra (\S+)", recipe)


def test_the_lock_pins_what_pyproject_pins_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = image_extras()
    assert extras == ["postgres", "email", "mqtt"]  # every built-in adapter's dependencies
    wanted = list(project["project"]["dependencies"])
    for extra in extras:
        wanted += project["project"]["optional-dependencies"][extra]
    lock = locked()
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement.name} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(lock[name][0]), f"{line}: locked {lock[name][0]}"
    assert "psycopg-binary" in lock  # psycopg[binary]'s extra
    [backend] = project["build-system"]["requires"]
    backend_requirement = Requirement(backend)
    version, _ = lock[canonicalize_name(backend_requirement.name)]
    assert backend_requirement.specifier.contains(version)
    assert all(hashes > 0 for _, hashes in lock.values())


def test_the_image_installs_only_the_hashed_lock_and_then_esb_alone() -> None:
    runs = [i.arguments for i in stage("esb") if i.keyword == "RUN" and "pip " in i.arguments]
    copies = [i.arguments for i in stage("esb") if i.keyword == "COPY"]
    assert "deploy/requirements.lock ./" in copies
    assert runs[0] == "pip install --no-cache-dir --require-hashes -r requirements.lock"
    assert runs[1].startswith("pip install --no-cache-dir --no-deps --no-build-isolation . ")
    assert len(runs) == 2


def test_the_data_dir_is_a_volume_of_the_image_user_and_esb_reads_it() -> None:
    env = environment("esb")
    data = env["ESB_SERVICE__DATA_DIR"]
    user = last("esb", "USER")
    assert user.isdigit(), "a numeric user, so Kubernetes' runAsNonRoot can check it"
    assert json.loads(last("esb", "VOLUME")) == [data]
    setup = next(i.arguments for i in stage("esb") if f"mkdir {data}" in i.arguments)
    assert f"chown {user}:{user} {data}" in setup
    assert f"--uid {user}" in setup
    settings = load_settings(None, service={"data_dir": data})
    assert settings.journal.path == Path(data) / "esb-journal.sqlite3"


def test_the_health_check_asks_esb_which_port_it_serves() -> None:
    check = last("esb", "HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command == ["esb", "health"]
    assert not re.search(r"\d{4}", check.split(" CMD ", 1)[1]), "no port written into the check"
    assert environment("esb")["ESB_SERVICE__HEALTH_PORT"] == last("esb", "EXPOSE")
