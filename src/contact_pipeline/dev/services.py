"""Local development servers: Apache Kafka (KRaft) and FerretDB (SQLite backend).

Both run as detached background processes on 127.0.0.1, with their state under
``<root>/.local/run``:

* ``run/kafka/`` contains ``server.properties``, ``server.log`` (log4j2),
  ``stdout.log`` (JVM output) and ``data/`` (the KRaft log directory);
* ``run/ferretdb/`` contains ``server.log`` and ``data/`` (the SQLite files);
* ``run/<service>.pid`` and ``run/<service>.addr`` record the running process.

Build artifacts are derived from ``scripts/services`` in the repository and
cached next to it: ``.local/kafka.classpath`` (from Maven) and
``.local/bin/ferretdb`` (from ``go build``). They are rebuilt only when missing
or older than their inputs.

Usable as a library (``up``, ``down``, ``status``) or as a command::

    python -m contact_pipeline.dev.services up|down|status
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("contact_pipeline.dev")

# Every listener binds to loopback only: these are unauthenticated development
# servers and must never be reachable from another machine.
HOST = "127.0.0.1"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_MONGO_PORT = 27017
KAFKA_START_TIMEOUT = 90.0
FERRETDB_START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 20
KAFKA_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
MIN_JAVA_MAJOR = 17

KAFKA = "kafka"
FERRETDB = "ferretdb"
SERVICES = (KAFKA, FERRETDB)

# Popen objects of servers started by this interpreter, so that their exit is
# reaped (a zombie child would otherwise still look alive to os.kill(pid, 0)).
_children: dict[int, subprocess.Popen[bytes]] = {}


class ServiceError(RuntimeError):
    """A local development server could not be built, started or stopped."""


@dataclasses.dataclass(frozen=True)
class ServiceEndpoints:
    """Addresses of the running local servers."""

    kafka_bootstrap_servers: str
    mongodb_uri: str


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Paths of the service sources, build artifacts and run state."""

    root: Path
    source_root: Path

    @property
    def services_src(self) -> Path:
        return self.source_root / "scripts" / "services"

    @property
    def pom(self) -> Path:
        return self.services_src / "pom.xml"

    @property
    def log4j_config(self) -> Path:
        return self.services_src / "log4j2.properties"

    @property
    def ferretdb_src(self) -> Path:
        return self.services_src / "ferretdb"

    @property
    def classpath_file(self) -> Path:
        return self.source_root / ".local" / "kafka.classpath"

    @property
    def ferretdb_bin(self) -> Path:
        return self.source_root / ".local" / "bin" / "ferretdb"

    @property
    def run(self) -> Path:
        return self.root / ".local" / "run"

    def service_dir(self, name: str) -> Path:
        return self.run / name

    def data_dir(self, name: str) -> Path:
        return self.run / name / "data"

    def log_file(self, name: str) -> Path:
        return self.run / name / "server.log"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def addr_file(self, name: str) -> Path:
        return self.run / f"{name}.addr"

    @property
    def kafka_properties(self) -> Path:
        return self.service_dir(KAFKA) / "server.properties"

    @property
    def kafka_stdout(self) -> Path:
        return self.service_dir(KAFKA) / "stdout.log"


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def up(
    root: Path | None = None,
    *,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    mongo_port: int = DEFAULT_MONGO_PORT,
    kafka_timeout: float = KAFKA_START_TIMEOUT,
    ferretdb_timeout: float = FERRETDB_START_TIMEOUT,
) -> ServiceEndpoints:
    """Start the local Kafka broker and FerretDB server, or reuse running ones.

    Resolves the Kafka jars with Maven and builds FerretDB with Go when their
    cached outputs are missing or stale, and formats the Kafka storage on first
    use. Then it starts both servers detached from this process and waits until
    Kafka responds to a metadata request and FerretDB responds to ``ping``.

    Args:
        root: Folder whose ``.local/run`` contains the servers' state; defaults to
            the repository root.
        kafka_port: Broker listener port; the KRaft controller uses
            ``kafka_port + 1``.
        mongo_port: FerretDB (MongoDB wire protocol) port.
        kafka_timeout: Seconds to wait for the broker to respond.
        ferretdb_timeout: Seconds to wait for FerretDB to respond.

    Returns:
        The endpoints to connect to.

    Raises:
        ServiceError: A prerequisite is missing, a port is taken by another
            process, a build failed, or a server did not come up in time (the
            message quotes the end of its log).
    """
    for setting, port in (("kafka_port", kafka_port), ("mongo_port", mongo_port)):
        if not 1024 <= port <= 65534:
            raise ServiceError(f"{setting}={port} is outside 1024-65534")
    if mongo_port in (kafka_port, kafka_port + 1):
        raise ServiceError(
            f"mongo_port={mongo_port} clashes with Kafka, which uses kafka_port={kafka_port} "
            f"and kafka_port+1={kafka_port + 1} for its controller"
        )

    layout = _layout(root)
    layout.run.mkdir(parents=True, exist_ok=True)
    endpoints = ServiceEndpoints(
        kafka_bootstrap_servers=f"{HOST}:{kafka_port}",
        mongodb_uri=f"mongodb://{HOST}:{mongo_port}/",
    )
    with _run_lock(layout):
        kafka_pid = _running_pid(layout, KAFKA)
        ferretdb_pid = _running_pid(layout, FERRETDB)
        _check_reuse(layout, KAFKA, kafka_pid, f"{HOST}:{kafka_port}", "kafka_port")
        _check_reuse(layout, FERRETDB, ferretdb_pid, f"{HOST}:{mongo_port}", "mongo_port")

        kafka_proc: subprocess.Popen[bytes] | None = None
        ferretdb_proc: subprocess.Popen[bytes] | None = None
        if kafka_pid is None:
            _ensure_port_free(kafka_port, "the Kafka broker listener", "kafka_port")
            _ensure_port_free(
                kafka_port + 1, "the Kafka controller listener (kafka_port+1)", "kafka_port"
            )
            java = _require_java()
            classpath = _ensure_kafka_classpath(layout)
            _write_kafka_properties(layout, kafka_port)
            _format_kafka_storage(layout, java, classpath)
        if ferretdb_pid is None:
            _ensure_port_free(mongo_port, "FerretDB", "mongo_port")
            ferretdb_bin = _ensure_ferretdb_binary(layout)

        try:
            # Both servers start before either is waited for, so their start-up
            # times overlap.
            if kafka_pid is None:
                kafka_proc = _start_kafka(layout, java, classpath, kafka_port)
            if ferretdb_pid is None:
                ferretdb_proc = _start_ferretdb(layout, ferretdb_bin, mongo_port)

            _await_service(
                layout,
                FERRETDB,
                ferretdb_proc,
                ferretdb_pid,
                mongo_port,
                lambda: _ping_ferretdb(endpoints.mongodb_uri),
                ferretdb_timeout,
            )
            _await_service(
                layout,
                KAFKA,
                kafka_proc,
                kafka_pid,
                kafka_port,
                lambda: _kafka_metadata_ok(endpoints.kafka_bootstrap_servers),
                kafka_timeout,
            )
        except BaseException:
            # Leave nothing half-started behind. Servers that were already
            # running before this call are left alone.
            for name, proc in ((KAFKA, kafka_proc), (FERRETDB, ferretdb_proc)):
                if proc is not None:
                    _stop_service(layout, name, quiet=True)
            raise
    return endpoints


def down(root: Path | None = None, *, wipe: bool = False) -> None:
    """Stop the local servers and remove their pid files.

    Each server gets SIGTERM, then SIGKILL if it has not exited within
    ``STOP_TIMEOUT`` seconds. Data (Kafka topics, FerretDB documents) is kept
    unless ``wipe`` is true, in which case both data folders are deleted.

    Args:
        root: Folder whose ``.local/run`` contains the servers' state; defaults to
            the repository root.
        wipe: Also delete the Kafka and FerretDB data folders.
    """
    layout = _layout(root)
    if not layout.run.is_dir():
        log.info("services: nothing to stop (%s does not exist)", layout.run)
        return
    with _run_lock(layout):
        for name in SERVICES:
            _stop_service(layout, name)
        if not wipe:
            return
        for name in SERVICES:
            data = layout.data_dir(name)
            if data.exists():
                shutil.rmtree(data)
                log.info("%s: deleted %s", name, data)


def status(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Report whether each local server is running.

    Args:
        root: Folder whose ``.local/run`` contains the servers' state; defaults to
            the repository root.

    Returns:
        ``{"kafka": {...}, "ferretdb": {...}}`` where each entry has
        ``running`` (the recorded process is alive and its port accepts
        connections), ``pid`` (or ``None``), ``address`` (``host:port``),
        ``url`` (bootstrap servers or MongoDB URI), ``log`` and ``data`` paths.
    """
    layout = _layout(root)
    default_ports = {KAFKA: DEFAULT_KAFKA_PORT, FERRETDB: DEFAULT_MONGO_PORT}
    report: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        pid = _running_pid(layout, name)
        address = _recorded_address(layout, name) or f"{HOST}:{default_ports[name]}"
        port = int(address.rsplit(":", 1)[1])
        url = address if name == KAFKA else f"mongodb://{address}/"
        report[name] = {
            "running": pid is not None and _port_answers(port),
            "pid": pid,
            "address": address,
            "url": url,
            "log": str(layout.log_file(name)),
            "data": str(layout.data_dir(name)),
        }
    return report


# --------------------------------------------------------------------------
# Paths, locking, process bookkeeping
# --------------------------------------------------------------------------


def _is_source_root(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "scripts" / "services").is_dir()


def _find_source_root() -> Path:
    """Locate the repository checkout containing ``scripts/services``."""
    from_file = Path(__file__).resolve().parents[3]
    if _is_source_root(from_file):
        return from_file
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if _is_source_root(candidate):
            return candidate
    raise ServiceError(
        "cannot find the contact-pipeline repository (a folder with pyproject.toml and "
        "scripts/services); run this from inside the checkout"
    )


def _layout(root: Path | None) -> _Layout:
    # Build artifacts stay with the sources they are built from, so a separate
    # state root (tests use a temporary one) reuses them instead of rebuilding.
    if root is not None and _is_source_root(Path(root).resolve()):
        resolved = Path(root).resolve()
        return _Layout(root=resolved, source_root=resolved)
    source_root = _find_source_root()
    state_root = Path(root).resolve() if root is not None else source_root
    return _Layout(root=state_root, source_root=source_root)


@contextlib.contextmanager
def _run_lock(layout: _Layout) -> Iterator[None]:
    """Serialize up/down calls on one root (parallel test workers, make -j)."""
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.run / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _identity_marker(layout: _Layout, name: str) -> str:
    """Return a string that only this root's server of this kind has on its command line."""
    if name == KAFKA:
        return str(layout.kafka_properties)
    return str(layout.data_dir(FERRETDB))


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state letter follows the parenthesised command name.
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _running_pid(layout: _Layout, name: str) -> int | None:
    """Return the pid from the pid file if that process is alive and is this root's server."""
    pid_file = layout.pid_file(name)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    # Once the server has exited, the system may reuse its pid for another process.
    if cmdline is not None and _identity_marker(layout, name) not in cmdline:
        return None
    return pid


def _recorded_address(layout: _Layout, name: str) -> str | None:
    try:
        address = layout.addr_file(name).read_text().strip()
    except OSError:
        return None
    return address or None


def _record(layout: _Layout, name: str, pid: int, address: str) -> None:
    layout.pid_file(name).write_text(f"{pid}\n")
    layout.addr_file(name).write_text(f"{address}\n")


def _forget(layout: _Layout, name: str) -> None:
    for path in (layout.pid_file(name), layout.addr_file(name)):
        path.unlink(missing_ok=True)


def _check_reuse(layout: _Layout, name: str, pid: int | None, requested: str, setting: str) -> None:
    if pid is None:
        _forget(layout, name)
        return
    current = _recorded_address(layout, name)
    if current is not None and current != requested:
        raise ServiceError(
            f"{name} is already running on {current} (pid {pid}), not on the requested "
            f"{requested}. Run `python -m contact_pipeline.dev.services down` first, or keep "
            f"{setting} at {current.rsplit(':', 1)[1]}"
        )


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _log_excerpt(layout: _Layout, name: str) -> str:
    parts = []
    sources = [layout.log_file(name)]
    if name == KAFKA:
        sources.append(layout.kafka_stdout)
    for path in sources:
        text = _tail(path)
        if text:
            parts.append(f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{text}")
    if not parts:
        return f"(no log output in {layout.service_dir(name)})"
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Prerequisites and builds
# --------------------------------------------------------------------------


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "Java 17+ is required to run the local Kafka broker; install openjdk-17-jre-headless"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return java
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise ServiceError(
            f"Java {MIN_JAVA_MAJOR}+ is required to run the local Kafka broker, but {java} "
            f"is Java {major}; install openjdk-17-jre-headless"
        )
    return java


def _classpath_is_fresh(layout: _Layout) -> bool:
    cp_file = layout.classpath_file
    if not cp_file.is_file():
        return False
    if cp_file.stat().st_mtime < layout.pom.stat().st_mtime:
        return False
    entries = [entry for entry in cp_file.read_text().strip().split(os.pathsep) if entry]
    # A fresh machine or a cleaned ~/.m2 leaves the file pointing at nothing.
    return bool(entries) and all(Path(entry).is_file() for entry in entries)


def _ensure_kafka_classpath(layout: _Layout) -> str:
    if not layout.pom.is_file():
        raise ServiceError(f"missing {layout.pom}; the checkout looks incomplete")
    if _classpath_is_fresh(layout):
        return layout.classpath_file.read_text().strip()

    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven (mvn) is required to resolve the Kafka broker jars from Maven Central; "
            "install maven"
        )
    log.info("kafka: resolving jars with Maven (%s)", layout.pom)
    started = time.monotonic()
    layout.classpath_file.parent.mkdir(parents=True, exist_ok=True)
    partial = layout.classpath_file.with_suffix(".classpath.partial")
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(layout.pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={partial}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise ServiceError(
            f"Maven could not resolve the Kafka jars (exit {result.returncode}):\n{output}"
        )
    partial.replace(layout.classpath_file)
    log.info("kafka: jars resolved in %.1f s", time.monotonic() - started)
    return layout.classpath_file.read_text().strip()


def _ferretdb_inputs(layout: _Layout) -> list[Path]:
    src = layout.ferretdb_src
    inputs = [
        path for path in src.iterdir() if path.suffix == ".go" or path.name in ("go.mod", "go.sum")
    ]
    # This module contains the FerretDB patch, so a change here rebuilds the server too.
    return [*inputs, Path(__file__)]


def _ensure_ferretdb_binary(layout: _Layout) -> Path:
    binary = layout.ferretdb_bin
    if not (layout.ferretdb_src / "go.mod").is_file():
        raise ServiceError(
            f"missing {layout.ferretdb_src / 'go.mod'}; the checkout looks incomplete"
        )
    newest_input = max(path.stat().st_mtime for path in _ferretdb_inputs(layout))
    if binary.is_file() and binary.stat().st_mtime >= newest_input:
        return binary

    go = shutil.which("go")
    if go is None:
        raise ServiceError(
            "Go (the version named in scripts/services/ferretdb/go.mod, or newer) is required "
            "to build the local FerretDB server; install it and put `go` on PATH"
        )
    log.info("ferretdb: building %s with go build (about 2 minutes on a cold module cache)", binary)
    started = time.monotonic()
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + ".partial")
    build = _prepare_patched_build(go, layout)
    result = subprocess.run(
        [go, "build", "-mod=vendor", "-o", str(partial), "."],
        cwd=build,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise ServiceError(f"go build of FerretDB failed (exit {result.returncode}):\n{output}")
    partial.replace(binary)
    log.info("ferretdb: built in %.1f s", time.monotonic() - started)
    return binary


ID_COLUMN_LINE = """IDColumn = DefaultColumn + "->'$._id'\""""
ID_COLUMN_INDEXED = """IDColumn = DefaultColumn + `->"_id"`"""
PATCHED_FILE = "github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata/metadata.go"


def _prepare_patched_build(go: str, layout: _Layout) -> Path:
    """Copy the wrapper module to a build folder, vendor it and patch FerretDB's _id lookups.

    FerretDB 1.24 creates the _id index on the expression ``_ferretdb_sjson->"_id"`` but
    queries ``_ferretdb_sjson->'$._id'``. SQLite matches index expressions literally, so
    every lookup by _id scanned the whole table (about 30 ms per update at 5,000
    documents, growing with the collection). Both expressions extract the same JSON
    value; the patch makes the queries use the indexed form. Go refuses overlays of
    files in the module cache, hence a vendored copy under .local/.
    """
    build = layout.ferretdb_bin.parent.parent / "ferretdb-build"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    for path in layout.ferretdb_src.iterdir():
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            shutil.copy2(path, build / path.name)

    vendored = subprocess.run(
        [go, "mod", "vendor"], cwd=build, capture_output=True, text=True, check=False
    )
    if vendored.returncode != 0:
        raise ServiceError(f"go mod vendor for FerretDB failed:\n{vendored.stderr.strip()}")

    source = build / "vendor" / PATCHED_FILE
    text = source.read_text(encoding="utf-8")
    if ID_COLUMN_LINE not in text:
        raise ServiceError(
            f"{PATCHED_FILE} does not contain the expected line {ID_COLUMN_LINE!r}; the "
            "FerretDB version in scripts/services/ferretdb/go.mod changed, so check whether "
            "the _id index fix is still needed and update or remove it in "
            "contact_pipeline.dev.services"
        )
    source.write_text(text.replace(ID_COLUMN_LINE, ID_COLUMN_INDEXED), encoding="utf-8")
    return build


def _ensure_port_free(port: int, listener: str, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ServiceError(
                f"port {port} on {HOST} is already in use by another process, so {listener} "
                f"cannot listen there; stop that process or choose another port with "
                f"{setting}= (command line: --{setting.replace('_', '-')})"
            ) from None


def _port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------


def _write_kafka_properties(layout: _Layout, port: int) -> None:
    controller_port = port + 1
    data = layout.data_dir(KAFKA)
    data.mkdir(parents=True, exist_ok=True)
    # A static voter list keeps the formatted storage valid when kafka_port
    # changes. `format --standalone` would store the controller's host:port in
    # the metadata log instead.
    properties = f"""\
# Written by contact_pipeline.dev.services on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""
    layout.kafka_properties.write_text(properties)


def _new_cluster_id() -> str:
    # Same format as `kafka-storage random-uuid`: URL-safe base64 of 16 random
    # bytes without padding. Kafka's own generator also skips ids starting with '-'.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_kafka_storage(layout: _Layout, java: str, classpath: str) -> None:
    # Formatting writes the cluster id into the log directory. It runs only once,
    # because a formatted directory cannot be formatted again without deleting its topics.
    data = layout.data_dir(KAFKA)
    if (data / "meta.properties").is_file():
        return
    cluster_id = _new_cluster_id()
    log.info("kafka: formatting storage in %s (cluster id %s)", data, cluster_id)
    result = subprocess.run(
        [
            java,
            f"-Dlog4j2.configurationFile={layout.log4j_config}",
            f"-Dkafka.logs.dir={layout.service_dir(KAFKA)}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(layout.kafka_properties),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-LOG_TAIL_LINES:])
        raise ServiceError(
            f"formatting the Kafka storage failed (exit {result.returncode}):\n{output}"
        )


def _set_aside(path: Path) -> None:
    """Keep the previous run's log as ``*.prev`` so a start-up error quotes only this run."""
    if path.exists():
        path.replace(path.with_name(path.name + ".prev"))


def _spawn(args: list[str], output: Path, cwd: Path) -> subprocess.Popen[bytes]:
    output.parent.mkdir(parents=True, exist_ok=True)
    _set_aside(output)
    with open(output, "wb") as sink:
        # A new session keeps the server alive after this process (or the
        # terminal that started it) exits, and keeps Ctrl-C from reaching it.
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc


def _start_kafka(layout: _Layout, java: str, classpath: str, port: int) -> subprocess.Popen[bytes]:
    log.info("kafka: starting on %s:%d (controller on %s:%d)", HOST, port, HOST, port + 1)
    args = [
        java,
        *KAFKA_JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={layout.log4j_config}",
        f"-Dkafka.logs.dir={layout.service_dir(KAFKA)}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(layout.kafka_properties),
    ]
    _set_aside(layout.log_file(KAFKA))
    proc = _spawn(args, layout.kafka_stdout, layout.service_dir(KAFKA))
    _record(layout, KAFKA, proc.pid, f"{HOST}:{port}")
    return proc


async def _kafka_metadata(bootstrap_servers: str) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="contact-pipeline-dev-services",
        request_timeout_ms=5000,
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=5)
        return await asyncio.wait_for(admin.describe_cluster(), timeout=5)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _run_coroutine(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion, even when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _kafka_metadata_ok(bootstrap_servers: str) -> bool:
    try:
        metadata = _run_coroutine(lambda: _kafka_metadata(bootstrap_servers))
    except Exception as exc:  # any client error means "not ready yet"
        log.debug("kafka: metadata request failed: %r", exc)
        return False
    # The broker listener processes requests only after the controller has
    # unfenced the broker, so a listed broker can serve produce and fetch requests.
    return bool(metadata.get("brokers"))


# --------------------------------------------------------------------------
# FerretDB
# --------------------------------------------------------------------------


def _start_ferretdb(layout: _Layout, binary: Path, port: int) -> subprocess.Popen[bytes]:
    data = layout.data_dir(FERRETDB)
    data.mkdir(parents=True, exist_ok=True)
    log.info("ferretdb: starting on %s:%d (data in %s)", HOST, port, data)
    args = [
        str(binary),
        "-listen-addr",
        f"{HOST}:{port}",
        # FerretDB wants a file: URI naming a directory, with the trailing slash.
        "-sqlite-url",
        f"file:{data}/",
    ]
    proc = _spawn(args, layout.log_file(FERRETDB), layout.service_dir(FERRETDB))
    _record(layout, FERRETDB, proc.pid, f"{HOST}:{port}")
    return proc


def _ping_ferretdb(uri: str) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
    )
    try:
        return bool(client.admin.command("ping").get("ok"))
    except PyMongoError as exc:
        log.debug("ferretdb: ping failed: %r", exc)
        return False
    finally:
        client.close()


# --------------------------------------------------------------------------
# Waiting and stopping
# --------------------------------------------------------------------------


def _await_service(
    layout: _Layout,
    name: str,
    proc: subprocess.Popen[bytes] | None,
    existing_pid: int | None,
    port: int,
    ready: Callable[[], bool],
    timeout: float,
) -> None:
    """Wait until the server responds; raise ServiceError with its log if it exits or times out."""
    pid = proc.pid if proc is not None else existing_pid
    assert pid is not None
    address = f"{HOST}:{port}"
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {proc.returncode} while starting on {address}\n"
                f"{_log_excerpt(layout, name)}"
            )
        if proc is None and not _pid_alive(pid):
            raise ServiceError(
                f"{name} (pid {pid}) stopped while waiting for it on {address}\n"
                f"{_log_excerpt(layout, name)}"
            )
        # A plain TCP check first keeps the client libraries from logging
        # connection errors while the server is still booting.
        if _port_answers(port) and ready():
            break
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{name} (pid {pid}) timed out after {timeout:g} s: no response on {address}\n"
                f"{_log_excerpt(layout, name)}"
            )
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    if proc is None:
        log.info("%s: already running pid=%d on %s", name, pid, address)
    else:
        log.info("%s: started pid=%d on %s in %.1f s", name, pid, address, elapsed)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        # The server leads its own session (start_new_session), so signalling
        # the group also reaches any helper process it spawned.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _stop_service(layout: _Layout, name: str, *, quiet: bool = False) -> None:
    pid = _running_pid(layout, name)
    if pid is None:
        if not quiet:
            log.info("%s: not running", name)
        _forget(layout, name)
        return
    started = time.monotonic()
    _signal(pid, signal.SIGTERM)
    if not _wait_exit(pid, STOP_TIMEOUT):
        log.warning(
            "%s: pid=%d ignored SIGTERM for %.0f s; sending SIGKILL", name, pid, STOP_TIMEOUT
        )
        _signal(pid, signal.SIGKILL)
        if not _wait_exit(pid, 10):
            raise ServiceError(f"{name}: pid {pid} survived SIGKILL")
    _children.pop(pid, None)
    _forget(layout, name)
    log.info("%s: stopped pid=%d in %.1f s", name, pid, time.monotonic() - started)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m contact_pipeline.dev.services",
        description="Run the local Kafka broker and FerretDB server for development and tests.",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="state folder (default: the repository root)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also log debug detail")
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("up", help="start both servers (or reuse running ones)")
    start.add_argument("--kafka-port", type=int, default=DEFAULT_KAFKA_PORT)
    start.add_argument("--mongo-port", type=int, default=DEFAULT_MONGO_PORT)
    start.add_argument("--kafka-timeout", type=float, default=KAFKA_START_TIMEOUT)
    start.add_argument("--ferretdb-timeout", type=float, default=FERRETDB_START_TIMEOUT)

    stop = commands.add_parser("down", help="stop both servers")
    stop.add_argument("--wipe", action="store_true", help="also delete Kafka and FerretDB data")

    show = commands.add_parser("status", help="show whether the servers are running")
    show.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``up``, ``down`` or ``status``; returns the exit code."""
    args = _parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.propagate = False

    try:
        if args.command == "up":
            endpoints = up(
                args.root,
                kafka_port=args.kafka_port,
                mongo_port=args.mongo_port,
                kafka_timeout=args.kafka_timeout,
                ferretdb_timeout=args.ferretdb_timeout,
            )
            print(f"kafka_bootstrap_servers={endpoints.kafka_bootstrap_servers}")
            print(f"mongodb_uri={endpoints.mongodb_uri}")
        elif args.command == "down":
            down(args.root, wipe=args.wipe)
        else:
            report = status(args.root)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for name, info in report.items():
                    state = f"running pid={info['pid']}" if info["running"] else "stopped"
                    print(f"{name}: {state} on {info['address']} (log: {info['log']})")
    except ServiceError as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
