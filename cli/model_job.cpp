#include "cli/model_job.h"

#include "cli/device_option.h"
#include "core/base/error.h"

namespace latte::cli {

ModelJob load_model_job(const std::string& command, int64_t tp, const std::string& device, ModelLoadRequest load) {
  resolve_device(device, false);  // an unusable --device fails here, before any rank starts
  ModelJob r;
  if (tp > 1) {
    r.job = start_parallel_job(tp, false);
    LATTE_REQUIRE(r.job->dp().size() == 1, ErrorCode::invalid_argument, command, " --tp ", tp, " runs on exactly ", tp,
                  " ranks, not ", r.job->world().size());
    load.tp = &r.job->tp();
  }
  r.lead = !r.job || r.job->world().rank() == 0;
  load.backend = &resolve_device(device, r.lead);
  r.model = load_model(load);
  return r;
}

}  // namespace latte::cli
