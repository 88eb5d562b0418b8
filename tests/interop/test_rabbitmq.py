"""RabbitMQ's MQTT plugin (Debian's rabbitmq-server) with homd and hom. The test runs its own
node (harness.RabbitMq: its own epmd and node, ports, data and cookie), one for the class.

RabbitMQ speaks MQTT 3.1.1 only: it closes the socket on an MQTT 5 CONNECT instead of
refusing it in CONNACK; it grants QoS 1 for a QoS 2 subscription; it does not deliver
retained messages to wildcard subscriptions.

Proves:
- homd and hom with MQTT_VERSION=auto fall back to 3.1.1 on that closed socket too, and a
  request round-trips (SPEC §5.1 "Version fallback");
- a request published while homd drains on SIGTERM is not lost: it is answered with 503 by
  the draining homd, or executed by the next homd started with the same id; the request
  that was running when SIGTERM came is finished; one sent while no homd runs is served by
  the next (SPEC §5, §5.1 "Shutdown", "Granted QoS");
- `hom devices DEVICE...` (exact status topics) lists an online device where the wildcard
  `hom devices` cannot see it.
"""

import json
import signal
import unittest

import harness
from harness import InteropTest


class RabbitMqTest(InteropTest):
    @classmethod
    def setUpClass(cls):
        cls.broker = harness.RabbitMq()
        cls.addClassCleanup(cls.broker.cleanup)
        harness.log(f"\nRabbitMQ node {cls.broker.name} up in {cls.broker.started_in:.1f} s "
                    f"(MQTT on 127.0.0.1:{cls.broker.port})")

    def setUp(self):
        super().setUp()
        self.http = self.api()

    def hom(self, args, version, timeout="20s"):
        return harness.run_hom(args if args[0] == "devices" else args + ["--timeout", timeout],
                               harness.hom_env(self.broker.port, MQTT_VERSION=version))

    def test_auto_falls_back_to_mqtt311(self):
        daemon = self.homd(self.broker.port, self.http.url, "rmq-auto", MQTT_VERSION="auto")
        daemon.wait_connected(timeout=20)
        self.assertIn("(MQTT 3.1.1)", daemon.log())
        result = self.hom(["get", "rmq-auto", "gps/latitude"], "auto")
        self.assertEqual(result.returncode, 0, f"{result}\nhomd:\n{harness.tail(daemon.log())}")
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

    def test_hom_auto_falls_back_to_mqtt311(self):
        # homd pinned to 3.1.1, so that this checks hom's own fallback.
        daemon = self.homd(self.broker.port, self.http.url, "rmq-hom", MQTT_VERSION="3.1.1")
        daemon.wait_connected(timeout=30)
        result = self.hom(["get", "rmq-hom", "gps/latitude"], "auto")
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

    def test_explicit_mqtt311_round_trip(self):
        daemon = self.homd(self.broker.port, self.http.url, "rmq-311", MQTT_VERSION="3.1.1")
        daemon.wait_connected(timeout=30)
        result = self.hom(["get", "rmq-311", "gps/latitude"], "3.1.1")
        self.assertEqual(result.returncode, 0, f"{result}\nhomd:\n{harness.tail(daemon.log())}")
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

    def test_request_during_the_drain_is_not_lost(self):
        device = "rmq-drain"
        env = {"MQTT_VERSION": "3.1.1", "WORKERS": "1", "SHUTDOWN_GRACE_MS": "15000"}
        daemon = self.homd(self.broker.port, self.http.url, device, **env)
        daemon.wait_connected(timeout=30)
        requester = self.client(self.broker.port, version=311)
        granted = requester.subscribe(f"v1/res/{device}/#", 2)
        harness.log(f"RabbitMQ granted QoS {granted} for a QoS 2 subscription")

        # R1 keeps homd's only worker busy, so the drain lasts while R2 is published.
        requester.publish(f"v1/req/{device}/get/slow?ms=6000", '{"req_id":"r1"}', qos=1)
        harness.wait_until(lambda: self.http.count("GET", "/slow"), what="R1 to reach the API")
        daemon.process.signal(signal.SIGTERM)
        daemon.process.wait_for_log("received SIGTERM")
        requester.publish(f"v1/req/{device}/get/gps/latitude", '{"req_id":"r2"}', qos=1)
        self.assertTrue(daemon.process.running(),
                        "homd ended its drain before R2 was published: the test proves nothing")

        status = daemon.process.wait_exit(40)
        first_log = daemon.log()
        self.assertEqual(status, 0, f"homd did not exit 0 after SIGTERM:\n{first_log}")
        r1 = requester.wait_message(harness.reply_to("r1"), timeout=10,
                                    what=f"R1's reply\nhomd:\n{harness.tail(first_log)}").json()
        self.assertEqual(r1["status"], 200, r1)

        # R3 is sent while no homd runs: the persistent session keeps it for the next one.
        requester.publish(f"v1/req/{device}/get/gps/latitude", '{"req_id":"r3"}', qos=1)
        answered_by_first = requester.all(harness.reply_to("r2"))
        second = self.homd(self.broker.port, self.http.url, device, **env)
        second.wait_connected(timeout=30)
        diagnosis = (f"first homd:\n{harness.tail(first_log)}\n"
                     f"second homd:\n{harness.tail(second.log())}")
        if answered_by_first:
            r2 = answered_by_first[0].json()
            self.assertEqual(r2["status"], 503, r2)
            harness.log("R2 was answered 503 by the draining homd")
        else:
            # Not answered by the first homd: it must not have acknowledged it, so the broker
            # still holds it for the next homd with the same id.
            r2 = requester.wait_message(
                harness.reply_to("r2"), timeout=30,
                what=f"R2's reply from the next homd (nothing homd acknowledged may be lost)\n"
                     f"{diagnosis}").json()
            self.assertIn(r2["status"], (200, 503), r2)
            harness.log(f"R2 was answered {r2['status']} by the next homd")
        r3 = requester.wait_message(harness.reply_to("r3"), timeout=30,
                                    what=f"R3's reply from the next homd\n{diagnosis}").json()
        self.assertEqual(r3["status"], 200, r3)
        replies = [m.json()["status"] for m in requester.all(harness.reply_to("r2"))]
        harness.log(f"replies to R2: {replies}; first homd:\n{harness.tail(first_log, 12)}")

    def test_hom_devices_with_device_names(self):
        daemon = self.homd(self.broker.port, self.http.url, "rmq-seen", MQTT_VERSION="3.1.1")
        daemon.wait_connected(timeout=30)
        result = self.hom(["devices", "rmq-seen", "rmq-never-seen"], "3.1.1")
        self.assertEqual(result.returncode, 0, result)
        lines = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
        self.assertEqual([fields[0] for fields in lines], ["rmq-seen"], result)
        self.assertRegex(lines[0][1], r"^\d+\.\d+", result)  # the version

        as_json = self.hom(["devices", "--json", "rmq-seen"], "3.1.1")
        self.assertEqual(as_json.returncode, 0, as_json)
        devices = json.loads(as_json.stdout)
        self.assertEqual([(d["id"], d["online"]) for d in devices], [("rmq-seen", True)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
