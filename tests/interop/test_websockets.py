"""MQTT over WebSockets: Mosquitto's `protocol websockets` listeners, plain (ws://) and TLS
(wss://, with a CA made by the test).

Proves (SPEC §3 MQTT_HOST as a URI): homd with MQTT_HOST=ws://127.0.0.1:PORT or
wss://127.0.0.1:PORT (and MQTT_CA_FILE) connects and serves requests sent by hom over the
same kind of URI, and by Paho for Python over WebSockets.
"""

import json
import unittest

import harness
from harness import InteropTest


class WebSocketsTest(InteropTest):
    def setUp(self):
        super().setUp()
        d = self.tmp.path
        self.ca = harness.make_ca(d, "ca")
        cert = harness.make_server_cert(d, "broker", self.ca, "IP:127.0.0.1,DNS:localhost")
        self.broker = self.mosquitto(tls=(self.ca[0], *cert), ws=True, wss=True)
        self.http = self.api()

    def check(self, uri, port, device, ca_file=None):
        env = {"MQTT_TLS": None, "MQTT_CA_FILE": ca_file}  # TLS from the scheme
        daemon = self.homd(port, self.http.url, device, host=uri, **env)
        daemon.wait_connected()
        self.assertIn(f"connected to {uri}", daemon.log())

        result = harness.run_hom(["get", device, "gps/latitude", "--timeout", "20s"],
                                 harness.hom_env(port, host=uri, **env))
        self.assertEqual(result.returncode, 0, f"{result}\nhomd:\n{harness.tail(daemon.log())}")
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

        # A third-party requester over the same WebSocket listener.
        requester = self.client(port, version=5, transport="websockets", ca_file=ca_file)
        requester.subscribe(f"v1/res/{device}/#", 1)
        requester.publish(f"v1/req/{device}/post/echo/ws",
                          json.dumps({"body": "over websockets", "req_id": "ws-1"}), qos=1)
        reply = requester.wait_message(harness.reply_to("ws-1"), what="the reply").json()
        self.assertEqual(reply["status"], 200, reply)
        self.assertEqual(reply["content"]["body"], "over websockets")

    def test_ws(self):
        self.check(f"ws://127.0.0.1:{self.broker.ws_port}", self.broker.ws_port, "ws-dev")

    def test_wss(self):
        self.check(f"wss://127.0.0.1:{self.broker.wss_port}", self.broker.wss_port, "wss-dev",
                   ca_file=self.ca[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
