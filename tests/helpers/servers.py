"""Real servers for the remote-tier tests: ``redis-server`` and nginx (WebDAV PUT), each
started on a free loopback port in a temporary directory and stopped afterwards.

A missing server is a test failure naming what to install, never a silent skip (``.ci/run``
installs both when it runs as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y redis-server nginx-light openssl (as root, after apt-get update)"
_NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def _find(program: str, *candidates: str) -> str:
    for name in (program, *candidates):
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK)
                                       else None)
        if found:
            return found
    pytest.fail(f"{program} is needed for the remote-tier tests and was not found: "
                f"{INSTALL_HINT}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"server did not listen on port {port} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A redis-server on a free port; yields its URL."""
    exe = _find("redis-server", "/usr/bin/redis-server")
    port = free_port()
    d = tmp / f"redis-{port}"
    d.mkdir(parents=True)
    log = d / "redis.log"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
         "--appendonly", "no", "--logfile", str(log), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, proc, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@contextlib.contextmanager
def nginx_webdav(tmp: Path, *, tls: bool = False) -> Iterator[str]:
    """nginx serving a directory with WebDAV PUT on a free port; yields its URL. With
    ``tls``: HTTPS with a self-signed certificate for 127.0.0.1 made by ``openssl``, written
    to ``<tmp>/nginx-<port>/cert.pem`` (trust it through ``SSL_CERT_FILE``)."""
    exe = _find("nginx", *_NGINX_CANDIDATES)
    port = free_port()
    d = tmp / f"nginx-{port}"
    (d / "data").mkdir(parents=True)
    log = d / "error.log"
    listen, scheme = f"127.0.0.1:{port}", "http"
    if tls:
        subprocess.run([_find("openssl", "/usr/bin/openssl"), "req", "-x509", "-newkey",
                        "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                        "-out", str(d / "cert.pem")], check=True, capture_output=True)
        listen += f" ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem"
        scheme = "https"
    conf = d / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {listen};
        root {d}/data;
        client_max_body_size 0;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
""")
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(d), "-e", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, proc, log)
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        _stop(proc)
