"""The aedes broker (Node.js, MQTT 3.1.1 only: it refuses an MQTT 5 CONNECT with CONNACK
"unacceptable protocol version") with homd and hom.

Proves (SPEC §3 MQTT_VERSION, §5.1 "Version fallback"):
- homd and hom with MQTT_VERSION=auto fall back to 3.1.1 and a request round-trips; with
  MQTT_VERSION=3.1.1 they work without any fallback;
- the fallback's first attempt costs no extra second: one `hom get` on aedes takes no more
  than 700 ms longer than on Mosquitto (which accepts MQTT 5), and homd's time from start to
  "connected" likewise. The figures are printed (ctest -V).
"""

import datetime
import re
import statistics
import unittest

import harness
from harness import InteropTest

# How much slower than on Mosquitto a call through the fallback may be. Two brokers on the
# same loopback differ by a few ms; a fallback that waits out a poll interval costs ~1 s.
ALLOWED_EXTRA_S = 0.7
RUNS = 3


def log_time(line):
    """The timestamp of a homd log line ("2026-11-26 13:35:26.446 info ...")."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f") if m else None


def start_to_connected(homd_log):
    """Seconds from homd's "serving" line to its first "connected to" line."""
    start = connected = None
    for line in homd_log.splitlines():
        if start is None and " serving " in line:
            start = log_time(line)
        if connected is None and " connected to " in line:
            connected = log_time(line)
    return (connected - start).total_seconds()


class AedesTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.aedes = harness.Aedes(self.tmp.path)
        self.addCleanup(self.aedes.cleanup)
        self.http = self.api()

    def call(self, port, device, version="auto", verbose=False):
        args = (["-v"] if verbose else []) + ["get", device, "gps/latitude", "--timeout", "20s"]
        return harness.run_hom(args, harness.hom_env(port, MQTT_VERSION=version))

    def check_round_trip(self, version):
        device = f"aedes-{version.replace('.', '')}"
        daemon = self.homd(self.aedes.port, self.http.url, device, MQTT_VERSION=version)
        daemon.wait_connected()
        self.assertIn("(MQTT 3.1.1)", daemon.log())
        result = self.call(self.aedes.port, device, version)
        self.assertEqual(result.returncode, 0, f"{result}\nhomd:\n{harness.tail(daemon.log())}")
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

    def test_auto_falls_back_to_mqtt311(self):
        self.check_round_trip("auto")

    def test_explicit_mqtt311(self):
        self.check_round_trip("3.1.1")

    def test_fallback_costs_no_extra_second(self):
        mosquitto = self.mosquitto()
        on_aedes = self.homd(self.aedes.port, self.http.url, "t-aedes", MQTT_VERSION="auto")
        on_mosquitto = self.homd(mosquitto.port, self.http.url, "t-mosq", MQTT_VERSION="auto")
        on_aedes.wait_connected()
        on_mosquitto.wait_connected()
        homd_aedes = start_to_connected(on_aedes.log())
        homd_mosquitto = start_to_connected(on_mosquitto.log())

        aedes_s, mosquitto_s = [], []
        for _ in range(RUNS):  # interleaved, so both see the same machine load
            a = self.call(self.aedes.port, "t-aedes")
            m = self.call(mosquitto.port, "t-mosq")
            self.assertEqual(a.returncode, 0, a)
            self.assertEqual(m.returncode, 0, m)
            aedes_s.append(a.seconds)
            mosquitto_s.append(m.seconds)
        verbose_aedes = self.call(self.aedes.port, "t-aedes", verbose=True)
        verbose_mosquitto = self.call(mosquitto.port, "t-mosq", verbose=True)

        hom_aedes, hom_mosquitto = statistics.median(aedes_s), statistics.median(mosquitto_s)
        harness.log(
            f"\nhom get, median of {RUNS} (whole process): aedes {hom_aedes * 1000:.0f} ms "
            f"{[round(s * 1000) for s in aedes_s]}, Mosquitto {hom_mosquitto * 1000:.0f} ms "
            f"{[round(s * 1000) for s in mosquitto_s]}\n"
            f"homd start to connected: aedes {homd_aedes * 1000:.0f} ms, "
            f"Mosquitto {homd_mosquitto * 1000:.0f} ms\n"
            f"hom -v on aedes:\n{verbose_aedes.stderr}"
            f"hom -v on Mosquitto:\n{verbose_mosquitto.stderr}"
            f"aedes log:\n{harness.tail(self.aedes.process.log(), 12)}")
        self.assertLessEqual(
            hom_aedes - hom_mosquitto, ALLOWED_EXTRA_S,
            f"hom on aedes took {hom_aedes:.3f} s, on Mosquitto {hom_mosquitto:.3f} s: the "
            f"MQTT 3.1.1 fallback costs an extra {hom_aedes - hom_mosquitto:.3f} s\n"
            f"hom -v on aedes:\n{verbose_aedes.stderr}")
        self.assertLessEqual(
            homd_aedes - homd_mosquitto, ALLOWED_EXTRA_S,
            f"homd took {homd_aedes:.3f} s from start to connected on aedes, "
            f"{homd_mosquitto:.3f} s on Mosquitto\n{harness.tail(on_aedes.log(), 5)}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
