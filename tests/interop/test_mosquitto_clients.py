"""The README's protocol examples, run with mosquitto_pub and mosquitto_sub as they are written
there, against homd on Mosquitto and the demo API (hom-demo-api), at QoS 0, 1 and 2, over
MQTT 5 (`-V 5`) and MQTT 3.1.1 (`-V 311`).

Proves that a requester with no knowledge of this project (no Response Topic, no Correlation
Data, a subscriber started before the publisher) gets the documented reply on the mirrored
topic: the GET with an empty payload, the POST with a JSON body and a req_id, and the
"not json" payload answered with a 400.
"""

import json
import os
import subprocess
import unittest

import harness
from harness import InteropTest

DEVICE = "itsme"

EXAMPLES = [
    # (name, verb/path, mosquitto_pub payload arguments, the reply the README shows)
    ("get", "get/gps/latitude", ["-n"],
     {"content": {"latitude": 48.8584}, "req_id": None, "status": 200}),
    ("post", "post/food/dessert", ["-m", '{"body":{"name":"tiramisu"},"req_id":"42"}'],
     {"content": "dessert tiramisu created", "req_id": "42", "status": 201}),
    # The error text is for people: only its start is checked.
    ("not-json", "get/gps/latitude", ["-m", "not json"],
     {"content": None, "error": "payload is not valid JSON", "req_id": None, "status": 400}),
]


@unittest.skipUnless(os.environ.get("HOM_DEMO_API_BIN"), "hom-demo-api is not built")
class ReadmeExamplesTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.broker = self.mosquitto()
        self.demo = harness.DemoApi(self.tmp.path)
        self.addCleanup(self.demo.cleanup)
        self.daemon = self.homd(self.broker.port, self.demo.url, DEVICE)
        self.daemon.wait_connected()
        self.subscribers = []

    def sub_then_pub(self, version, qos, route, pub_args):
        """mosquitto_sub -C 1 on the mirrored topic; once its SUBACK is in, mosquitto_pub the
        request. Returns the one reply line mosquitto_sub printed."""
        common = ["-V", version, "-h", "127.0.0.1", "-p", str(self.broker.port),
                  "-q", str(qos)]
        sub_id = f"readme-sub-{version}-{qos}-{len(self.subscribers)}"
        self.subscribers.append(sub_id)
        sub = self.process(
            [harness.binary("MOSQUITTO_SUB_BIN", "mosquitto_sub"), *common, "-i", sub_id,
             "-t", f"v1/res/{DEVICE}/{route}", "-C", "1", "-W", "30"],
            harness.base_env(), f"mosquitto_sub-{version}-{qos}")
        # mosquitto_sub's own output is block-buffered in a file: the broker says when.
        self.broker.process.wait_for_log(f"Sending SUBACK to {sub_id}\n")
        pub = subprocess.run(
            ["setpriv", "--pdeathsig", "KILL", "--",
             harness.binary("MOSQUITTO_PUB_BIN", "mosquitto_pub"), *common,
             "-t", f"v1/req/{DEVICE}/{route}", *pub_args],
            env=harness.base_env(), stdin=subprocess.DEVNULL, capture_output=True,
            timeout=60, check=False)
        self.assertEqual(pub.returncode, 0, pub.stderr.decode(errors="replace"))
        status = sub.wait_exit(45)
        self.assertEqual(status, 0, f"mosquitto_sub got no reply:\n{sub.log()}\nhomd:\n"
                                    f"{harness.tail(self.daemon.log(), 10)}")
        lines = [line for line in sub.log().splitlines() if line.startswith("{")]
        self.assertEqual(len(lines), 1, sub.log())
        return lines[0]

    def check_examples(self, version):
        for qos in (0, 1, 2):
            for name, route, pub_args, expected in EXAMPLES:
                with self.subTest(version=version, qos=qos, example=name):
                    line = self.sub_then_pub(version, qos, route, pub_args)
                    reply = json.loads(line)
                    if "error" in expected:
                        self.assertTrue(reply.get("error", "").startswith(expected["error"]),
                                        line)
                        reply["error"] = expected["error"]
                    self.assertEqual(reply, expected, line)

    def test_readme_examples_over_mqtt5(self):
        self.check_examples("5")

    def test_readme_examples_over_mqtt311(self):
        self.check_examples("311")


if __name__ == "__main__":
    unittest.main(verbosity=2)
