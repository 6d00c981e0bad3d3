#!/usr/bin/env python3
"""latte_client (inference/clients/python) against `latte coordinator` in front of scripted shards.

  python_client_test.py LATTE SCRIPTED_SHARD
(ctest runs it with PYTHONPATH = the client package and <build>/python, the generated stubs.)
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from latte_client import LatteClient, LatteError
from latte.v1 import inference_pb2
import grpc

LATTE, SHARD = sys.argv[1], sys.argv[2]
TOKEN = "py-secret"


def start(cmd, prefix):
    """Starts cmd and returns (process, the rest of its first stdout line after prefix)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith(prefix):
        p.kill()
        raise RuntimeError("%s did not start: %r %s" % (cmd[0], line, p.stderr.read()))
    return p, line[len(prefix):]


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def wait_until(condition, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        token_file = os.path.join(cls.tmp.name, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        cls.shard, cls.shard_addr = start([SHARD, "--mode", "stream", "--tokens", "5", "--model-name", "py-model"],
                                          "scripted shard: ready on ")
        cls.stall, cls.stall_addr = start([SHARD, "--mode", "stall", "--tokens", "1"], "scripted shard: ready on ")
        cls.coord, rest = start([LATTE, "coordinator", "--listen", "127.0.0.1:0", "--shard", cls.shard_addr,
                                 "--auth-token-file", token_file, "--health-interval-ms", "100"],
                                "latte coordinator: serving on ")
        cls.addr = rest.split(",")[0]
        cls.stall_coord, rest = start([LATTE, "coordinator", "--listen", "127.0.0.1:0", "--shard", cls.stall_addr],
                                      "latte coordinator: serving on ")
        cls.stall_coord_addr = rest.split(",")[0]
        cls.client = LatteClient(cls.addr, token=TOKEN, timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for p in (cls.coord, cls.stall_coord, cls.shard, cls.stall):
            stop(p)
        cls.tmp.cleanup()

    def test_generate_yields_the_pieces_as_streamed(self):
        pieces = list(self.client.generate("Once upon a time", max_new_tokens=5, temperature=0))
        self.assertEqual(pieces, ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "])
        self.assertEqual(self.client.generate_text([1, 2, 3], max_new_tokens=5), "t0 t1 t2 t3 t4 ")

    def test_generate_responses_end_with_the_final_message(self):
        messages = list(self.client.generate_responses("abc", max_new_tokens=5, seed=3, stop=["x"]))
        self.assertEqual([m.token_ids[0] for m in messages[:-1]], [1000, 1001, 1002, 1003, 1004])
        self.assertEqual(messages[-1].finish_reason, inference_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(messages[-1].usage.prompt_tokens, 3)

    def test_unary_calls(self):
        self.assertEqual(list(self.client.tokenize("hi", add_bos=True).ids), [1, ord("h"), ord("i")])
        self.assertEqual(self.client.model_info().model_name, "py-model")
        stats = self.client.stats()
        self.assertEqual(len(stats.shard_groups), 1)
        self.assertEqual(stats.shard_groups[0].address, self.shard_addr)
        self.assertTrue(stats.shard_groups[0].healthy)

    def test_health_of_the_coordinator_and_of_a_group(self):
        self.assertEqual(self.client.health(), "SERVING")
        self.assertEqual(self.client.health("shard:" + self.shard_addr), "SERVING")
        with self.assertRaises(LatteError) as e:
            self.client.health("shard:nowhere:1")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_a_wrong_or_missing_token_is_unauthenticated(self):
        for token in (None, "wrong"):
            with LatteClient(self.addr, token=token) as c:
                with self.assertRaises(LatteError) as e:
                    c.generate_text("hi", max_new_tokens=2)
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(LatteError) as e:
                    c.model_info()
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)

    def test_bad_arguments_are_refused_before_sending(self):
        with self.assertRaisesRegex(ValueError, "max_new_tokens must be an int >= 1"):
            self.client.generate_text("hi", max_new_tokens=0)
        with self.assertRaisesRegex(ValueError, "top_p must be in"):
            self.client.generate_text("hi", top_p=1.5)
        with self.assertRaisesRegex(TypeError, "prompt must be a str or a list of token ids"):
            self.client.generate_text(3.0)

    def test_leaving_the_loop_cancels_the_call_upstream(self):
        with LatteClient(self.stall_coord_addr, timeout=20) as c:
            gen = c.generate("hi", max_new_tokens=100)
            self.assertEqual(next(gen), "t0 ")
            self.assertEqual(c.stats().shard_groups[0].stats.running, 1)
            gen.close()
            self.assertTrue(wait_until(lambda: c.stats().shard_groups[0].stats.running == 0),
                            "the shard still runs the abandoned stream")

    def test_a_deadline_is_deadline_exceeded(self):
        with LatteClient(self.stall_coord_addr) as c:
            with self.assertRaises(LatteError) as e:
                c.generate_text("hi", max_new_tokens=100, timeout=0.5)
            self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
