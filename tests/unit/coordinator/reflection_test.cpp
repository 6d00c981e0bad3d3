// Server reflection (what grpcurl uses to call the coordinator without the .proto files): the
// coordinator lists its services.
#include <grpcpp/generic/generic_stub.h>

#include "tests/unit/coordinator/coordinator_test_util.h"

namespace latte::test {
namespace {

// One CompletionQueue step; false when the operation failed or timed out.
bool step(grpc::CompletionQueue& cq, void* tag) {
  void* got = nullptr;
  bool ok = false;
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(10);
  if (cq.AsyncNext(&got, &ok, deadline) != grpc::CompletionQueue::GOT_EVENT) return false;
  return ok && got == tag;
}

// grpc.reflection.v1alpha ServerReflectionInfo with one list_services request, as raw bytes:
// field 7 (list_services, a string) = "" is 0x3a 0x00. The answer is returned unparsed.
std::string list_services(const std::string& address) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  set_deadline_ms(ctx, 10000);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  int tags[5];
  call->StartCall(&tags[0]);
  EXPECT_TRUE(step(cq, &tags[0]));
  const char request[] = {0x3a, 0x00};
  grpc::Slice slice(request, sizeof request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, &tags[1]);
  EXPECT_TRUE(step(cq, &tags[1]));
  call->WritesDone(&tags[2]);
  EXPECT_TRUE(step(cq, &tags[2]));
  grpc::ByteBuffer in;
  call->Read(&in, &tags[3]);
  EXPECT_TRUE(step(cq, &tags[3]));
  grpc::Status status;
  call->Finish(&status, &tags[4]);
  EXPECT_TRUE(step(cq, &tags[4]));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  std::vector<grpc::Slice> slices;
  in.Dump(&slices);
  std::string answer;
  for (const auto& s : slices) answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return answer;
}

TEST(CoordinatorReflection, ListsInferenceHealthAndReflection) {
  ScriptedShard a(ShardScript{});
  auto coord = start_coordinator(test_options({&a}));
  const std::string services = list_services(coord->address());
  EXPECT_NE(services.find("latte.v1.Inference"), std::string::npos);
  EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos);
  EXPECT_NE(services.find("grpc.reflection.v1alpha.ServerReflection"), std::string::npos);
}

}  // namespace
}  // namespace latte::test
