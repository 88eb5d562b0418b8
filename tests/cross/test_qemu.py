"""The cross-built homd (arm64, armhf) under qemu-user serves a real request.

The host's Mosquitto and a host HTTP API (Python's http.server, tests/interop/harness.py)
on free loopback ports; homd built for the target architecture, run by qemu-user (Debian's
qemu-user-static, no binfmt registration: the emulator is named on the command line and
finds the target's dynamic loader and libraries where multiarch installed them); the
build machine's `hom` as the requester. Proves that the target binary links against the
target's Debian libraries, connects, answers GET and POST through the broker, and stops
cleanly on SIGTERM.

Environment (set by tests/CMakeLists.txt): HOM_CROSS_HOMD (the target's homd),
HOM_CROSS_EMULATOR (qemu-ARCH-static), HOM_CROSS_ELF_MACHINE (the ELF e_machine the target
binary must have: 183 aarch64, 40 arm), HOM_BIN (the build machine's hom), MOSQUITTO_BIN.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import harness  # noqa: E402
from harness import InteropTest  # noqa: E402

DEVICE = "cross-dev"
# qemu-user translates every instruction: start-up takes seconds on a loaded 2-core machine.
START_WAIT = 90.0


def elf_machine(path):
    with open(path, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    endian = "<" if header[5] == 1 else ">"
    return struct.unpack(endian + "H", header[18:20])[0]


class QemuHomdTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.homd_path = os.environ["HOM_CROSS_HOMD"]
        self.emulator = os.environ["HOM_CROSS_EMULATOR"]
        self.assertEqual(elf_machine(self.homd_path), int(os.environ["HOM_CROSS_ELF_MACHINE"]),
                         f"{self.homd_path} is not a binary for the target")
        self.broker = self.mosquitto()
        self.http = self.api()

    def start_homd(self):
        env = harness.base_env(MQTT_HOST="127.0.0.1", MQTT_PORT=self.broker.port,
                               MQTT_TLS="off", MQTT_TOPIC_START="v1", MQTT_TOPIC_ID=DEVICE,
                               HTTP_BASE_URL=self.http.url, LOG_LEVEL="debug")
        daemon = self.process([self.emulator, self.homd_path], env, "homd")
        daemon.wait_for_log("connected to ", timeout=START_WAIT)
        return daemon

    def hom(self, *args):
        result = harness.run_hom([*args, "--timeout", "60s"], harness.hom_env(self.broker.port),
                                 timeout=90.0)
        self.assertEqual(result.returncode, 0, result)
        return result

    def test_version_under_the_emulator(self):
        done = subprocess.run([self.emulator, self.homd_path, "--version"],
                              capture_output=True, timeout=60, check=False)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertTrue(done.stdout.decode().startswith("homd "), done.stdout)

    def test_serves_a_request_through_the_host_broker(self):
        started = time.monotonic()
        daemon = self.start_homd()
        harness.log(f"homd under {os.path.basename(self.emulator)} connected after "
                    f"{time.monotonic() - started:.1f} s")

        got = self.hom("get", DEVICE, "gps/latitude")
        self.assertEqual(json.loads(got.stdout), {"latitude": 48.8584}, got)
        self.assertEqual(self.http.count("GET", "/gps/latitude"), 1)

        posted = self.hom("post", DEVICE, "food/dessert", "--data", '{"name": "tiramisu"}')
        self.assertIn("dessert tiramisu created", posted.stdout, posted)
        self.assertEqual(self.http.count("POST", "/food/dessert"), 1)
        harness.log(f"GET {got.seconds:.2f} s, POST {posted.seconds:.2f} s through the broker")

        daemon.signal(signal.SIGTERM)
        self.assertEqual(daemon.wait_exit(timeout=START_WAIT), 0, harness.tail(daemon.log()))


if __name__ == "__main__":
    unittest.main()
