#include "trainer/train_state/train_checkpoint.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/base/file_io.h"
#include "core/base/json_integer.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_file.h"

namespace latte {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

std::string model_file(int64_t tp) { return str_cat("model-tp", tp, ".safetensors"); }
std::string optim_file(int64_t tp, int64_t dp) { return str_cat("optim-tp", tp, "-dp", dp, ".safetensors"); }

json layout_json(const TrainLayout& l) {
  return {{"tp_size", l.tp_size}, {"dp_size", l.dp_size}, {"zero1", l.zero1}};
}

}  // namespace

void save_train_checkpoint(const std::string& out_dir, const CheckpointState& st, const TensorStore& model_shard,
                           const TensorStore& optim_state, Communicator& world) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  const fs::path partial = root / (step_name(st.step) + ".partial");
  const fs::path final_dir = root / step_name(st.step);
  // TEST HOOK, used only by tests/unit/cli/train_kill_test.cpp: LATTE_TEST_KILL_IN_SAVE=N makes the
  // save of step N kill this process with SIGKILL (as a crash or the OOM killer would) after every
  // file of step-N.partial is written and before the commit rename, so the test can check that
  // --resume ignores the half-made checkpoint. Unset (always, outside that test) it does nothing.
  const char* kill_in_save_env = std::getenv("LATTE_TEST_KILL_IN_SAVE");
  const bool kill_in_save = kill_in_save_env && std::strtoll(kill_in_save_env, nullptr, 10) == st.step;
  if (world.rank() == 0) {
    fs::create_directories(root);
    fs::remove_all(partial);  // a stale attempt from a killed run
    fs::create_directories(partial);
  }
  world.barrier();
  const TrainLayout& l = st.layout;
  if (l.dp_rank == 0) write_safetensors_file((partial / model_file(l.tp_rank)).string(), model_shard, DType::f32);
  if (l.dp_rank == 0 || l.zero1)
    write_safetensors_file((partial / optim_file(l.tp_rank, l.zero1 ? l.dp_rank : 0)).string(), optim_state, DType::f32);
  world.barrier();
  if (world.rank() == 0) {
    json j;
    j["step"] = st.step;
    j["seed"] = st.seed;
    j["layout"] = layout_json(l);
    j["config"] = json::parse(config_to_json_text(st.config));
    j["data"] = {{"path", st.data_path}, {"tokens", st.data_tokens}};
    j["optimizer"] = {{"steps", st.optim.steps}, {"total", st.optim.total}};
    if (!st.metrics_json.empty()) j["metrics"] = json::parse(st.metrics_json);
    atomic_write_string((partial / "state.json").string(), j.dump(2) + "\n");
    if (kill_in_save) std::raise(SIGKILL);  // TEST HOOK (see above): die before the commit
    fs::remove_all(final_dir);
    fs::rename(partial, final_dir);  // the commit point
    atomic_write_string((root / "latest").string(), step_name(st.step) + "\n");
  }
  world.barrier();
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::exists(root / "latest")) return std::nullopt;
  std::string name = read_text_file((root / "latest").string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  const fs::path dir = root / name;
  if (!fs::exists(dir / "state.json")) return std::nullopt;
  return dir.string();
}

CheckpointState parse_train_state_json(const std::string& text, const std::string& source) {
  CheckpointState st;
  // An integer field, refused by name when it is a float, a string or out of range.
  auto integer = [&]<typename T>(const json& v, const char* name, T) {
    const std::optional<T> x = json_integer<T>(v);
    if (!x) fail(ErrorCode::bad_file, source, ": \"", name, "\" is ", v.dump(), ", not an integer in range");
    return *x;
  };
  try {
    const json j = json::parse(text);
    st.step = integer(j.at("step"), "step", int64_t{});
    st.seed = integer(j.at("seed"), "seed", uint64_t{});
    const json& lj = j.at("layout");
    st.layout.tp_size = integer(lj.at("tp_size"), "layout.tp_size", int64_t{});
    st.layout.dp_size = integer(lj.at("dp_size"), "layout.dp_size", int64_t{});
    st.layout.zero1 = lj.at("zero1").get<bool>();
    st.data_path = j.at("data").at("path").get<std::string>();
    st.data_tokens = integer(j.at("data").at("tokens"), "data.tokens", int64_t{});
    st.optim.steps = integer(j.at("optimizer").at("steps"), "optimizer.steps", int64_t{});
    st.optim.total = integer(j.at("optimizer").at("total"), "optimizer.total", int64_t{});
    if (j.contains("metrics")) st.metrics_json = j["metrics"].dump();
    st.config = config_from_json_text(j.at("config").dump(), source);
  } catch (const json::exception& e) {
    fail(ErrorCode::bad_file, source, ": not a Latte training state (", e.what(), ")");
  }
  return st;
}

LoadedTrainState load_train_checkpoint(const std::string& dir, const TrainLayout& l, const ModelConfig& config,
                                       const std::string& data_path, int64_t data_tokens) {
  const std::string state_path = (fs::path(dir) / "state.json").string();
  LoadedTrainState out;
  CheckpointState& st = out.state;
  st = parse_train_state_json(read_text_file(state_path), state_path);
  LATTE_REQUIRE(config_to_json_text(st.config) == config_to_json_text(config), ErrorCode::bad_file, "cannot resume from ",
                dir, ": it is a checkpoint of another model (its config.json differs from --model's)");
  LATTE_REQUIRE(st.layout.tp_size == l.tp_size && st.layout.dp_size == l.dp_size && st.layout.zero1 == l.zero1,
                ErrorCode::bad_file, "cannot resume from ", dir, ": it was written with tp ", st.layout.tp_size, " dp ",
                st.layout.dp_size, " zero1 ", st.layout.zero1, ", this run has tp ", l.tp_size, " dp ", l.dp_size,
                " zero1 ", l.zero1);
  LATTE_REQUIRE(st.data_tokens == data_tokens, ErrorCode::bad_file, "cannot resume from ", dir, ": it trained on ",
                st.data_path, " (", st.data_tokens, " tokens), this run's --data ", data_path, " has ", data_tokens);
  st.layout = l;
  st.data_path = data_path;
  st.data_tokens = data_tokens;
  out.model_shard = read_safetensors_file((fs::path(dir) / model_file(l.tp_rank)).string());
  out.optim_state = read_safetensors_file((fs::path(dir) / optim_file(l.tp_rank, l.zero1 ? l.dp_rank : 0)).string());
  return out;
}

}  // namespace latte
