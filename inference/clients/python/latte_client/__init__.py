"""Python client of Latte's serving API (latte.v1.Inference): a `latte shard` or a `latte coordinator`."""

from latte_client.client import LatteClient, LatteError

__all__ = ["LatteClient", "LatteError"]
