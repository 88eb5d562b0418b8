"""End-to-end security (SPEC §8) against the reference tools and a hostile broker.

homd runs with HOM_E2E=require on a private Mosquitto and calls a Python HTTP server that
counts every call. Keys are made by Debian's ssh-keygen. The interop proofs build a request
with a shell script that uses only ssh-keygen -Y sign, age -R and mosquitto_pub (no project
code), and check homd's reply with age -d and ssh-keygen -Y verify. The hostile-broker tests
use a Paho client with full access (a wildcard subscriber that also publishes): it captures
sealed requests and replays, re-routes, corrupts, strips, forges and swaps them; each is
refused, the API is never called twice, and hom exits non-zero with the reason.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import unittest
import urllib.error
import urllib.request

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import harness
from harness import InteropTest

DEVICE = "itsme"
OTHER = "other"
SEALED_REQ = f"v1/req/{DEVICE}/@sealed"
SEALED_RES = f"v1/res/{DEVICE}/@sealed"
# A reply body far over one message (homd's chunks are at most 256 KiB by default).
BLOB_BYTES = 3_000_000
BLOB = harness.blob(BLOB_BYTES)
AGE_CHUNK = 64 * 1024 + 16  # an age STREAM chunk with its tag

# Builds and publishes a sealed request with the reference tools only (README "Trusting no
# broker"). Arguments: identity, device.pub, verb, path, payload, topic, port, sign (1/0),
# output file of the sealed bytes.
REQUEST_SCRIPT = r"""#!/bin/bash
set -euo pipefail
identity=$1 device_pub=$2 verb=$3 path=$4 payload=$5 topic=$6 port=$7 sign=$8 out=$9
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
nsf() { printf '%s:' "$(wc -c < "$1" | tr -d ' ')"; cat "$1"; printf ','; }
ns() { printf '%s' "$1" > field; nsf field; }
{ ns hom-request@v1; ns itsme; ns v1; ns "$verb"; ns "$path"; ns ''; ns ''
  ns "$(date +%s)"; ns "$(openssl rand -hex 16)"; ns "$payload"; } > req
if [ "$sign" = 1 ]; then
  ssh-keygen -q -Y sign -f "$identity" -n hom-request@v1 req
  sed '1d;$d' req.sig | tr -d '\n' | base64 -d > req.sigbin
  { nsf req; nsf req.sigbin; } | age -R "$device_pub" -o "$out"
else
  { nsf req; } | age -R "$device_pub" -o "$out"
fi
mosquitto_pub -h 127.0.0.1 -p "$port" -V 5 -q 2 -t "$topic" -f "$out"
"""


def netstrings(data):
    """Splits N(a) N(b) ... into [a, b, ...]."""
    out, i = [], 0
    while i < len(data):
        colon = data.index(b":", i)
        n = int(data[i:colon])
        out.append(data[colon + 1:colon + 1 + n])
        if data[colon + 1 + n:colon + 2 + n] != b",":
            raise ValueError("not a netstring")
        i = colon + 2 + n
    return out


def chunk_of(m):
    """(stream id, seq) of a streamed reply's chunk in the MQTT 5 form, else None."""
    value = dict(m.user_properties).get("hom-chunk")
    if value is None:
        return None
    sid, seq = value.split(" ")
    return sid, int(seq)


def age_header_and_nonce(data):
    """The start of an age file that a sealed stream's head names: the header up to and
    including its MAC line, and the 16-byte nonce."""
    end = data.index(b"\n", data.index(b"\n--- ") + 1) + 1
    return data[:end + 16]


class Relay:
    """A hostile broker in the middle: requesters on one broker (front), devices on another
    (back); it forwards requests and acknowledgements to the devices and their replies and
    presence back, with every MQTT 5 property, and alters streamed replies as `mode` says:
      None   forwards them faithfully;
      "cut"  ends each stream after chunk CUT_SEQ with a forged last chunk whose length and
             SHA-256 match what it forwarded, cut at an age chunk boundary (what any broker
             can compute: the chunks' metadata is in clear);
      "flip" flips one bit of chunk 2's ciphertext."""

    CUT_SEQ = 3

    def __init__(self, test, front_port, back_port):
        self.mode = None
        self.streams = {}  # stream id -> {"next", "length", "sha", "header", "ended"}
        self.front = test.client(front_port)
        self.back = test.client(back_port)
        self.back.client.on_message = lambda c, u, m: self.on_device_message(m)
        self.front.client.on_message = lambda c, u, m: self.forward(self.back, m)
        self.back.subscribe("v1/res/#")
        self.back.subscribe("v1/status/#")
        self.front.subscribe("v1/req/#")

    @staticmethod
    def forward(to, msg, payload=None, user=None):
        src = getattr(msg, "properties", None)
        props = Properties(PacketTypes.PUBLISH)
        for name in ("ResponseTopic", "CorrelationData", "ContentType", "MessageExpiryInterval"):
            if src is not None and hasattr(src, name):
                setattr(props, name, getattr(src, name))
        if user is None:
            user = list(getattr(src, "UserProperty", None) or []) if src is not None else []
        for pair in user:
            props.UserProperty = pair
        to.client.publish(msg.topic, msg.payload if payload is None else payload, qos=msg.qos,
                          retain=msg.retain, properties=props)

    def on_device_message(self, msg):
        src = getattr(msg, "properties", None)
        user = list(getattr(src, "UserProperty", None) or []) if src is not None else []
        chunk = dict(user).get("hom-chunk")
        if self.mode is None or chunk is None:
            return self.forward(self.front, msg)
        sid, seq = chunk.split(" ")
        seq = int(seq)
        st = self.streams.setdefault(sid, {"next": 0, "length": 0, "sha": hashlib.sha256(),
                                           "header": None, "ended": False})
        if st["ended"] or seq != st["next"]:
            return None  # after the forged end, or a duplicate
        st["next"] += 1
        data = msg.payload
        if seq == 0:
            st["header"] = len(age_header_and_nonce(data))
        if self.mode == "flip" and seq == 2:
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        if self.mode == "cut" and seq == self.CUT_SEQ:
            total = st["length"] + len(data)
            keep = st["header"] + (total - st["header"]) // AGE_CHUNK * AGE_CHUNK
            data = data[:keep - st["length"]]
            st["sha"].update(data)
            st["length"] += len(data)
            st["ended"] = True
            end = f"{st['length']} {st['sha'].hexdigest()}"
            return self.forward(self.front, msg, data, [("hom-chunk", chunk), ("hom-end", end)])
        st["sha"].update(data)
        st["length"] += len(data)
        return self.forward(self.front, msg, data)


def tool(name):
    path = shutil.which(name)
    if not path:
        raise unittest.SkipTest(f"{name} is not installed (scripts/deps.sh)")
    return path


class E2eTest(InteropTest):
    def setUp(self):
        super().setUp()
        for name in ("ssh-keygen", "age", "openssl"):
            tool(name)
        harness.binary("MOSQUITTO_PUB_BIN", "mosquitto_pub")
        self.keys = {}
        for name in ("device", "other-device", "user", "user2", "limited", "stranger"):
            self.keys[name] = self.keygen(name)
        self.tmp.write("authorized_keys", "".join([
            self.pub("user") + " user\n",
            self.pub("user2") + " user2\n",
            'hom-allow="GET /gps/**" ' + self.pub("limited") + " limited\n",
        ]))
        self.tmp.write("known_devices",
                       f"{DEVICE} {self.pub('device')}\n{OTHER} {self.pub('other-device')}\n"
                       f"acc {self.pub('device')}\n")
        self.tmp.write("script.sh", REQUEST_SCRIPT)
        self.state = self.tmp.file("state")
        os.mkdir(self.state)
        self.broker = self.mosquitto()
        self.api_server = self.api()
        self.daemon = self.start_homd()
        # The hostile client: full access, sees every message.
        self.spy = self.client(self.broker.port)
        self.spy.subscribe("#")

    # ---- keys, processes, the reference tools ---------------------------------------

    def keygen(self, name):
        path = self.tmp.file(name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path],
                       check=True, stdin=subprocess.DEVNULL)
        return path

    def pub(self, name):
        with open(self.keys[name] + ".pub", encoding="utf-8") as f:
            return " ".join(f.read().split()[:2])

    def start_homd(self, device=DEVICE, key="device", state=None, mode="require"):
        homd = self.homd(self.broker.port, self.api_server.url, device, HOM_E2E=mode,
                         HOM_DEVICE_KEY_FILE=self.keys[key],
                         HOM_AUTHORIZED_KEYS_FILE=self.tmp.file("authorized_keys"),
                         HOM_STATE_DIR=state or self.state)
        homd.wait_connected()
        homd.process.wait_for_log("subscribed to ")
        return homd

    def hom(self, *args, identity="user", timeout=30.0, port=None, **env_extra):
        env = harness.hom_env(port or self.broker.port, **env_extra)
        extra = []
        if identity:
            extra = ["--identity", self.keys[identity],
                     "--known-devices", self.tmp.file("known_devices")]
        return harness.run_hom([*extra, "--timeout", "20s", *args], env, timeout=timeout)

    def hom_background(self, *args, identity="user", **env_extra):
        env = harness.hom_env(self.broker.port, **env_extra)
        return self.process(
            [harness.hom_bin(), "--identity", self.keys[identity], "--known-devices",
             self.tmp.file("known_devices"), "--timeout", "20s", *args], env, "hom")

    def script(self, identity, verb, path, payload, topic=SEALED_REQ, sign=True):
        out = self.tmp.file(f"sealed-{len(os.listdir(self.tmp.path))}")
        subprocess.run(["bash", self.tmp.file("script.sh"), self.keys[identity],
                        self.keys["device"] + ".pub", verb, path, payload, topic,
                        str(self.broker.port), "1" if sign else "0", out],
                       check=True, env=harness.base_env(), stdin=subprocess.DEVNULL,
                       timeout=60)
        with open(out, "rb") as f:
            return f.read()

    def open_reply(self, sealed, identity="user", expect_hash=None):
        """age -d, then ssh-keygen -Y verify of R' against the device's key: the reply
        document, checked with the reference tools only."""
        opened = subprocess.run(["age", "-d", "-i", self.keys[identity]], input=sealed,
                                capture_output=True, check=True).stdout
        signed, sig = netstrings(opened)
        self.tmp.write("signers", f"{DEVICE} {self.pub('device')}\n")
        armored = "-----BEGIN SSH SIGNATURE-----\n"
        b64 = base64.b64encode(sig).decode()
        armored += "\n".join(b64[i:i + 70] for i in range(0, len(b64), 70))
        armored += "\n-----END SSH SIGNATURE-----\n"
        self.tmp.write("reply.sig", armored)
        verify = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", self.tmp.file("signers"),
                                 "-I", DEVICE, "-n", "hom-reply@v1", "-s",
                                 self.tmp.file("reply.sig")],
                                input=signed, capture_output=True)
        self.assertEqual(verify.returncode, 0, verify.stderr)
        fields = netstrings(signed)
        self.assertEqual(fields[0], b"hom-reply@v1")
        self.assertEqual(fields[1], DEVICE.encode())
        if expect_hash is not None:
            self.assertEqual(fields[2].decode(), expect_hash)
        return json.loads(fields[3])

    def replies_on(self, topic):
        return self.spy.all(lambda m: m.topic == topic)

    def sealed_requests(self):
        """Sealed requests on the device's topic (not the acknowledgements of streams)."""
        return self.spy.all(lambda m: m.topic == SEALED_REQ and
                            m.payload.startswith(b"age-encryption.org/v1\n"))

    def wait_reply_count(self, topic, count, what):
        return harness.wait_until(lambda: len(self.replies_on(topic)) >= count, what=what)

    def stream_chunks(self):
        """The streamed chunks the broker carried, one per (stream, seq), in order."""
        chunks = {}
        for m in self.spy.all(lambda m: m.topic.startswith("v1/res/")):
            if chunk_of(m):
                chunks.setdefault(chunk_of(m), m)
        return [chunks[k] for k in sorted(chunks)]

    def assert_no_plaintext_of(self, body):
        """No 32-byte piece of `body` went through the broker."""
        seen = b"".join(m.payload for m in self.spy.all())
        for i in range(0, len(body) - 32, len(body) // 50):
            self.assertNotIn(body[i:i + 32], seen, f"bytes {i}.. of the body in clear")

    # ---- interop proofs ------------------------------------------------------------

    def test_request_by_reference_tools_is_executed_and_reply_verifies(self):
        # mosquitto_sub captures the reply (binary, -N: no newline added).
        sub = self.process(
            [harness.binary("MOSQUITTO_SUB_BIN", "mosquitto_sub"), "-V", "5", "-h", "127.0.0.1",
             "-p", str(self.broker.port), "-i", "e2e-sub", "-q", "2", "-t", SEALED_RES, "-C", "1",
             "-N", "-W", "60"], harness.base_env(), "mosquitto_sub")
        self.broker.process.wait_for_log("Sending SUBACK to e2e-sub\n")
        sealed = self.script("user", "GET", "gps/latitude", '{"req_id":"tools"}')
        self.assertIsNotNone(sub.wait_exit(30), "mosquitto_sub got no reply")
        with open(sub.log_path, "rb") as f:
            reply = f.read()
        doc = self.open_reply(reply, expect_hash=hashlib.sha256(sealed).hexdigest())
        self.assertEqual(doc["status"], 200, doc)
        self.assertEqual(doc["req_id"], "tools")
        self.assertEqual(doc["content"], {"latitude": 48.8584})
        self.assertEqual(self.api_server.count("GET", "/gps/latitude"), 1)

    def test_key_not_in_authorized_keys_is_refused_401(self):
        self.script("stranger", "GET", "gps/latitude", '{"req_id":"who"}')
        self.wait_reply_count(SEALED_RES, 1, "the refusal")
        doc = self.replies_on(SEALED_RES)[0].json()  # in clear: the signer is not known
        self.assertEqual(doc["status"], 401, doc)
        self.assertIn("not in HOM_AUTHORIZED_KEYS_FILE", doc["error"])
        self.assertEqual(self.api_server.count("GET", "/gps/latitude"), 0)

    def test_stripped_signature_is_refused_401(self):
        self.script("user", "GET", "gps/latitude", '{"req_id":"nosig"}', sign=False)
        self.wait_reply_count(SEALED_RES, 1, "the refusal")
        doc = self.replies_on(SEALED_RES)[0].json()
        self.assertEqual(doc["status"], 401, doc)
        self.assertEqual(self.api_server.count("GET", "/gps/latitude"), 0)

    def test_sealed_request_asking_for_a_stream_gets_one_sealed_reply(self):
        sealed = self.script("user", "GET", "gps/latitude",
                             '{"req_id":"st","stream":true}')
        self.wait_reply_count(SEALED_RES, 1, "the reply")
        doc = self.open_reply(self.replies_on(SEALED_RES)[0].payload,
                              expect_hash=hashlib.sha256(sealed).hexdigest())
        self.assertEqual(doc["status"], 200, doc)
        self.assertNotIn("stream", doc)
        # Nothing but that one reply left the device under v1/res/.
        res = self.spy.all(lambda m: m.topic.startswith("v1/res/"))
        self.assertEqual(len(res), 1, [m.topic for m in res])

    def test_homd_fails_fast_on_a_bad_key_file(self):
        self.tmp.write("bad_keys", "ssh-ed25519 AAAA-not-base64 user\n")
        env = dict(self.daemon.env, HOM_AUTHORIZED_KEYS_FILE=self.tmp.file("bad_keys"),
                   HOM_STATE_DIR=self.tmp.file("other-state"))
        os.mkdir(self.tmp.file("other-state"))
        bad = subprocess.run([harness.homd_bin()], env=env, capture_output=True, timeout=30)
        self.assertEqual(bad.returncode, 2, bad)
        self.assertIn(b"HOM_AUTHORIZED_KEYS_FILE", bad.stderr)
        check = subprocess.run([harness.homd_bin(), "--check-config"], env=self.daemon.env,
                               capture_output=True, timeout=30)
        self.assertEqual(check.returncode, 0, check)
        self.assertIn(b"HOM_E2E=require\n", check.stdout)
        # A second homd on the same state directory is refused: the nonces are one process's.
        second = subprocess.run([harness.homd_bin()], env=self.daemon.env, capture_output=True,
                                timeout=30)
        self.assertEqual(second.returncode, 2, second)
        self.assertIn(b"in use by another process", second.stderr)

    # ---- hom ------------------------------------------------------------------------

    def test_hom_identity_round_trip_and_plain_request_refused(self):
        r = self.hom("get", DEVICE, "gps/latitude")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(json.loads(r.stdout), {"latitude": 48.8584})
        plain = self.hom("get", DEVICE, "gps/latitude", identity=None)
        self.assertEqual(plain.returncode, 22, plain)
        self.assertIn("401", plain.stderr)
        self.assertIn("HOM_E2E=require", plain.stderr)
        self.assertEqual(self.api_server.count("GET", "/gps/latitude"), 1)

    def test_hom_over_mqtt_311_matches_sealed_replies_by_opening_them(self):
        first = self.hom("get", DEVICE, "gps/latitude", MQTT_VERSION="3.1.1")
        self.assertEqual(first.returncode, 0, first)
        self.assertEqual(json.loads(first.stdout), {"latitude": 48.8584})
        # Two requesters at once on the shared v1/res/itsme/@sealed topic: each takes its own.
        a = self.hom_background("get", DEVICE, "echo/a", MQTT_VERSION="3.1.1")
        b = self.hom_background("get", DEVICE, "echo/b", identity="user2", MQTT_VERSION="3.1.1")
        self.assertEqual(a.wait_exit(30), 0, a.log())
        self.assertEqual(b.wait_exit(30), 0, b.log())
        self.assertIn('"/echo/a"', a.log())
        self.assertIn('"/echo/b"', b.log())
        # A large reply streams in the JSON form of 3.1.1 on that shared topic, sealed too.
        out = self.tmp.file("blob311.out")
        r = self.hom("get", DEVICE, "blob", "-G", f"bytes={BLOB_BYTES}", "-o", out,
                     MQTT_VERSION="3.1.1")
        self.assertEqual(r.returncode, 0, r)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(BLOB).digest())
        chunks = self.spy.all(lambda m: m.topic == SEALED_RES and b'"chunk"' in m.payload)
        self.assertGreater(len(chunks), 4)
        self.assert_no_plaintext_of(BLOB)

    def test_accept_mode_serves_plain_and_sealed(self):
        os.mkdir(self.tmp.file("state-acc"))
        self.start_homd(device="acc", state=self.tmp.file("state-acc"), mode="accept")
        plain = self.hom("get", "acc", "gps/latitude", identity=None)
        self.assertEqual(plain.returncode, 0, plain)
        sealed = self.hom("get", "acc", "gps/latitude")
        self.assertEqual(sealed.returncode, 0, sealed)
        stranger = self.hom("get", "acc", "gps/latitude", identity="stranger")
        self.assertEqual(stranger.returncode, 60, stranger)  # a clear 401: unauthenticated
        self.assertIn("answered in clear, unauthenticated: 401", stranger.stderr)
        self.assertEqual(self.api_server.count("GET", "/gps/latitude"), 2)

    def test_hom_allow_403(self):
        ok = self.hom("get", DEVICE, "gps/latitude", identity="limited")
        self.assertEqual(ok.returncode, 0, ok)
        denied = self.hom("post", DEVICE, "echo/x", "-d", "{}", identity="limited")
        self.assertEqual(denied.returncode, 22, denied)
        self.assertIn("403", denied.stderr)
        self.assertEqual(self.api_server.count("POST", "/echo/x"), 0)

    def sealing_gateway(self, identity):
        """hom-gateway sealing every call with `identity`; returns call(path, data=None,
        headers=None, method=None) -> (status, body), status None when the connection broke
        (call.gateway is the process)."""
        port = harness.free_port()
        gateway = self.process(
            [harness.binary("HOM_GATEWAY_BIN", "hom-gateway")],
            harness.base_env(MQTT_HOST="127.0.0.1", MQTT_PORT=self.broker.port, MQTT_TLS="off",
                             MQTT_TOPIC_START="v1", GATEWAY_AUTH="none",
                             GATEWAY_LISTEN=f"127.0.0.1:{port}",
                             GATEWAY_IDENTITY_FILE=self.keys[identity],
                             GATEWAY_KNOWN_DEVICES_FILE=self.tmp.file("known_devices")),
            "gateway")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def call(path, data=None, headers=None, method=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers=headers or {}, method=method)
            try:
                with opener.open(req, timeout=20) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
            except OSError:
                self.assertTrue(gateway.running(), gateway.log())
                return None, b""

        call.gateway = gateway
        harness.wait_until(lambda: call(f"/{DEVICE}/gps/latitude")[0] in (200, 403),
                           what=f"a sealed call through the gateway\n{gateway.log()}")
        return call

    def test_gateway_seals_with_its_identity(self):
        call = self.sealing_gateway("limited")
        status, body = call(f"/{DEVICE}/gps/latitude")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"latitude": 48.8584})
        # The gateway's key may call GET /gps/** only (hom-allow): the device says 403.
        self.assertEqual(call(f"/{DEVICE}/echo/x")[0], 403)
        self.assertEqual(self.api_server.count("GET", "/echo/x"), 0)
        self.assertTrue(all(m.topic in (SEALED_REQ,) or not m.topic.startswith("v1/req/")
                            for m in self.spy.all()))

    def test_gateway_seals_a_large_body_whole(self):
        """A body over 64 KiB through a sealing gateway is read whole and sealed with the
        request (sealed calls do not stream an upload), declared or chunked: the API gets
        all of it."""
        call = self.sealing_gateway("user")
        body = ("0123456789abcdef" * 6400).encode()  # 100 kB

        def post(name, data, headers):
            return call(f"/{DEVICE}/echo/{name}", data, headers, "POST")

        status, reply = post("declared", body, {"Content-Type": "text/plain"})
        self.assertEqual(status, 200, reply[:300])
        self.assertEqual(json.loads(reply)["body"], body.decode())

        def pieces():  # no length: urllib sends it chunked
            for i in range(0, len(body), 30000):
                yield body[i:i + 30000]
        status, reply = post("chunked", pieces(),
                             {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
        self.assertEqual(status, 200, reply[:300])
        self.assertEqual(json.loads(reply)["body"], body.decode())

    def test_gateway_relays_a_large_sealed_reply_streamed(self):
        """A reply far over the broker's packet limit streams through a sealing gateway:
        the chunks are ciphertext only, the client gets every byte."""
        call = self.sealing_gateway("user")
        status, body = call(f"/{DEVICE}/blob?bytes={BLOB_BYTES}")
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(BLOB).hexdigest())
        self.assertGreater(len(self.stream_chunks()), 4)
        self.assert_no_plaintext_of(BLOB)

    def test_hom_streams_a_large_sealed_reply_and_age_opens_it(self):
        """A sealed reply too large for one message streams: a signed head (verified here
        with ssh-keygen) that names the body's age header, then chunks that together are one
        age file to the requester (opened here with age -d)."""
        out = self.tmp.file("blob.out")
        r = self.hom("get", DEVICE, "blob", "-G", f"bytes={BLOB_BYTES}", "-o", out, "-v")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("sealed end to end and authenticated", r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(BLOB).digest())
        chunks = self.stream_chunks()
        self.assertGreater(len(chunks), 4)
        heads = [m for m in self.spy.all(lambda m: m.topic == chunks[0].topic)
                 if not chunk_of(m)]
        self.assertEqual(len(heads), 1)
        doc = self.open_reply(heads[0].payload,
                              expect_hash=hashlib.sha256(self.sealed_requests()[-1].payload)
                              .hexdigest())
        self.assertEqual(doc["status"], 200, doc)
        body_file = b"".join(m.payload for m in chunks)
        self.assertEqual(doc["stream"]["sealed"],
                         hashlib.sha256(age_header_and_nonce(body_file)).hexdigest())
        opened = subprocess.run(["age", "-d", "-i", self.keys["user"]], input=body_file,
                                capture_output=True, check=True).stdout
        self.assertEqual(hashlib.sha256(opened).digest(), hashlib.sha256(BLOB).digest())
        self.assert_no_plaintext_of(BLOB)
        self.assertEqual(self.api_server.count("GET", "/blob"), 1)

    # ---- a hostile broker -----------------------------------------------------------

    def secret_call(self):
        """A sealed call whose path, header and body the broker must not see."""
        r = self.hom("post", DEVICE, "echo/secret-path-4711", "-H", "X-Secret: hunter2-token",
                     "-d", '{"secret":"body-words-0815"}')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("body-words-0815", r.stdout)
        self.assertEqual(self.api_server.count("POST", "/echo/secret-path-4711"), 1)
        return self.sealed_requests()[-1]

    def test_broker_sees_no_path_header_or_body(self):
        self.secret_call()
        seen = b"".join(m.topic.encode() + m.payload + (m.response_topic or "").encode()
                        for m in self.spy.all())
        log = self.broker.log()
        for secret in ("secret-path", "hunter2", "body-words", "echo", "X-Secret", "POST"):
            self.assertNotIn(secret.encode(), seen, secret)
            self.assertNotIn(secret, log, secret)
        topics = {m.topic for m in self.spy.all()}
        self.assertIn(SEALED_REQ, topics)

    def test_replay_before_and_after_restart(self):
        captured = self.secret_call()
        first = self.spy.all(lambda m: m.topic.startswith(f"v1/res/{DEVICE}/hom/"))
        self.assertEqual(len(first), 1)
        # (a) Replayed as captured: the first reply again, byte for byte; not executed.
        self.spy.publish(SEALED_REQ, captured.payload, qos=2,
                         response_topic=captured.response_topic,
                         correlation_data=captured.correlation_data)
        again = harness.wait_until(
            lambda: self.spy.all(lambda m: m.topic == first[0].topic)[1:], what="the reply")
        self.assertEqual(again[0].payload, first[0].payload)
        self.daemon.process.wait_for_log("a copy answered with the first reply, not executed")
        # After a restart: the seen nonces come from HOM_STATE_DIR.
        self.daemon.stop()
        self.daemon = self.start_homd()
        self.spy.publish(SEALED_REQ, captured.payload, qos=2,
                         response_topic=captured.response_topic,
                         correlation_data=captured.correlation_data)
        later = harness.wait_until(
            lambda: self.spy.all(lambda m: m.topic == first[0].topic)[2:], what="the refusal")
        doc = self.open_reply(later[0].payload,
                              expect_hash=hashlib.sha256(captured.payload).hexdigest())
        self.assertEqual(doc["status"], 401, doc)
        self.assertIn("replayed request", doc["error"])
        self.assertEqual(self.api_server.count("POST", "/echo/secret-path-4711"), 1)

    def test_rerouted_to_another_device_is_refused(self):
        # The other device even shares this device's key: the signed device id decides.
        os.mkdir(self.tmp.file("state2"))
        other = self.start_homd(device=OTHER, key="device", state=self.tmp.file("state2"))
        self.assertIsNotNone(other)
        captured = self.secret_call()
        self.spy.publish(f"v1/req/{OTHER}/@sealed", captured.payload, qos=2,
                         response_topic=f"v1/res/{OTHER}/x", correlation_data=b"c")
        m = self.spy.wait_message(lambda m: m.topic == f"v1/res/{OTHER}/x", what="the refusal")
        doc = m.json()
        self.assertEqual(doc["status"], 401, doc)
        self.assertIn("signed for device v1/itsme", doc["error"])
        self.assertEqual(self.api_server.count("POST", "/echo/secret-path-4711"), 1)

    def test_flipped_bit_is_refused(self):
        captured = self.secret_call()
        for position in (len(captured.payload) // 2, len(captured.payload) - 1, 40):
            corrupt = bytearray(captured.payload)
            corrupt[position] ^= 0x01
            self.spy.publish(SEALED_REQ, bytes(corrupt), qos=2,
                             response_topic=f"v1/res/{DEVICE}/flip", correlation_data=b"flip")
        harness.wait_until(lambda: len(self.replies_on(f"v1/res/{DEVICE}/flip")) >= 3,
                           what="three refusals")
        for m in self.replies_on(f"v1/res/{DEVICE}/flip"):
            self.assertEqual(m.json()["status"], 401)
        self.assertEqual(self.api_server.count("POST", "/echo/secret-path-4711"), 1)

    def slow_call(self, identity="user"):
        """hom waiting on a call that the API holds; returns (process, its sealed request)."""
        before = len(self.sealed_requests())
        p = self.hom_background("get", DEVICE, "slow", "-G", "ms=60000", identity=identity)
        harness.wait_until(lambda: len(self.sealed_requests()) > before, what="the request")
        harness.wait_until(lambda: self.api_server.count("GET", "/slow") >= 1,
                           what="the API call")
        return p, self.sealed_requests()[-1]

    def test_forged_reply_is_refused_by_hom(self):
        p, req = self.slow_call()
        # A reply sealed to the requester, but signed by a key that is not the device's.
        fake = subprocess.run(["age", "-R", self.keys["user"] + ".pub"],
                              input=b"11:hom-reply@v1,", capture_output=True, check=True).stdout
        self.spy.publish(req.response_topic, fake, qos=1, correlation_data=req.correlation_data)
        self.assertEqual(p.wait_exit(30), 60, p.log())
        self.assertIn("not authentic", p.log())
        self.api_server.release()

    def test_forged_clear_reply_is_refused_by_hom(self):
        p, req = self.slow_call()
        self.spy.publish(req.response_topic, b'{"status":200,"content":"forged"}', qos=1,
                         correlation_data=req.correlation_data)
        self.assertEqual(p.wait_exit(30), 60, p.log())
        self.assertIn("answered in clear", p.log())
        self.api_server.release()

    def test_reply_of_one_requester_delivered_to_another_is_refused(self):
        self.secret_call()
        reply_of_user = self.spy.all(lambda m: m.topic.startswith(f"v1/res/{DEVICE}/hom/"))[-1]
        p, req = self.slow_call(identity="user2")
        self.spy.publish(req.response_topic, reply_of_user.payload, qos=1,
                         correlation_data=req.correlation_data)
        self.assertEqual(p.wait_exit(30), 60, p.log())
        self.assertIn("not authentic", p.log())
        self.api_server.release()
        self.assertEqual(self.api_server.count("POST", "/echo/secret-path-4711"), 1)

    def test_truncated_or_altered_sealed_stream_is_refused(self):
        """(g) A broker in the middle cuts a streamed sealed reply short with a forged last
        chunk that passes the clear length and SHA-256 check, or flips a bit of it: hom
        exits 60 with the reason and leaves no file. Through the same relay unaltered, the
        call succeeds (so the relay itself is not what fails)."""
        front = self.mosquitto()
        relay = Relay(self, front.port, self.broker.port)
        out = self.tmp.file("blob.out")

        def get():
            return self.hom("get", DEVICE, "blob", "-G", f"bytes={BLOB_BYTES}", "-o", out,
                            port=front.port)

        r = get()
        self.assertEqual(r.returncode, 0, r)
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(BLOB).digest())
        os.remove(out)
        relay.mode = "cut"
        r = get()
        self.assertEqual(r.returncode, 60, r)
        self.assertIn("not authentic", r.stderr)
        self.assertIn("truncated", r.stderr)
        relay.mode = "flip"
        r = get()
        self.assertEqual(r.returncode, 60, r)
        self.assertIn("failed authentication", r.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(out + ".part"))
        self.assertEqual(self.api_server.count("GET", "/blob"), 3)


if __name__ == "__main__":
    unittest.main()
