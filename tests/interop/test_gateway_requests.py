"""Python `requests` (a client nobody here wrote) against hom-gateway, the real homd, a
Mosquitto and an HTTP API (SPEC §6).

Proves, each status as `requests` sees it:
- the gateway's own statuses: 401 (no or a wrong token, with WWW-Authenticate), 403 (outside
  the token's scope), 404 (no device in the URL), 413 (body over GATEWAY_MAX_BODY_BYTES),
  431 (headers over GATEWAY_MAX_HEADER_BYTES), 503 with Retry-After (the device's retained
  presence says offline), 503 (the broker is unreachable), 504 (no reply within Hom-Timeout),
  each with a JSON body {"error": ...} and the reason in Hom-Error;
- a status homd made itself (a path outside HTTP_ALLOWED_PATHS: 403) passes through with
  homd's reason in Hom-Error;
- a request header reaches the API (the token does not), the API's Content-Type comes back,
  and a JSON request body arrives as sent and comes back byte for byte.
"""

import hashlib
import json
import os
import time

import requests

import harness
from harness import InteropTest

DEVICE = "py-dev"
OPS = "ops-secret"
ADMIN = "admin-secret"


def gateway_bin():
    return harness.binary("HOM_GATEWAY_BIN", "hom-gateway")


class GatewayRequestsTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.broker = self.mosquitto()
        self.http = self.api()
        self.daemon = self.homd(self.broker.port, self.http.url, DEVICE,
                                HTTP_ALLOWED_PATHS="/gps/**,/echo/**,/slow")
        self.daemon.wait_connected()
        sha = lambda t: hashlib.sha256(t.encode()).hexdigest()
        tokens = self.tmp.write("tokens", (
            f"{sha(OPS)} {DEVICE} GET /gps/** ops\n"
            f"{sha(ADMIN)} * * * admin\n"))
        self.port = harness.free_port()
        self.gateway = self.process(
            [gateway_bin()],
            harness.base_env(MQTT_HOST="127.0.0.1", MQTT_PORT=self.broker.port, MQTT_TLS="off",
                             MQTT_TOPIC_START="v1", GATEWAY_TOKENS_FILE=tokens,
                             GATEWAY_LISTEN=f"127.0.0.1:{self.port}", GATEWAY_TIMEOUT_MS=10000,
                             GATEWAY_MAX_BODY_BYTES=1000, GATEWAY_MAX_HEADER_BYTES=2048,
                             SHUTDOWN_GRACE_MS=1000),
            "gateway")
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy of the caller's environment
        self.addCleanup(self.session.close)
        harness.wait_until(lambda: self.health() == 200, what="the gateway's health")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def health(self):
        try:
            return self.session.get(self.url("/_hom/health"), timeout=5).status_code
        except requests.ConnectionError:
            self.assertTrue(self.gateway.running(), harness.tail(self.gateway.log()))
            return None

    def call(self, method, path, token=ADMIN, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.url(path), headers=headers, timeout=30,
                                    **kwargs)

    def assert_own_error(self, r, status):
        self.assertEqual(r.status_code, status, f"{r.headers} {r.text}\n"
                         f"{harness.tail(self.gateway.log())}")
        self.assertTrue(r.headers.get("Hom-Error"), r.headers)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        self.assertEqual(r.json()["error"], r.headers["Hom-Error"])

    def test_authentication_and_routing(self):
        r = self.call("GET", f"/{DEVICE}/gps/latitude", token=None)
        self.assert_own_error(r, 401)
        self.assertEqual(r.headers["WWW-Authenticate"], "Bearer")
        self.assert_own_error(self.call("GET", f"/{DEVICE}/gps/latitude", token="wrong"), 401)
        self.assert_own_error(self.call("POST", f"/{DEVICE}/gps/latitude", token=OPS), 403)
        self.assert_own_error(self.call("GET", "/other/gps/latitude", token=OPS), 403)
        self.assert_own_error(self.call("GET", "/"), 404)
        ok = self.call("GET", f"/{DEVICE}/gps/latitude", token=OPS)
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.json(), {"latitude": 48.8584})
        self.assertEqual(self.http.count("POST", "/gps/latitude"), 0)

    def test_limits(self):
        self.assert_own_error(self.call("POST", f"/{DEVICE}/echo/x", data=b"x" * 1001), 413)
        self.assert_own_error(
            self.call("GET", f"/{DEVICE}/echo/x", headers={"X-Big": "b" * 3000}), 431)
        # A new connection works after each (the refused ones were closed).
        self.assertEqual(self.call("POST", f"/{DEVICE}/echo/x", data=b"x" * 1000).status_code,
                         200)

    def test_timeout_and_statuses_from_homd(self):
        # Nobody serves this device and it has no presence: 504 after Hom-Timeout.
        started = time.monotonic()
        r = self.call("GET", "/nobody/x", headers={"Hom-Timeout": "700ms"})
        self.assert_own_error(r, 504)
        self.assertLess(time.monotonic() - started, 8)
        # homd refuses a path outside HTTP_ALLOWED_PATHS: its 403 and reason pass through.
        r = self.call("GET", f"/{DEVICE}/secret")
        self.assert_own_error(r, 403)
        self.assertIn("HTTP_ALLOWED_PATHS", r.headers["Hom-Error"])
        self.assertEqual(self.http.count("GET", "/secret"), 0)

    def test_device_offline_then_broker_unreachable(self):
        self.assertEqual(self.call("GET", f"/{DEVICE}/gps/latitude").status_code, 200)
        self.assertEqual(self.daemon.stop(), 0)  # publishes its offline presence
        r = self.call("GET", f"/{DEVICE}/gps/latitude")
        self.assert_own_error(r, 503)
        self.assertGreater(int(r.headers["Retry-After"]), 0)
        self.broker.stop()
        harness.wait_until(lambda: self.health() == 503, what="health to report the broker down")
        r = self.call("GET", f"/{DEVICE}/gps/latitude")
        self.assert_own_error(r, 503)
        self.assertIn("broker", r.headers["Hom-Error"])

    def test_headers_and_body(self):
        sent = '{ "n" : 1,\n  "list": [1, 2.50] }'
        r = self.call("PUT", f"/{DEVICE}/echo/put?a=1&b=two",
                      headers={"X-Trace-Id": "abc-123", "Content-Type": "application/json"},
                      data=sent.encode())
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        seen = r.json()
        self.assertEqual(seen["method"], "PUT")
        self.assertEqual(seen["query"], "a=1&b=two")
        self.assertEqual(seen["body"], sent)
        self.assertEqual(seen["headers"]["x-trace-id"], "abc-123")
        self.assertEqual(seen["headers"]["content-type"], "application/json")
        self.assertNotIn("authorization", seen["headers"])
        # The API's bytes, exactly: Python's json.dumps spacing, not a re-serialisation.
        self.assertEqual(r.content, json.dumps(seen).encode())


if __name__ == "__main__":
    import unittest
    unittest.main()
