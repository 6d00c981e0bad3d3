#!/usr/bin/env python3
"""Streams a generation from a Latte server (a coordinator or a shard) to stdout as it arrives.

  PYTHONPATH=inference/clients/python:build/python \
    python3 inference/clients/python/examples/stream.py --addr 127.0.0.1:50051 "Once upon a time"

The text goes to stdout; the finish reason and token counts to stderr. Exit code 1 with the
gRPC status on failure.
"""

import argparse
import sys

from latte_client import LatteClient, LatteError


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--addr", default="127.0.0.1:50051", help="server address host:port")
    p.add_argument("--token-file", help="file holding the server's bearer token")
    p.add_argument("--tls-ca", help="PEM root certificates: connect over TLS")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    a = p.parse_args()
    token = open(a.token_file).read().strip() if a.token_file else None
    with LatteClient(a.addr, token=token, tls_ca=a.tls_ca, timeout=a.timeout) as client:
        try:
            final = None
            for m in client.generate_responses(a.prompt, a.max_new_tokens, a.temperature, a.top_p, a.top_k, a.seed,
                                               a.stop, chat_template=a.chat):
                if m.text:
                    sys.stdout.write(m.text)
                    sys.stdout.flush()
                final = m
            sys.stdout.write("\n")
            if final is not None:
                from latte.v1 import inference_pb2
                reason = inference_pb2.FinishReason.Name(final.finish_reason)
                print("finish: %s, prompt %d tokens, generated %d, first token after %.3f s, total %.3f s"
                      % (reason, final.usage.prompt_tokens, final.usage.completion_tokens,
                         final.usage.time_to_first_token_s, final.usage.total_time_s), file=sys.stderr)
        except LatteError as e:
            print("\nlatte client: %s" % e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
