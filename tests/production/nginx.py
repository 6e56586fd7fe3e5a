"""Real nginx processes for the tests: the host config (compose/nginx) and the frontend container's.

Each test gets its own nginx (a private prefix in tmp_path, free loopback ports, stopped by PID),
so rate-limit buckets never leak between tests. The configs are the shipped ones: the host config
rendered by `compose/nginx/render` with test ports and a test certificate, the frontend's with its
container paths moved into the prefix (every rewrite must apply, so the file cannot drift unseen).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port
from tests.support import wait_sync

ROOT = Path(__file__).resolve().parents[2]
NGINX = "/usr/sbin/nginx"
RENDER = ROOT / "compose" / "nginx" / "render"
FRONTEND_CONF = ROOT / "compose" / "frontend" / "nginx.conf"
HOST_MAIN_CONF = ROOT / "compose" / "nginx" / "nginx.conf"

MAIN = """worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
{user}
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d}/access.log;
{extra}    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include {site};
}}
"""


def port_open(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        return s.connect_ex((host, port)) == 0


def user_line() -> str:
    # A root master without `user` runs workers as nobody, who cannot read a 0700 tmp_path.
    return "user root;" if os.geteuid() == 0 else ""


def make_certificate(d: Path) -> Path:
    """A self-signed certificate for localhost and 127.0.0.1, laid out as Let's Encrypt does."""
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(d / "privkey.pem"),
            "-out",
            str(d / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d


@dataclass
class Nginx:
    prefix: Path
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    frontend: Nginx | None = None  # the host nginx's frontend one, when a test starts both
    db: Path | None = None  # the studio database behind it, when a test needs it

    def url(self, name: str, path: str = "") -> str:
        scheme = "https" if name == "https" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[name]}{path}"

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:]
            for p in (self.prefix / "error.log", self.prefix / "stderr.log")
            if p.exists()
        )

    def stop(self) -> None:
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):  # our own master PID only
            if self.proc.poll() is not None:
                return
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                continue


# What an operator may have in /etc/nginx/nginx.conf: compression on, event streams included.
HOST_HTTP_EXTRAS = """    gzip on;
    gzip_types text/plain text/css application/json application/javascript text/event-stream;
"""


def host_main_config(d: Path, site: Path, extra: str) -> str:
    """compose/nginx/nginx.conf (the shipped main config, with its sizing) with the host's paths
    moved into the prefix; every rewrite must apply, so the file cannot drift unseen."""
    text = HOST_MAIN_CONF.read_text()
    temp = "".join(f"    {kind}_temp_path {d}/tmp/{kind};\n" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    rewrites = [
        ("user www-data;", user_line()),
        ("worker_processes auto;", "worker_processes 1;"),
        ("pid /run/nginx.pid;", f"pid {d}/nginx.pid;"),
        ("error_log /var/log/nginx/error.log;", f"error_log {d}/error.log info;"),
        ("include /etc/nginx/modules-enabled/*.conf;", ""),
        (
            "access_log /var/log/nginx/access.log;",
            f"access_log {d}/access.log;\n    client_body_temp_path {d}/tmp/body;\n{temp}",
        ),
        ("    gzip on;\n", extra),
        ("include /etc/nginx/conf.d/*.conf;", ""),
        ("include /etc/nginx/sites-enabled/*;", f"include {site};"),
    ]
    for old, new in rewrites:
        assert text.count(old) == 1, f"{HOST_MAIN_CONF} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def start(
    prefix: Path,
    site_conf: str,
    ports: dict[str, int],
    *,
    listens: list[tuple[str, int]],
    extra: str = "",
    shipped_main: bool = False,
) -> Nginx:
    """Run nginx with `site_conf` inside a main config (the shipped host one, or a minimal one);
    wait until every listen is open."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    site = prefix / "site.conf"
    site.write_text(site_conf)
    conf = prefix / "nginx.conf"
    if shipped_main:
        conf.write_text(host_main_config(prefix, site, extra))
    else:
        conf.write_text(MAIN.format(d=prefix, site=site, user=user_line(), extra=extra))
    cmd = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    check = subprocess.run([*cmd, "-t", "-q"], capture_output=True, text=True)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}\n{site_conf}"
    with open(prefix / "stderr.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(prefix, proc, ports)
    try:
        wait_sync(
            lambda: proc.poll() is not None or all(port_open(h, p) for h, p in listens), message="nginx to listen"
        )
        assert proc.poll() is None
    except AssertionError:
        nginx.stop()
        raise AssertionError(f"nginx did not start:\n{nginx.log()}") from None
    return nginx


def render_host_config(**env: str) -> str:
    done = subprocess.run([str(RENDER)], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_host(prefix: Path, *, frontend_port: int, gateway_port: int) -> Nginx:
    """The host config, as compose/nginx/install renders it, on free loopback ports (v4 and v6)."""
    cert = make_certificate(prefix / "letsencrypt" / "live" / "localhost")
    acme = prefix / "acme"
    (acme / ".well-known" / "acme-challenge").mkdir(parents=True)
    http, https = free_port(), free_port()
    conf = render_host_config(
        DOMAIN="localhost",
        FRONTEND_PORT=str(frontend_port),
        GATEWAY_PORT=str(gateway_port),
        LISTEN_HTTP=f"127.0.0.1:{http}",
        LISTEN6_HTTP=f"[::1]:{http}",
        LISTEN_HTTPS=f"127.0.0.1:{https}",
        LISTEN6_HTTPS=f"[::1]:{https}",
        CERT_DIR=str(cert),
        ACME_ROOT=str(acme),
    )
    return start(
        prefix,
        conf,
        {"http": http, "https": https},
        listens=[("127.0.0.1", http), ("127.0.0.1", https), ("::1", https)],
        extra=HOST_HTTP_EXTRAS,
        shipped_main=True,
    )


def frontend_config(prefix: Path, port: int, gateway_port: int, site_root: Path) -> str:
    """compose/frontend/nginx.conf with the container's paths and names moved to the test's."""
    text = FRONTEND_CONF.read_text()
    rewrites = [
        ("pid /tmp/nginx.pid;", ""),
        ("worker_processes auto;", ""),
        ("error_log /dev/stderr warn;", ""),
        ("include /etc/nginx/mime.types;", ""),
        ("default_type application/octet-stream;", ""),
        ("include /tmp/resolver.conf;", ""),  # the gateway is an address here, nothing to resolve
        ("client_body_temp_path /tmp/client_body;", ""),
        ("proxy_temp_path /tmp/proxy;", ""),
        ("fastcgi_temp_path /tmp/fastcgi;", ""),
        ("uwsgi_temp_path /tmp/uwsgi;", ""),
        ("scgi_temp_path /tmp/scgi;", ""),
        ("access_log /dev/stdout main;", f"access_log {prefix}/frontend-access.log main;"),
        ("listen 8080 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        ("root /usr/share/nginx/html;", f"root {site_root};"),
        ("set $gateway http://gateway:8000;", f"set $gateway http://127.0.0.1:{gateway_port};"),
    ]
    for old, new in rewrites:
        assert text.count(old) == 1, f"{FRONTEND_CONF} no longer has {old!r}"
        text = text.replace(old, new)
    # The http block's content goes into the test's main config (one http block per nginx).
    body = text[text.index("http {") + len("http {") : text.rindex("}")]
    events_start = text.index("events {")
    assert "worker_connections" in text[events_start : text.index("}", events_start)]
    return body


def start_frontend(prefix: Path, *, gateway_port: int, site_root: Path) -> Nginx:
    port = free_port()
    conf = frontend_config(prefix, port, gateway_port, site_root)
    return start(prefix, conf, {"http": port}, listens=[("127.0.0.1", port)])
