"""LatteClient: one channel to a Latte server (a shard group or a coordinator).

Every call raises LatteError (with the gRPC status code and the server's message) on failure.
"""

import grpc

from latte_client._stubs import health_pb2, health_pb2_grpc, inference_pb2, inference_pb2_grpc


class LatteError(Exception):
    """A failed call: code is the grpc.StatusCode, details the server's message."""

    def __init__(self, code, details):
        super().__init__("%s: %s" % (code.name, details))
        self.code = code
        self.details = details


def _read_bytes(value, what):
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("cannot read %s %r: %s" % (what, value, e)) from e


def _wrap(error):
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return LatteError(error.code(), error.details())
    return error


class LatteClient:
    """A client of latte.v1.Inference.

    addr: "host:port". token: the server's bearer token (sent as "authorization: Bearer <token>").
    tls_ca: connect over TLS, verifying the server with these PEM root certificates (a path or the
    bytes); tls_server_name overrides the name checked against the certificate. timeout: default
    deadline of every call, in seconds (None: no deadline).
    """

    def __init__(self, addr, token=None, tls_ca=None, tls_server_name=None, timeout=None):
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=_read_bytes(tls_ca, "tls_ca"))
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            self._channel = grpc.secure_channel(addr, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(addr, options=options)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- Generate ---------------------------------------------------------------------------

    @staticmethod
    def make_request(prompt, max_new_tokens=None, temperature=0.0, top_p=0.0, top_k=0, seed=None, stop=None,
                     chat_template=False, ignore_eos=False, request_id=""):
        """The GenerateRequest for these arguments (ValueError/TypeError naming a bad one).

        prompt: text (str) or token ids (a list of ints). max_new_tokens: None = the server's
        default. temperature 0 = greedy. top_p 0 and top_k 0 = no limit. stop: strings that end
        the generation (not included in the output).
        """
        req = inference_pb2.GenerateRequest(request_id=request_id, chat_template=chat_template,
                                            ignore_eos=ignore_eos)
        if isinstance(prompt, str):
            req.text = prompt
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            req.token_ids.ids.extend(prompt)
        else:
            raise TypeError("prompt must be a str or a list of token ids, got %s" % type(prompt).__name__)
        if max_new_tokens is not None:
            if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
                raise ValueError("max_new_tokens must be an int >= 1 (or None for the server's default), got %r"
                                 % (max_new_tokens,))
            req.max_new_tokens = max_new_tokens
        if temperature < 0:
            raise ValueError("temperature must be >= 0 (0: greedy), got %r" % (temperature,))
        if not 0 <= top_p <= 1:
            raise ValueError("top_p must be in [0, 1] (0: off), got %r" % (top_p,))
        if top_k < 0:
            raise ValueError("top_k must be >= 0 (0: off), got %r" % (top_k,))
        req.sampling.temperature = temperature
        req.sampling.top_p = top_p
        req.sampling.top_k = top_k
        if seed is not None:
            req.seed = seed
        if stop:
            if isinstance(stop, str):
                stop = [stop]
            req.stop.extend(stop)
        return req

    def generate_responses(self, prompt, max_new_tokens=None, temperature=0.0, top_p=0.0, top_k=0, seed=None,
                           stop=None, chat_template=False, ignore_eos=False, request_id="", timeout=None):
        """Yields every GenerateResponse of the stream, the final one (finish_reason, usage) last.

        Leaving the loop early cancels the call, which frees the server's work on it.
        """
        req = self.make_request(prompt, max_new_tokens, temperature, top_p, top_k, seed, stop, chat_template,
                                ignore_eos, request_id)
        call = self._stub.Generate(req, metadata=self._metadata,
                                   timeout=timeout if timeout is not None else self._timeout)
        try:
            for message in call:
                yield message
        except grpc.RpcError as e:
            raise _wrap(e) from None
        finally:
            call.cancel()  # no-op after a complete stream; stops the server when abandoned

    def generate(self, prompt, max_new_tokens=None, temperature=0.0, top_p=0.0, top_k=0, seed=None, stop=None,
                 **kwargs):
        """Yields the generated text piece by piece as the server streams it."""
        for message in self.generate_responses(prompt, max_new_tokens, temperature, top_p, top_k, seed, stop,
                                               **kwargs):
            if message.text:
                yield message.text

    def generate_text(self, prompt, max_new_tokens=None, temperature=0.0, top_p=0.0, top_k=0, seed=None, stop=None,
                      **kwargs):
        """The whole generated text (the prompt not included)."""
        return "".join(self.generate(prompt, max_new_tokens, temperature, top_p, top_k, seed, stop, **kwargs))

    # -- Unary calls ------------------------------------------------------------------------

    def _call(self, method, request, timeout):
        try:
            return method(request, metadata=self._metadata, timeout=timeout if timeout is not None else self._timeout)
        except grpc.RpcError as e:
            raise _wrap(e) from None

    def tokenize(self, text, add_bos=False, chat_template=False, timeout=None):
        """The TokenizeResponse: .ids (token ids) and .pieces (their vocabulary entries)."""
        return self._call(self._stub.Tokenize,
                          inference_pb2.TokenizeRequest(text=text, add_bos=add_bos, chat_template=chat_template),
                          timeout)

    def model_info(self, timeout=None):
        """The ModelInfoResponse: architecture, attention kind, sizes, KV cache cost, tp_size."""
        return self._call(self._stub.ModelInfo, inference_pb2.ModelInfoRequest(), timeout)

    def stats(self, timeout=None):
        """The StatsResponse; from a coordinator also .shard_groups, one entry per shard group."""
        return self._call(self._stub.Stats, inference_pb2.StatsRequest(), timeout)

    def health(self, service="", timeout=5.0):
        """grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of a service: "" = the server,
        "shard:<addr>" = one group of a coordinator. Health needs no token."""
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            raise _wrap(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
