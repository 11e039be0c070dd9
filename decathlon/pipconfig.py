"""pip's configuration, read as pip reads it, so that uv installs from the same places.

uv does not read pip's configuration files or ``PIP_*`` variables. A machine whose pip is set up
with a company index, local wheel folders or a constraints file would otherwise see uv go to
PyPI for everything (on the project's CI machines: a 3 GB CUDA build of torch instead of the
wheel already on disk). :func:`read` collects the settings that decide where packages come from
and which versions are allowed, and :func:`uv_args` turns them into uv's options.

Files are read in pip's order, later ones winning key by key: ``$XDG_CONFIG_DIRS/pip/pip.conf``
(default ``/etc/xdg``), ``/etc/pip.conf``, ``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``
(default ``~/.config``), ``$VIRTUAL_ENV/pip.conf`` (the harness's own), then ``$PIP_CONFIG_FILE``;
in each, ``[global]`` then ``[install]``. ``PIP_*`` variables win over every file. A
``PIP_CONFIG_FILE`` of ``/dev/null`` turns the files off, as it does for pip.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The pip options carried over to uv (pip's names).
KEYS = (
    "index-url",
    "extra-index-url",
    "find-links",
    "constraint",
    "no-index",
    "trusted-host",
    "cert",
)


@dataclass(frozen=True)
class PipSettings:
    """The carried-over settings and the files or variables they came from."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.index_url
            or self.extra_index_urls
            or self.find_links
            or self.constraints
            or self.no_index
            or self.trusted_hosts
            or self.cert
        )

    def describe(self) -> str:
        """One line for logs: what was carried over, and from where."""
        if self.empty:
            return "no pip configuration to carry over"
        parts = []
        if self.index_url:
            parts.append(f"index {self.index_url}")
        parts += [f"extra index {u}" for u in self.extra_index_urls]
        parts += [f"find-links {u}" for u in self.find_links]
        parts += [f"constraints {c}" for c in self.constraints]
        if self.no_index:
            parts.append("no index")
        return (
            "pip settings carried over to uv: "
            + ", ".join(parts)
            + f" (from {', '.join(self.sources)})"
        )


def config_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """pip's configuration files, in the order pip loads them (later ones win)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []
    home = Path(environ.get("HOME") or Path.home())
    xdg_dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if d]
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs]
    files.append(Path("/etc/pip.conf"))
    files.append(home / ".pip" / "pip.conf")
    files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    files.append(Path(sys.prefix) / "pip.conf")
    if explicit:
        files.append(Path(explicit))
    return files


def read(environ: Mapping[str, str] | None = None) -> PipSettings:
    """pip's effective settings for ``pip install`` from its files and ``PIP_*`` variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path in config_files(environ):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue  # pip itself refuses such a file; nothing sensible to carry over
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    key = _canonical(key)
                    if key in KEYS:
                        values[key] = value
                        origin[key] = str(path)
    for key in KEYS:
        variable = "PIP_" + key.upper().replace("-", "_")
        if variable in environ:
            values[key] = environ[variable]
            origin[key] = f"${variable}"
    # pip's plural spellings of the list options are also accepted as variables and keys.
    if "PIP_CONSTRAINTS" in environ and "constraint" not in values:
        values["constraint"] = environ["PIP_CONSTRAINTS"]
        origin["constraint"] = "$PIP_CONSTRAINTS"

    def listed(key: str) -> tuple[str, ...]:
        return tuple(values.get(key, "").split())

    return PipSettings(
        index_url=values.get("index-url") or None,
        extra_index_urls=listed("extra-index-url"),
        find_links=listed("find-links"),
        constraints=listed("constraint"),
        no_index=_truthy(values.get("no-index", "")),
        trusted_hosts=listed("trusted-host"),
        cert=values.get("cert") or None,
        sources=tuple(dict.fromkeys(origin[k] for k in values)),
    )


def uv_args(settings: PipSettings, *, constraints: bool = True) -> list[str]:
    """uv options that install from where pip would, under pip's constraints.

    pip looks at every index and link at once and takes the best version; uv by default stops
    at the first index that has the package, so with more than one source the strategy is set
    to pip's (``unsafe-best-match``).
    """
    args: list[str] = []
    if settings.no_index:
        args.append("--no-index")
    if settings.index_url:
        args += ["--index-url", settings.index_url]
    for url in settings.extra_index_urls:
        args += ["--extra-index-url", url]
    for link in settings.find_links:
        args += ["--find-links", link]
    if constraints:
        for path in settings.constraints:
            args += ["--constraint", path]
    for host in settings.trusted_hosts:
        args += ["--allow-insecure-host", host]
    if settings.extra_index_urls or settings.find_links:
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def uv_environ(settings: PipSettings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a uv process: pip's ``cert`` becomes ``SSL_CERT_FILE``."""
    out = dict(os.environ if environ is None else environ)
    if settings.cert and "SSL_CERT_FILE" not in out:
        out["SSL_CERT_FILE"] = settings.cert
    return out


def _canonical(key: str) -> str:
    key = key.strip().lower().replace("_", "-")
    return {"constraints": "constraint", "extra-index-urls": "extra-index-url"}.get(key, key)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
