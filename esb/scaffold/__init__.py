"""``esb new adapter NAME``: a package with its entry point, settings model and tests."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from string import Template

from esb.errors import ConfigError

NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
TEMPLATES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "{package}/__init__.py": "init.py.tmpl",
    "{package}/settings.py": "settings.py.tmpl",
    "{package}/source.py": "source.py.tmpl",
    "{package}/sink.py": "sink.py.tmpl",
    "tests/test_{package}.py": "test_adapter.py.tmpl",
}


def new_adapter(name: str, parent: Path) -> Path:
    """Write the package ``esb-NAME`` under ``parent``; returns its directory."""
    if not NAME.match(name):
        raise ConfigError(f"adapter name {name!r}: use lowercase letters, digits and dashes")
    package = "esb_" + name.replace("-", "_")
    target = parent / f"esb-{name}"
    if target.exists():
        raise ConfigError(f"{target} exists already")
    words = {
        "name": name,
        "package": package,
        "title": name.replace("-", " ").title(),
        "cls": "".join(part.title() for part in name.split("-")),
    }
    source = files("esb.scaffold") / "templates"
    for relative, template in TEMPLATES.items():
        path = target / relative.format(package=package)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (source / template).read_text()
        path.write_text(Template(text).substitute(words))
    return target
