"""Shared harness of the interop tests: homd and hom against peers nobody here wrote.

Everything listens on 127.0.0.1 only, on ports chosen at run time. Every peer (brokers,
homd, the third-party clients) is a child process that the test starts, owns and stops by
its PID, never by name; each is started under `setpriv --pdeathsig KILL`, so none outlives
a test process that is killed (a ctest timeout). Waiting is always "poll a condition until
a deadline": a port that accepts, a line in a log, a message on a topic; nothing here
sleeps as a way to synchronise.

The binaries come from the environment that CMake sets for each test: HOMD_BIN, HOM_BIN,
HOM_DEMO_API_BIN, MOSQUITTO_BIN, OPENSSL_BIN, NODE_BIN (and the Mosquitto clients, found on
PATH when not set). HOM_TEST_KEEP=1 keeps the temporary directories to debug a failure.
"""

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HERE = os.path.dirname(os.path.abspath(__file__))

# Generous on purpose: a loaded 2-core machine runs brokers, daemons and tests at once.
DEFAULT_WAIT = 20.0
POLL = 0.02


def binary(var, name=None):
    """The path of a peer binary: from the environment CMake sets, else from PATH."""
    value = os.environ.get(var)
    if value:
        return value
    found = shutil.which(name or var.lower()) or (
        shutil.which(name, path="/usr/sbin:/sbin") if name else None)
    if not found:
        raise unittest.SkipTest(f"{var} is not set and {name} is not on PATH")
    return found


def homd_bin():
    return binary("HOMD_BIN", "homd")


def hom_bin():
    return binary("HOM_BIN", "hom")


def log(*args):
    """A line on stderr that ctest shows with --output-on-failure or -V."""
    print(*args, file=sys.stderr, flush=True)


def wait_until(predicate, timeout=DEFAULT_WAIT, what="a condition"):
    """Polls `predicate` until it returns a true value, which is returned; fails the test
    with `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(POLL)


_handed_out = set()  # ports free_port() returned in this process: never returned twice


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, closed),
    and one this process has not been given before (two peers started together, neither yet
    listening, would otherwise be handed the same port). Another process may still take it
    in between: a peer that then fails with 'address in use' is restarted on another one."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no free loopback port found in 100 tries")


def free_ports(n):
    return sorted(free_port() for _ in range(n))  # distinct: free_port() never repeats one


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class TempDir:
    """A directory made with mkdtemp, removed by cleanup() unless HOM_TEST_KEEP is set."""

    def __init__(self, prefix="hom-interop-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def file(self, name):
        return os.path.join(self.path, name)

    def write(self, name, text):
        path = self.file(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def cleanup(self):
        if os.environ.get("HOM_TEST_KEEP"):
            log(f"kept {self.path}")
            return
        shutil.rmtree(self.path, ignore_errors=True)


def base_env(**extra):
    """A small, explicit environment for a child: no proxy variables, no MQTT_* of the
    caller's shell."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "GNUTLS_NO_IMPLICIT_INIT": "1",
    }
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


class Process:
    """A child process with its stdout and stderr in a log file. Signals go to its PID."""

    def __init__(self, argv, env, log_path, cwd=None, stdin=subprocess.DEVNULL):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.started = time.monotonic()
        # setpriv execs the command: the PID is the command's, and PDEATHSIG (kept across
        # exec) kills it if this test process dies.
        self.popen = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--"] + self.argv,
            env=env, cwd=cwd, stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def wait_exit(self, timeout=DEFAULT_WAIT):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, grace=15.0):
        """SIGTERM, up to `grace` seconds, then SIGKILL. Returns the exit status."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            if self.wait_exit(grace) is None:
                self.kill9()
        self.popen.wait()
        self._log.close()
        if self.popen.stdin:
            self.popen.stdin.close()
        return self.popen.returncode

    def kill9(self):
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle, count=1, timeout=DEFAULT_WAIT, start=0):
        """Polls the log until `needle` occurs `count` times after offset `start`; fails
        early, with the log, when the process exits without it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[start:]
            if text.count(needle) >= count:
                return text
            if not self.running():
                raise AssertionError(
                    f"{os.path.basename(self.argv[0])} exited ({self.popen.returncode}) "
                    f"before logging {needle!r}:\n{tail(self.log())}")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.1f} s waiting for {needle!r} in the log of "
                    f"{os.path.basename(self.argv[0])}:\n{tail(self.log())}")
            time.sleep(POLL)


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------
# Certificates (openssl CLI)


def openssl(*args, cwd):
    subprocess.run([binary("OPENSSL_BIN", "openssl"), *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def make_ca(directory, name):
    """A self-signed CA: returns (cert path, key path)."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", key, "-out", cert,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return cert, key


def make_server_cert(directory, name, ca, san):
    """A server certificate signed by `ca` (cert, key) with subjectAltName `san`, e.g.
    "IP:127.0.0.1,DNS:localhost". Returns (cert path, key path)."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w", encoding="utf-8") as f:
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr, cwd=directory)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "2", "-out", cert, "-extfile", ext, cwd=directory)
    return cert, key


# ---------------------------------------------------------------------------------------
# Brokers


class Mosquitto:
    """A private Mosquitto: its own config and log in a TempDir; a plain MQTT listener and,
    on request, TLS (`tls=(ca, cert, key)`), WebSocket (`ws=True`) and secure WebSocket
    (`wss=True`, needs tls) listeners, all on 127.0.0.1."""

    def __init__(self, tls=None, ws=False, wss=False, persistence=False, start=True,
                 extra=()):
        self.dir = TempDir("hom-mosquitto-")
        self.tls, self.ws, self.wss, self.persistence = tls, ws, wss, persistence
        self.extra = list(extra)  # configuration lines after the listeners (a bridge)
        self.process = None
        self.starts = 0
        self._pick_ports()
        if start:
            self.start()

    def _pick_ports(self):
        ports = free_ports(4)
        self.port = ports[0]
        self.tls_port = ports[1] if self.tls else None
        self.ws_port = ports[2] if self.ws else None
        self.wss_port = ports[3] if self.wss else None

    def ports(self):
        return [p for p in (self.port, self.tls_port, self.ws_port, self.wss_port) if p]

    def _config(self):
        lines = [
            "# Written by the interop test harness.",
            "per_listener_settings false",
            "allow_anonymous true",
            # Stay root: the 0700 temporary directory holds the certificates and the
            # persistence file.
            "user root",
            "max_inflight_messages 0",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir.path}/",
                      "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        lines += [f"listener {self.port} 127.0.0.1"]
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.ws:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        if self.wss:
            ca, cert, key = self.tls
            lines += [f"listener {self.wss_port} 127.0.0.1", "protocol websockets",
                      f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        lines += self.extra
        return "\n".join(lines) + "\n"

    def _try_start(self):
        self.dir.write("mosquitto.conf", self._config())
        self.starts += 1
        self.process = Process(
            [binary("MOSQUITTO_BIN", "mosquitto"), "-c", self.dir.file("mosquitto.conf")],
            base_env(), self.dir.file(f"mosquitto-{self.starts}.log"))
        deadline = time.monotonic() + DEFAULT_WAIT
        while time.monotonic() < deadline:
            if not self.process.running():
                return False
            if all(port_accepts(p) for p in self.ports()):
                return True
            time.sleep(POLL)
        return False

    def start(self):
        """Starts the broker and waits until every listener accepts. The ports change only
        before the first successful start (a restart must come back where the clients are)."""
        fixed = self.starts > 0
        for _ in range(1 if fixed else 5):
            if self._try_start():
                return
            text = self.process.log()
            self.process.kill9()
            self.process = None
            if not fixed:
                self.starts = 0
                self._pick_ports()
        raise AssertionError(f"mosquitto did not start:\n{tail(text)}")

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None

    def log(self):
        out = []
        for i in range(1, self.starts + 1):
            path = self.dir.file(f"mosquitto-{i}.log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def cleanup(self):
        self.stop()
        self.dir.cleanup()


# ---------------------------------------------------------------------------------------
# The local HTTP API that homd calls


def blob(n):
    """n bytes that repeat no block: SHA-256 of the block numbers, concatenated."""
    return b"".join(hashlib.sha256(str(i).encode()).digest()
                    for i in range((n + 31) // 32))[:n]


class Api:
    """A local device API: Python's http.server on its own threads, bound to 127.0.0.1.

    Routes:
      GET  /gps/latitude   {"latitude": 48.8584}
      POST /food/dessert   {"name": N} -> 201 "dessert N created" (text/plain)
      ANY  /echo/...       JSON {"method", "path", "query", "headers" (lower-case), "body"}
      ANY  /slow?ms=N      waits N ms (or until release()), then {"slept_ms": N}
      GET  /blob?bytes=N   blob(N), application/octet-stream
    Thread-safe: `seen` lists (method, path) of every request, in arrival order.
    """

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self):
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with api.lock:
                    api.seen.append((self.command, url.path))
                query = urllib.parse.parse_qs(url.query)
                if url.path == "/gps/latitude" and self.command == "GET":
                    return self._reply(200, {"latitude": 48.8584})
                if url.path == "/food/dessert" and self.command == "POST":
                    name = json.loads(body or b"{}").get("name", "?")
                    return self._reply(201, f"dessert {name} created", "text/plain")
                if url.path.startswith("/echo"):
                    return self._reply(200, {"method": self.command, "path": url.path,
                                             "query": url.query,
                                             "headers": {k.lower(): v
                                                         for k, v in self.headers.items()},
                                             "body": body.decode("utf-8", "replace")})
                if url.path == "/blob" and self.command == "GET":
                    return self._reply(200, blob(int(query.get("bytes", ["0"])[0])),
                                       "application/octet-stream")
                if url.path == "/slow":
                    ms = int(query.get("ms", ["60000"])[0])
                    api.released.wait(ms / 1000.0)
                    return self._reply(200, {"slept_ms": ms})
                return self._reply(404, {"error": "no such route"})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, method, path):
        with self.lock:
            return sum(1 for m, p in self.seen if m == method and p == path)

    def release(self):
        self.released.set()

    def cleanup(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class DemoApi:
    """build/hom-demo-api, the README's demo device API, on a free loopback port."""

    def __init__(self, directory, port=None):
        for _ in range(1 if port else 5):
            self.port = port or free_port()
            self.url = f"http://127.0.0.1:{self.port}/"
            self.process = Process([binary("HOM_DEMO_API_BIN", "hom-demo-api"),
                                    str(self.port)],
                                   base_env(), os.path.join(directory, f"demo-{self.port}.log"))
            try:
                wait_until(lambda: port_accepts(self.port) or not self.process.running(),
                           what="hom-demo-api to listen")
            except AssertionError:
                pass
            if self.process.running() and port_accepts(self.port):
                return
            self.process.kill9()
        raise AssertionError(f"hom-demo-api did not start:\n{tail(self.process.log())}")

    def cleanup(self):
        self.process.stop()


# ---------------------------------------------------------------------------------------
# homd and hom


class Homd:
    """The real homd with an explicit environment, logging to a file."""

    def __init__(self, directory, port, api_url, device, host="127.0.0.1", name="homd",
                 **env):
        self.device = device
        self.env = base_env(MQTT_HOST=host, MQTT_PORT=port, MQTT_TLS=env.pop("MQTT_TLS", "off"),
                            MQTT_TOPIC_START="v1", MQTT_TOPIC_ID=device,
                            HTTP_BASE_URL=api_url, LOG_LEVEL=env.pop("LOG_LEVEL", "debug"),
                            **env)
        self.process = Process([homd_bin()], self.env,
                               os.path.join(directory, f"{name}-{device}-{time.time_ns()}.log"))

    def wait_connected(self, count=1, timeout=DEFAULT_WAIT):
        return self.process.wait_for_log("connected to ", count=count, timeout=timeout)

    def log(self):
        return self.process.log()

    def stop(self, grace=20.0):
        return self.process.stop(grace)


def hom_env(port, host="127.0.0.1", **env):
    return base_env(MQTT_HOST=host, MQTT_PORT=port, MQTT_TLS=env.pop("MQTT_TLS", "off"),
                    MQTT_TOPIC_START="v1", **env)


class HomResult:
    def __init__(self, returncode, stdout, stderr, seconds):
        self.returncode, self.stdout, self.stderr, self.seconds = (
            returncode, stdout, stderr, seconds)

    def __repr__(self):
        return (f"hom exit {self.returncode} after {self.seconds:.3f} s\n"
                f"stdout: {self.stdout}\nstderr: {self.stderr}")


def run_hom(args, env, timeout=60.0):
    """Runs hom to completion (bounded by `timeout`) and times it."""
    started = time.monotonic()
    proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", hom_bin(), *args],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"hom {' '.join(args)} did not exit within {timeout} s; "
                             f"stderr: {err.decode(errors='replace')}")
    return HomResult(proc.returncode, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"), time.monotonic() - started)


# ---------------------------------------------------------------------------------------
# A third-party MQTT client: Eclipse Paho for Python (Debian's python3-paho-mqtt)


class Message:
    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = msg.payload
        self.qos = msg.qos
        self.retain = msg.retain
        props = getattr(msg, "properties", None)
        self.correlation_data = getattr(props, "CorrelationData", None) if props else None
        self.response_topic = getattr(props, "ResponseTopic", None) if props else None
        self.content_type = getattr(props, "ContentType", None) if props else None
        self.expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        self.user_properties = list(getattr(props, "UserProperty", None) or []) if props else []
        self.received = time.monotonic()

    def json(self):
        return json.loads(self.payload)


class Client:
    """A Paho Python client on its own network thread; every wait has a deadline. Paho's
    loop reconnects when the connection drops; a session the broker did not keep gets its
    subscriptions again, as a long-lived requester would."""

    def __init__(self, port, version=5, host="127.0.0.1", transport="tcp", ca_file=None,
                 client_id=None, clean=True, connect=True):
        self.version = version
        proto = paho.MQTTv5 if version == 5 else paho.MQTTv311
        client_id = client_id or f"interop-{os.getpid()}-{time.time_ns() % 10**9}"
        kwargs = {"client_id": client_id, "protocol": proto, "transport": transport}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(**kwargs)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.received = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.connect_rc = None
        self.subacks = {}
        self.granted = {}
        self.subscriptions = {}  # topic -> qos, renewed on a reconnect without a session
        self.connects = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.host, self.port, self.clean = host, port, clean
        if connect:
            self.connect()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.connect_rc = rc
        with self.lock:
            self.connects += 1
            renew = list(self.subscriptions.items()) if not flags.get("session present") else []
        for topic, qos in renew:
            self.client.subscribe(topic, qos)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        m = Message(msg)
        with self.lock:
            self.received.append(m)

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self.lock:
            self.granted[mid] = [g if isinstance(g, int) else g.value for g in granted]
            event = self.subacks.setdefault(mid, threading.Event())
        event.set()

    def connect(self, timeout=DEFAULT_WAIT):
        if self.version == 5:
            self.client.connect(self.host, self.port, keepalive=30, clean_start=self.clean)
        else:
            self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise AssertionError(f"MQTT client: no CONNACK from 127.0.0.1:{self.port}")
        rc = self.connect_rc
        if (rc if isinstance(rc, int) else rc.value) != 0:
            raise AssertionError(f"MQTT client: CONNECT refused: {rc}")

    def subscribe(self, topic, qos=2, timeout=DEFAULT_WAIT):
        """Subscribes and waits for the SUBACK; returns the granted QoS list."""
        with self.lock:
            self.subscriptions[topic] = qos
            rc, mid = self.client.subscribe(topic, qos)
            event = self.subacks.setdefault(mid, threading.Event())
        if rc != 0 or not event.wait(timeout):
            raise AssertionError(f"MQTT client: no SUBACK for {topic}")
        with self.lock:
            return self.granted[mid]

    def publish(self, topic, payload, qos=1, response_topic=None, correlation_data=None,
                expiry=None, timeout=DEFAULT_WAIT):
        props = None
        if response_topic or correlation_data or expiry:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if expiry is not None:
                props.MessageExpiryInterval = expiry
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        if qos > 0:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise AssertionError(f"MQTT client: publish on {topic} not acknowledged")
        return info

    def wait_message(self, predicate=lambda m: True, timeout=DEFAULT_WAIT, what="a message"):
        """The first received message that satisfies `predicate` (received at any time
        since the client started)."""
        def find():
            with self.lock:
                for m in self.received:
                    if predicate(m):
                        return m
            return None
        return wait_until(find, timeout, what)

    def all(self, predicate=lambda m: True):
        with self.lock:
            return [m for m in self.received if predicate(m)]

    def close(self):
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - closing a client that may be half-dead
            pass
        self.client.loop_stop()


def reply_to(req_id):
    """A predicate on a reply document's req_id."""
    def pred(m):
        try:
            doc = m.json()
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("req_id") == req_id
    return pred


class InteropTest(unittest.TestCase):
    """Base class: a temporary directory, and cleanups for everything a test starts."""

    def setUp(self):
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)

    def mosquitto(self, **kwargs):
        broker = Mosquitto(**kwargs)
        self.addCleanup(broker.cleanup)
        return broker

    def api(self):
        api = Api()
        self.addCleanup(api.cleanup)
        return api

    def homd(self, port, api_url, device, **env):
        homd = Homd(self.tmp.path, port, api_url, device, **env)
        self.addCleanup(homd.stop)
        return homd

    def client(self, port, **kwargs):
        c = Client(port, **kwargs)
        self.addCleanup(c.close)
        return c

    def process(self, argv, env, name):
        p = Process(argv, env, self.tmp.file(f"{name}-{time.time_ns()}.log"))
        self.addCleanup(p.stop)
        return p


# ---------------------------------------------------------------------------------------
# Node.js peers (MQTT.js, aedes), installed by `npm ci --prefix tests/interop`


def node_bin():
    if not os.path.isfile(os.path.join(HERE, "node_modules", ".package-lock.json")):
        raise AssertionError("tests/interop/node_modules is missing: run scripts/deps.sh "
                             "(npm ci --prefix tests/interop)")
    return binary("NODE_BIN", "node")


def node_script(name):
    return os.path.join(HERE, name)


class Aedes:
    """The aedes broker (MQTT 3.1.1 only), aedes_broker.js, on a free loopback port."""

    def __init__(self, directory, port=None):
        for _ in range(1 if port else 5):
            self.port = port or free_port()
            self.process = Process([node_bin(), node_script("aedes_broker.js"), str(self.port)],
                                   base_env(), os.path.join(directory, f"aedes-{self.port}.log"))
            try:
                self.process.wait_for_log("listening on", timeout=30)
            except AssertionError:
                self.process.kill9()
                continue
            wait_until(lambda: port_accepts(self.port), what="aedes to accept")
            return
        raise AssertionError(f"aedes did not start:\n{tail(self.process.log())}")

    def cleanup(self):
        self.process.stop()


def start_epmd(port, env, directory):
    """A private epmd in the foreground on 127.0.0.1:`port`, stopped by PID."""
    epmd = Process([binary("EPMD_BIN", "epmd"), "-port", str(port), "-address", "127.0.0.1"],
                   env, directory.file("epmd.log"), cwd=directory.path)
    wait_until(lambda: port_accepts(port) or not epmd.running(), what="epmd to listen")
    if not epmd.running():
        raise AssertionError(f"epmd did not start:\n{epmd.log()}")
    return epmd


def rabbitmq_server_bin():
    """Debian's real start script: /usr/sbin/rabbitmq-server is a wrapper that switches to
    the rabbitmq user (who cannot read our temporary directory) and logs to /var/log."""
    if os.environ.get("RABBITMQ_SERVER_BIN"):
        return os.environ["RABBITMQ_SERVER_BIN"]
    path = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.path.exists(path):
        raise unittest.SkipTest("RabbitMQ is not installed (scripts/deps.sh installs it)")
    return path


def port_taken(log):
    """Whether an Erlang node's log says it stopped because a port it was given was in use."""
    return "already_used" in log or "eaddrinuse" in log


class RabbitMq:
    """A private RabbitMQ node with the MQTT plugin, owned by the test: its own epmd (a
    foreground child on its own port, not -daemon) and the node itself, with its own node
    name, ports, data, logs, config and Erlang cookie (HOME) in a TempDir. Both are stopped
    by PID; no system service and no shared epmd is used or left behind.

    RABBITMQ_ALLOW_INPUT makes rabbitmq-server exec the Erlang VM (otherwise a shell stays
    in between, and the VM would outlive a killed test): the VM then runs under our PID,
    with a pipe that nobody writes as its console."""

    START_WAIT = 180.0  # a cold node on a loaded 2-core machine

    def __init__(self, epmd_port=None, home=None, wait=True):
        """A node with its own epmd and Erlang cookie; or, for a cluster (RabbitMqCluster),
        one that uses the cluster's epmd (`epmd_port`) and cookie (in `home`). With
        wait=False the caller calls wait_started()."""
        self.dir = TempDir("hom-rabbitmq-")
        self.epmd = self.node = None
        self.home = home
        self.epmd_port = epmd_port or free_port()
        self._configure()
        if not epmd_port:
            self.epmd = start_epmd(self.epmd_port, self.env, self.dir)
        self._launch()
        if wait:
            self.wait_started()

    START_ATTEMPTS = 3  # another process may take a port between free_port() and the node

    def _configure(self):
        """Writes the node's configuration, with ports of its own."""
        self.amqp_port, self.dist_port, self.port = free_ports(3)
        self.name = f"hom-interop-{self.port}@localhost"
        os.makedirs(self.dir.file("mnesia"), exist_ok=True)
        os.makedirs(self.dir.file("log"), exist_ok=True)
        self.dir.write("enabled_plugins", "[rabbitmq_mqtt].\n")
        self.dir.write("rabbitmq.conf", "\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}",
            "mqtt.allow_anonymous = true",
            "mqtt.default_user = guest",
            "mqtt.default_pass = guest",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            "log.console = true",
            "log.console.level = info",
            "log.file = false",
        ]) + "\n")
        self.dir.write("rabbitmq-env.conf", "# none: everything comes from the environment\n")
        self.env = base_env(
            HOME=self.home or self.dir.path,
            ERL_EPMD_PORT=self.epmd_port,
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=self.amqp_port,
            RABBITMQ_DIST_PORT=self.dist_port,
            RABBITMQ_MNESIA_BASE=self.dir.file("mnesia"),
            RABBITMQ_LOG_BASE=self.dir.file("log"),
            RABBITMQ_CONFIG_FILE=self.dir.file("rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=self.dir.file("advanced.config"),
            RABBITMQ_CONF_ENV_FILE=self.dir.file("rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=self.dir.file("enabled_plugins"),
            RABBITMQ_PID_FILE=self.dir.file("rabbitmq.pid"),
            RABBITMQ_ALLOW_INPUT="true",
            ERL_CRASH_DUMP=self.dir.file("erl_crash.dump"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )

    def _launch(self):
        self.node = Process([rabbitmq_server_bin()], self.env,
                            self.dir.file(f"rabbitmq-{self.port}.log"), cwd=self.dir.path,
                            stdin=subprocess.PIPE)

    def wait_started(self):
        """Waits for the MQTT listener. A node that stopped because one of its ports was
        taken meanwhile is started again on others (START_ATTEMPTS in all)."""
        deadline = time.monotonic() + self.START_WAIT
        attempt = 1
        while not port_accepts(self.port):
            running = self.node.running()
            if not running and attempt < self.START_ATTEMPTS and port_taken(self.node.log()):
                attempt += 1
                self._configure()
                self._launch()
                continue
            if not running or time.monotonic() >= deadline:
                text = self.node.log()
                self.cleanup()
                raise AssertionError(f"RabbitMQ did not open its MQTT listener:\n{tail(text)}")
            time.sleep(0.1)
        self.started_in = time.monotonic() - self.node.started

    def ctl(self, *args, timeout=120.0):
        """rabbitmqctl against this node; raises with its output when it fails."""
        ctl = os.path.join(os.path.dirname(rabbitmq_server_bin()), "rabbitmqctl")
        proc = subprocess.run([ctl, "-n", self.name, *args], env=self.env, cwd=self.dir.path,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: exit {proc.returncode}\n"
                                 f"{proc.stdout.decode(errors='replace')}"
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace")

    def log(self):
        return self.node.log() if self.node else ""

    def cleanup(self):
        if self.node:
            self.node.stop(grace=60.0)
            self.node = None
        if self.epmd:
            self.epmd.stop()
            self.epmd = None
        self.dir.cleanup()


class RabbitMqCluster:
    """Two (or more) private RabbitMQ nodes on loopback joined into one cluster: one epmd
    and one Erlang cookie for all (a shared HOME), each node with its own name, ports, data
    and logs; the others join the first with rabbitmqctl join_cluster."""

    COOKIE = "HOMINTEROPCLUSTERCOOKIE"

    def __init__(self, count=2):
        self.dir = TempDir("hom-rabbitmq-cluster-")
        self.nodes, self.epmd = [], None
        try:
            cookie = self.dir.file(".erlang.cookie")
            with open(cookie, "w") as f:
                f.write(self.COOKIE)
            os.chmod(cookie, 0o400)
            epmd_port = free_port()
            self.epmd = start_epmd(epmd_port, base_env(HOME=self.dir.path), self.dir)
            started = time.monotonic()
            # Started together, waited for together: a cold node takes a while.
            self.nodes = [RabbitMq(epmd_port=epmd_port, home=self.dir.path, wait=False)
                          for _ in range(count)]
            for node in self.nodes:
                node.wait_started()
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", self.nodes[0].name)
                node.ctl("start_app")
                wait_until(lambda: port_accepts(node.port), timeout=RabbitMq.START_WAIT,
                           what=f"{node.name} to open its MQTT listener again")
            self.started_in = time.monotonic() - started
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self):
        for node in reversed(self.nodes):
            node.cleanup()
        self.nodes = []
        if self.epmd:
            self.epmd.stop()
            self.epmd = None
        self.dir.cleanup()
