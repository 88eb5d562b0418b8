"""A broker replaced under a running homd by one that does not speak MQTT 5.

Proves (SPEC §5.1 "Version fallback"; the race where a fallback after a reconnect replaced
the Paho client while workers were publishing through it): homd is connected to Mosquitto
over MQTT 5 and its workers are running slow requests when Mosquitto stops and aedes (MQTT
3.1.1 only) takes its port. homd reconnects, is refused MQTT 5, falls back to 3.1.1 and
replaces its client while the workers finish their calls: some replies are produced while
the broker is away, some while the client is being replaced, some after. Every reply reaches
a subscriber on aedes exactly once, and homd keeps serving.
"""

import json
import re
import unittest

import harness
from harness import InteropTest

REQUESTS = 16


class FallbackSwitchTest(InteropTest):
    def test_replies_in_flight_survive_a_switch_to_a_311_broker(self):
        mosquitto = self.mosquitto()
        port = mosquitto.port
        http = self.api()
        # Back-off windows of 1 to 6 s (full jitter: each wait is drawn from [0, window)).
        daemon = self.homd(port, http.url, "switch", MQTT_VERSION="auto", WORKERS=str(REQUESTS),
                           MQTT_RECONNECT_MIN_MS="1000", MQTT_RECONNECT_MAX_MS="6000")
        daemon.wait_connected()
        self.assertIn("(MQTT 5)", daemon.log())

        requester = self.client(port, version=5)
        # Staggered: the calls end from 2.5 s to 10 s from now, across the outage and the switch
    # (none before the broker stops: a reply to a broker without subscribers is dropped).
        for i in range(REQUESTS):
            payload = json.dumps({"req_id": f"s{i}"})
            requester.publish(f"v1/req/switch/get/slow?ms={2500 + i * 500}", payload, qos=1)
        harness.wait_until(lambda: http.count("GET", "/slow") == REQUESTS,
                           what="every slow call to reach the API")
        requester.close()
        mosquitto.stop()
        # A failed attempt whose next try is at least 3 s away (homd logs the wait): time
        # enough for aedes and our subscriber to be there before homd connects and sends what
        # it kept. A shorter draw: the next failed attempt.
        for attempt in range(1, 40):
            text = daemon.process.wait_for_log("retrying in", count=attempt, timeout=30)
            waits = re.findall(r"retrying in ([0-9.]+) s", text)
            if float(waits[-1]) >= 3.0:
                break
        else:
            self.fail(f"no back-off of 3 s or more in 40 attempts:\n{harness.tail(daemon.log())}")
        aedes = harness.Aedes(self.tmp.path, port=port)
        self.addCleanup(aedes.cleanup)
        subscriber = self.client(port, version=3)
        subscriber.subscribe("v1/res/switch/#", qos=1)

        daemon.wait_connected(count=2, timeout=60)
        for i in range(REQUESTS):
            subscriber.wait_message(harness.reply_to(f"s{i}"), timeout=60,
                                    what=f"the reply to s{i}")
        replies = [m.json()["req_id"] for m in subscriber.all(lambda m: m.topic.startswith(
            "v1/res/switch/"))]
        self.assertEqual(sorted(replies), sorted(f"s{i}" for i in range(REQUESTS)),
                         "each reply exactly once")
        self.assertEqual(http.count("GET", "/slow"), REQUESTS, "no call executed twice")

        # Still serving, now over 3.1.1.
        subscriber.publish("v1/req/switch/get/gps/latitude", json.dumps({"req_id": "after"}))
        reply = subscriber.wait_message(harness.reply_to("after"), what="a reply after the switch")
        self.assertEqual(reply.json()["status"], 200)
        self.assertTrue(daemon.process.running())


if __name__ == "__main__":
    unittest.main()
