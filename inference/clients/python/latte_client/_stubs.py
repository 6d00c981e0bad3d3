"""The generated protobuf/gRPC modules, with an error that says how to make them.

They are generated at build time (CMake target latte_python_stubs) into <build>/python, which must
be on PYTHONPATH next to this package; nothing generated is committed.
"""

try:
    from latte.v1 import inference_pb2, inference_pb2_grpc  # noqa: F401
    from latte_health.v1 import health_pb2, health_pb2_grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        "latte_client needs the generated stubs (latte.v1.inference_pb2, latte_health.v1.health_pb2): "
        "build them with `cmake --build <build> --target latte_python_stubs` and put <build>/python "
        "on PYTHONPATH (see inference/clients/python/README.md). Import failed with: %s" % e
    ) from e
