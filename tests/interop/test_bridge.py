"""A device on one Mosquitto, its requester on another, through a Mosquitto bridge (SPEC §9
"Beyond one broker").

Broker A holds homd; broker B holds `hom` and a Paho observer. B bridges to A over MQTT 5
(`bridge_protocol_version mqttv50`): requests out (`v1/req/#`), replies and presence in
(`v1/res/#`, `v1/status/#`).

Proves:
- a request from `hom` on B is served by homd on A, and the reply reaches `hom`;
- the MQTT 5 Response Topic and Correlation Data that `hom` set on B arrive unchanged at A
  (an observer on A sees the same bytes homd sees), and the reply on B carries the same
  Correlation Data back;
- homd's presence on A is visible on B (`hom devices`).
"""

import json
import unittest

import harness
from harness import InteropTest

DEVICE = "bridged-1"


class BridgeTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.a = self.mosquitto()
        self.b = self.mosquitto(extra=[
            # The harness's "no limit" (0) would go out as the bridge's MQTT 5 Receive
            # Maximum, which must not be 0: broker A refuses that CONNECT (protocol error).
            "max_inflight_messages 1000",
            "connection to-a",
            f"address 127.0.0.1:{self.a.port}",
            "remote_clientid bridge-b-to-a",
            "bridge_protocol_version mqttv50",
            "cleansession true",
            "restart_timeout 1",
            "topic v1/req/# out 1",
            "topic v1/res/# in 1",
            "topic v1/status/# in 1",
        ])
        # The bridge is up once A has its subscriptions (log_type all logs each one).
        harness.wait_until(lambda: "bridge-b-to-a 1 v1/status/#" in self.a.log(),
                           what="the bridge B -> A to subscribe on A")
        self.http = self.api()
        self.daemon = self.homd(self.a.port, self.http.url, DEVICE)
        self.daemon.wait_connected()

    def test_request_through_the_bridge_keeps_mqtt5_properties(self):
        on_a = self.client(self.a.port, version=5)
        on_a.subscribe("v1/req/#", 1)
        on_b = self.client(self.b.port, version=5)
        on_b.subscribe("v1/req/#", 1)
        on_b.subscribe(f"v1/res/{DEVICE}/#", 1)

        result = harness.run_hom(["get", DEVICE, "gps/latitude", "--timeout", "20s", "-v"],
                                 harness.hom_env(self.b.port, MQTT_VERSION="5"))
        self.assertEqual(result.returncode, 0,
                         f"{result}\nhomd:\n{harness.tail(self.daemon.log())}\n"
                         f"broker B:\n{harness.tail(self.b.log())}")
        self.assertEqual(json.loads(result.stdout), {"latitude": 48.8584})

        sent = on_b.wait_message(lambda m: m.topic.startswith(f"v1/req/{DEVICE}/"),
                                 what="the request as published on B")
        arrived = on_a.wait_message(lambda m: m.topic == sent.topic,
                                    what="the request as delivered on A")
        harness.log(f"\nrequest on B: topic {sent.topic}, response topic {sent.response_topic}, "
                    f"correlation data {sent.correlation_data!r}\n"
                    f"request on A: response topic {arrived.response_topic}, "
                    f"correlation data {arrived.correlation_data!r}")
        self.assertIsNotNone(sent.response_topic)
        self.assertTrue(sent.response_topic.startswith(f"v1/res/{DEVICE}/"), sent.response_topic)
        self.assertTrue(sent.correlation_data)
        self.assertEqual(arrived.response_topic, sent.response_topic)
        self.assertEqual(arrived.correlation_data, sent.correlation_data)
        self.assertEqual(arrived.payload, sent.payload)

        reply = on_b.wait_message(lambda m: m.topic == sent.response_topic,
                                  what="the reply on B, on the request's Response Topic")
        self.assertEqual(reply.correlation_data, sent.correlation_data)
        self.assertEqual(reply.content_type, "application/json")
        self.assertEqual(reply.json()["status"], 200)
        self.assertEqual(self.http.count("GET", "/gps/latitude"), 1)

    def test_presence_crosses_the_bridge(self):
        result = harness.run_hom(["devices", DEVICE, "--wait", "5s", "--json"],
                                 harness.hom_env(self.b.port))
        self.assertEqual(result.returncode, 0, result)
        devices = json.loads(result.stdout)
        self.assertEqual([d["id"] for d in devices if d["online"]], [DEVICE], result)


if __name__ == "__main__":
    unittest.main(verbosity=2)
