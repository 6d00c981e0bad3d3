// A minimal latte.v1 client for the end-to-end test of `latte shard` (shard_e2e.sh):
//   shard_client ADDR generate PROMPT MAX_NEW TEXT_FILE   greedy Generate; the streamed text goes to
//                                                         TEXT_FILE, a summary line to stdout
//   shard_client ADDR info                                "model NAME tp N attention KIND"
//   shard_client ADDR health                              SERVING, NOT_SERVING, ...
// Exit code 0 when the call ended OK, 1 with the gRPC status on stderr otherwise, 2 on bad usage.
// Every call has a 60 s deadline so that a hung server fails the test instead of hanging it.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "latte/v1/inference.grpc.pb.h"

namespace {

void set_deadline(grpc::ClientContext& c) { c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60)); }

int failed(const char* call, const grpc::Status& s) {
  std::cerr << "shard_client: " << call << " failed: code " << int(s.error_code()) << ": " << s.error_message() << "\n";
  return 1;
}

int generate(latte::v1::Inference::Stub& stub, const std::string& prompt, int max_new, const std::string& out_path) {
  latte::v1::GenerateRequest req;
  req.set_text(prompt);
  req.set_max_new_tokens(max_new);  // empty sampling: greedy
  grpc::ClientContext c;
  set_deadline(c);
  auto reader = stub.Generate(&c, req);
  latte::v1::GenerateResponse r, last;
  std::string text;
  int messages = 0;
  while (reader->Read(&r)) {
    text += r.text();
    last = r;
    ++messages;
  }
  const grpc::Status s = reader->Finish();
  if (!s.ok()) return failed("Generate", s);
  std::ofstream(out_path, std::ios::binary) << text;
  std::printf("prompt_tokens %d completion_tokens %d finish %s messages %d\n", last.usage().prompt_tokens(),
              last.usage().completion_tokens(), latte::v1::FinishReason_Name(last.finish_reason()).c_str(), messages);
  return 0;
}

int info(latte::v1::Inference::Stub& stub) {
  grpc::ClientContext c;
  set_deadline(c);
  latte::v1::ModelInfoResponse m;
  const grpc::Status s = stub.ModelInfo(&c, latte::v1::ModelInfoRequest(), &m);
  if (!s.ok()) return failed("ModelInfo", s);
  std::printf("model %s tp %d attention %s\n", m.model_name().c_str(), m.tp_size(),
              latte::v1::AttentionKind_Name(m.attention()).c_str());
  return 0;
}

int health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext c;
  set_deadline(c);
  grpc::health::v1::HealthCheckResponse r;
  const grpc::Status s = stub->Check(&c, grpc::health::v1::HealthCheckRequest(), &r);
  if (!s.ok()) return failed("Health.Check", s);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(r.status()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = "usage: shard_client ADDR generate PROMPT MAX_NEW TEXT_FILE | ADDR info | ADDR health";
  if (argc < 3) {
    std::cerr << usage << "\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = latte::v1::Inference::NewStub(channel);
  const std::string cmd = argv[2];
  if (cmd == "generate" && argc == 6) return generate(*stub, argv[3], std::stoi(argv[4]), argv[5]);
  if (cmd == "info" && argc == 3) return info(*stub);
  if (cmd == "health" && argc == 3) return health(channel);
  std::cerr << usage << "\n";
  return 2;
}
