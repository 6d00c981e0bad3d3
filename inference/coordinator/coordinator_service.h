// latte.v1.Inference as the coordinator serves it: Generate relayed to the chosen group,
// Tokenize and ModelInfo forwarded to any healthy group, Stats gathered from all of them.
#pragma once
#include "inference/coordinator/coordinator_state.h"
#include "latte/v1/inference.grpc.pb.h"

namespace latte::coordinator {

class CoordinatorService final : public latte::v1::Inference::CallbackService {
 public:
  explicit CoordinatorService(CoordinatorState& state) : state_(state) {}

  grpc::ServerWriteReactor<latte::v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                                  const latte::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const latte::v1::TokenizeRequest* request,
                                     latte::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context, const latte::v1::ModelInfoRequest* request,
                                      latte::v1::ModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context, const latte::v1::StatsRequest* request,
                                  latte::v1::StatsResponse* response) override;

 private:
  CoordinatorState& state_;
};

}  // namespace latte::coordinator
