#include "inference/coordinator/coordinator_service.h"

#include "inference/coordinator/generate_relay.h"
#include "inference/coordinator/stats_fanout.h"
#include "inference/coordinator/unary_forward.h"

namespace latte::coordinator {

using namespace latte::v1;

grpc::ServerWriteReactor<GenerateResponse>* CoordinatorService::Generate(grpc::CallbackServerContext* context,
                                                                         const GenerateRequest* request) {
  return GenerateRelay::start(context, request, state_);
}

grpc::ServerUnaryReactor* CoordinatorService::Tokenize(grpc::CallbackServerContext* context,
                                                       const TokenizeRequest* request, TokenizeResponse* response) {
  return UnaryForward<TokenizeRequest, TokenizeResponse>::start(
      context, request, response, state_,
      [](Inference::Stub& stub, grpc::ClientContext* c, const TokenizeRequest* q, TokenizeResponse* r,
         std::function<void(grpc::Status)> done) { stub.async()->Tokenize(c, q, r, std::move(done)); });
}

grpc::ServerUnaryReactor* CoordinatorService::ModelInfo(grpc::CallbackServerContext* context,
                                                        const ModelInfoRequest* request, ModelInfoResponse* response) {
  return UnaryForward<ModelInfoRequest, ModelInfoResponse>::start(
      context, request, response, state_,
      [](Inference::Stub& stub, grpc::ClientContext* c, const ModelInfoRequest* q, ModelInfoResponse* r,
         std::function<void(grpc::Status)> done) { stub.async()->ModelInfo(c, q, r, std::move(done)); });
}

grpc::ServerUnaryReactor* CoordinatorService::Stats(grpc::CallbackServerContext* context, const StatsRequest*,
                                                    StatsResponse* response) {
  return StatsFanout::start(context, response, state_);
}

}  // namespace latte::coordinator
