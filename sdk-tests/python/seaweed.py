"""A real SeaweedFS (`weed mini`: S3, an Iceberg REST catalog, S3 Tables) and Rivulet servers
delivering to it, started by the tests themselves. RIVULET_WEED names the pinned `weed`
(scripts/seaweedfs.sh installs it), RIVULET_BIN the `rivulet` binary."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ACCESS_KEY = "rivulet"
SECRET_KEY = "rivulet-secret"
WEED = os.environ.get("RIVULET_WEED")
RIVULET_BIN = os.environ.get("RIVULET_BIN", "target/debug/rivulet")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_admin_port():
    """A free port whose neighbour 10,000 up is free too (weed's admin worker dials it)."""
    for _ in range(200):
        port = free_port()
        if port >= 55_000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
                return port
        except OSError:
            continue
    raise RuntimeError("no free admin port pair")


class Weed:
    """`weed mini` on loopback with credentials; stop() kills it and removes its data."""

    def __init__(self, table_bucket="warehouse"):
        self.dir = tempfile.mkdtemp(prefix="rivulet-weed-")
        p = [free_port() for _ in range(9)]
        admin = free_admin_port()
        self.s3_port, self.iceberg_port, self.table_bucket = p[6], p[8], table_bucket
        # weed makes a unix socket per gRPC service in /tmp, named by its port (whatever
        # TMPDIR says), and leaves it when killed: stop() removes those of these ports.
        self.ports = p + [admin, admin + 10_000]
        d = self.dir
        os.makedirs(f"{d}/data")
        os.makedirs(f"{d}/logs")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        self.process = subprocess.Popen(
            [WEED, f"-logdir={d}/logs", "mini", f"-dir={d}/data",
             "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
             f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
             f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}", f"-filer.localSocket={d}/filer.sock",
             f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-s3.port.iceberg={p[8]}",
             "-s3.port.lance=0", f"-s3.localSocket={d}/s3.sock",
             f"-admin.port={admin}", f"-admin.port.grpc={admin + 10_000}",
             "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
             f"-tableBucket={table_bucket}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        ready = threading.Event()

        def watch():
            for line in self.process.stdout:
                if "All enabled components are running" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise RuntimeError("weed mini did not start within 60 s")

    @property
    def s3_endpoint(self):
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def iceberg_endpoint(self):
        return f"http://127.0.0.1:{self.iceberg_port}"

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        for port in self.ports:
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.remove(path)
                except OSError:
                    pass


class Rivulet:
    """`rivulet serve` on port 0 with `args`, its S3 credentials SeaweedFS's; kill() is -9."""

    def __init__(self, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIVULET_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION="us-east-1")
        self.process = subprocess.Popen(
            [RIVULET_BIN, "serve", "--listen", "127.0.0.1:0", "--log", "warn", *args],
            stdout=subprocess.PIPE, stderr=None, env=env, text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("rivulet listening on "):
            self.kill()
            raise RuntimeError(f"rivulet did not start: {line!r}")
        self.endpoint = "http://" + line.strip().rsplit(" ", 1)[1]

    def kinesis(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "kinesis", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="AKID", aws_secret_access_key="secret",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
