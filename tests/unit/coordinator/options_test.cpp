// Options and addresses: each mistake is refused with a message naming it.
#include <gtest/gtest.h>

#include "inference/coordinator/coordinator_error.h"
#include "inference/coordinator/options.h"

namespace latte::coordinator {
namespace {

std::string refusal(const CoordinatorOptions& o) {
  try {
    validate(o);
  } catch (const CoordinatorError& e) {
    EXPECT_EQ(e.kind(), CoordinatorError::Kind::invalid_argument);
    return e.what();
  }
  return "";
}

CoordinatorOptions good() {
  CoordinatorOptions o;
  o.listen = "127.0.0.1:0";
  o.shards = {"127.0.0.1:5001", "127.0.0.1:5002"};
  return o;
}

TEST(CoordinatorOptions, NormalizesAddresses) {
  EXPECT_EQ(normalize_address("5000", 0, "--listen"), "127.0.0.1:5000");
  EXPECT_EQ(normalize_address("0.0.0.0:80", 0, "--listen"), "0.0.0.0:80");
  EXPECT_EQ(normalize_address("[::1]:50051", 1, "--shard"), "[::1]:50051");
  EXPECT_EQ(normalize_address("node-3.cluster:7000", 1, "--shard"), "node-3.cluster:7000");
  EXPECT_EQ(normalize_address("unix:/tmp/s.sock", 1, "--shard"), "unix:/tmp/s.sock");
}

TEST(CoordinatorOptions, RefusesEachMistakeByName) {
  EXPECT_EQ(refusal(good()), "");
  CoordinatorOptions o = good();
  o.shards.clear();
  EXPECT_EQ(refusal(o), "no shard group: give at least one --shard ADDR");
  o = good();
  o.shards.push_back("5001");
  EXPECT_EQ(refusal(o), "--shard 127.0.0.1:5001 is given twice");
  o = good();
  o.shards = {"localhost"};
  EXPECT_EQ(refusal(o), "--shard 'localhost' is not host:port, [ipv6]:port, a port number or unix:/path");
  o = good();
  o.shards = {"127.0.0.1:0"};
  EXPECT_EQ(refusal(o), "--shard '127.0.0.1:0' has port '0', expected a number in [1, 65535]");
  o = good();
  o.listen = "127.0.0.1:70000";
  EXPECT_EQ(refusal(o), "--listen '127.0.0.1:70000' has port '70000', expected a number in [0, 65535]");
  o = good();
  o.listen = "::1:80";
  EXPECT_EQ(refusal(o), "--listen '::1:80': write an IPv6 host in brackets, e.g. [::1]:50051");
  o = good();
  o.health_interval_ms = 0;
  EXPECT_EQ(refusal(o), "--health-interval-ms is 0, must be in [10, 3600000]");
  o = good();
  o.tls_cert_pem = "CERT";
  EXPECT_EQ(refusal(o), "TLS needs both a certificate and a private key (--tls-cert and --tls-key)");
  o = good();
  o.auth_token = "two words";
  EXPECT_EQ(refusal(o), "a bearer token may contain only printable characters without spaces");
  o = good();
  o.max_message_bytes = 10;
  EXPECT_EQ(refusal(o), "--max-message-bytes is 10, must be in [1024, 1073741824]");
}

}  // namespace
}  // namespace latte::coordinator
