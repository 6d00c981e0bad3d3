// Server reflection, as grpcurl uses it: the ServerReflectionInfo stream lists the Inference and
// Health services and describes latte.v1.Inference's file. The reflection messages come from
// libgrpc++_reflection's generated descriptors (no header is installed for them), so the request
// and the answers are built and read as dynamic messages over a generic call.
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>
#include <grpcpp/generic/generic_stub.h>

#include "tests/unit/server/server_test_util.h"

namespace latte::test {
namespace {

namespace pb = google::protobuf;

const pb::Descriptor* reflection_type(const std::string& name) {
  const pb::Descriptor* d = pb::DescriptorPool::generated_pool()->FindMessageTypeByName("grpc.reflection.v1alpha." + name);
  EXPECT_NE(d, nullptr) << name << " is not in the generated descriptor pool";
  return d;
}

// One request on a ServerReflectionInfo stream; the answer in protobuf text format ("" on failure).
std::string ask_reflection(grpc::Channel& channel, const std::string& field, const std::string& value) {
  pb::DynamicMessageFactory factory;
  const pb::Descriptor* req_type = reflection_type("ServerReflectionRequest");
  const pb::Descriptor* resp_type = reflection_type("ServerReflectionResponse");
  if (!req_type || !resp_type) return "";
  std::unique_ptr<pb::Message> req(factory.GetPrototype(req_type)->New());
  req->GetReflection()->SetString(req.get(), req_type->FindFieldByName(field), value);
  std::string wire;
  req->SerializeToString(&wire);

  grpc::GenericStub stub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto next = [&](intptr_t want) { return cq.Next(&tag, &ok) && tag == reinterpret_cast<void*>(want) && ok; };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!next(1)) return "";
  grpc::Slice slice(wire);
  call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
  if (!next(2)) return "";
  grpc::ByteBuffer answer;
  call->Read(&answer, reinterpret_cast<void*>(3));
  if (!next(3)) return "";
  call->WritesDone(reinterpret_cast<void*>(4));
  next(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  EXPECT_TRUE(status.ok()) << status.error_message();

  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(answer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  std::unique_ptr<pb::Message> resp(factory.GetPrototype(resp_type)->New());
  EXPECT_TRUE(resp->ParseFromString(bytes));
  std::string text;
  pb::TextFormat::PrintToString(*resp, &text);
  return text;
}

TEST(ServerReflection, ListsTheServicesAndDescribesInference) {
  Served s(stories());
  const std::string services = ask_reflection(*s.channel, "list_services", "");
  EXPECT_NE(services.find("name: \"latte.v1.Inference\""), std::string::npos) << services;
  EXPECT_NE(services.find("name: \"grpc.health.v1.Health\""), std::string::npos) << services;
  const std::string file = ask_reflection(*s.channel, "file_containing_symbol", "latte.v1.Inference");
  EXPECT_NE(file.find("file_descriptor_response"), std::string::npos) << file;
  EXPECT_NE(file.find("latte/v1/inference.proto"), std::string::npos) << file;
}

}  // namespace
}  // namespace latte::test
