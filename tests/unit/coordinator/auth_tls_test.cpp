// Bearer tokens at the coordinator and towards the shards, and TLS on its listener.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "inference/coordinator/coordinator_error.h"
#include "inference/coordinator/credentials.h"
#include "tests/unit/coordinator/coordinator_test_util.h"

namespace latte::test {
namespace {

ShardScript two_tokens() {
  ShardScript s;
  s.tokens = 2;
  return s;
}

TEST(CoordinatorAuth, CallsWithoutTheRightBearerTokenAreUnauthenticated) {
  ScriptedShard a(two_tokens());
  CoordinatorOptions o = test_options({&a});
  o.auth_token = "client-secret";
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  const StreamResult none = generate(*stub, token_request(4, 2));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(none.status.error_message().find("requires a bearer token"), std::string::npos);
  const StreamResult wrong = generate(*stub, token_request(4, 2), "client-secreT");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.status.error_message(), "wrong bearer token");
  {
    grpc::ClientContext ctx;
    set_deadline_ms(ctx, 5000);
    ctx.AddMetadata("authorization", "Basic client-secret");
    latte::v1::TokenizeRequest req;
    req.set_text("ab");
    latte::v1::TokenizeResponse resp;
    const grpc::Status s = stub->Tokenize(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(s.error_message().find("not of the form 'Bearer <token>'"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    set_deadline_ms(ctx, 5000);
    latte::v1::StatsResponse resp;
    EXPECT_EQ(stub->Stats(&ctx, latte::v1::StatsRequest(), &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(a.generate_calls(), 0) << "an unauthenticated call reached a shard";
  const StreamResult right = generate(*stub, token_request(4, 2), "client-secret");
  EXPECT_TRUE(right.status.ok()) << right.status.error_message();
  // Without a shard token the client's header travels on.
  EXPECT_EQ(a.calls()[0].authorization, "Bearer client-secret");
  // Health stays open (load balancers and probes carry no token).
  EXPECT_TRUE(is_serving(coord->address(), ""));
}

TEST(CoordinatorAuth, TheShardTokenReplacesTheClientsOnEveryUpstreamCall) {
  ShardScript s = two_tokens();
  s.required_token = "shard-secret";
  ScriptedShard a(s);
  CoordinatorOptions o = test_options({&a});
  o.auth_token = "client-secret";
  o.shard_auth_token = "shard-secret";
  auto coord = start_coordinator(o);
  auto stub = client(coord->address());
  const StreamResult r = generate(*stub, token_request(4, 2), "client-secret");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(a.calls()[0].authorization, "Bearer shard-secret");
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 5000);
  ctx.AddMetadata("authorization", "Bearer client-secret");
  latte::v1::ModelInfoResponse info;
  EXPECT_TRUE(stub->ModelInfo(&ctx, latte::v1::ModelInfoRequest(), &info).ok());
  const latte::v1::StatsResponse st = [&] {
    grpc::ClientContext c;
    set_deadline_ms(c, 5000);
    c.AddMetadata("authorization", "Bearer client-secret");
    latte::v1::StatsResponse out;
    EXPECT_TRUE(stub->Stats(&c, latte::v1::StatsRequest(), &out).ok());
    return out;
  }();
  EXPECT_TRUE(st.shard_groups(0).has_stats()) << st.shard_groups(0).stats_error();
}

TEST(CoordinatorAuth, TokenFilesAreTrimmedAndAnEmptyOneIsAnError) {
  const auto dir = std::filesystem::temp_directory_path() / ("latte_coord_tok_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tok") << "  s3cret\n";
  std::ofstream(dir / "empty") << "\n";
  EXPECT_EQ(coordinator::read_token_file((dir / "tok").string(), "--auth-token-file"), "s3cret");
  try {
    coordinator::read_token_file((dir / "empty").string(), "--auth-token-file");
    ADD_FAILURE() << "an empty token file was accepted";
  } catch (const coordinator::CoordinatorError& e) {
    EXPECT_NE(std::string(e.what()).find("is empty"), std::string::npos);
  }
  try {
    coordinator::read_token_file((dir / "missing").string(), "--auth-token-file");
    ADD_FAILURE() << "a missing token file was accepted";
  } catch (const coordinator::CoordinatorError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read --auth-token-file"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

// A self-signed certificate for localhost, made with the openssl command line tool.
bool make_certificate(const std::filesystem::path& dir) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                          "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                          (dir / "key.pem").string() + " -out " + (dir / "cert.pem").string() + " 2>/dev/null";
  return std::system(cmd.c_str()) == 0;
}

TEST(CoordinatorTls, ServesOverTlsAndRefusesPlaintext) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl command to make a certificate";
  const auto dir = std::filesystem::temp_directory_path() / ("latte_coord_tls_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(make_certificate(dir));
  ScriptedShard a(two_tokens());
  CoordinatorOptions o = test_options({&a});
  o.tls_cert_pem = coordinator::read_file((dir / "cert.pem").string(), "cert");
  o.tls_key_pem = coordinator::read_file((dir / "key.pem").string(), "key");
  auto coord = start_coordinator(o);

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = o.tls_cert_pem;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto tls_stub = latte::v1::Inference::NewStub(
      grpc::CreateCustomChannel(coord->address(), grpc::SslCredentials(ssl), args));
  const StreamResult r = generate(*tls_stub, token_request(4, 2));
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();

  auto plain = client(coord->address());
  const StreamResult p = generate(*plain, token_request(4, 2), "", 3000);
  EXPECT_EQ(p.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  std::filesystem::remove_all(dir);
}

TEST(CoordinatorTls, AKeyThatDoesNotMatchTheCertificateFailsAtStart) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl command to make a certificate";
  const auto dir = std::filesystem::temp_directory_path() / ("latte_coord_tls2_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "one");
  std::filesystem::create_directories(dir / "two");
  ASSERT_TRUE(make_certificate(dir / "one"));
  ASSERT_TRUE(make_certificate(dir / "two"));
  ScriptedShard a(two_tokens());
  CoordinatorOptions o = test_options({&a});
  o.tls_cert_pem = coordinator::read_file((dir / "one" / "cert.pem").string(), "cert");
  o.tls_key_pem = coordinator::read_file((dir / "two" / "key.pem").string(), "key");
  coordinator::CoordinatorServer server(o);
  try {
    server.start();
    ADD_FAILURE() << "started with a key of another certificate";
  } catch (const coordinator::CoordinatorError& e) {
    EXPECT_EQ(e.kind(), coordinator::CoordinatorError::Kind::startup);
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1:0"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latte::test
