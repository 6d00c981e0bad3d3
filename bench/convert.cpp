// The MHA2MLA conversion of a sharded bf16 checkpoint with a real model's shapes: the streamed,
// layer-at-a-time path (trainer/mha2mla/convert_streamed.h, what latte convert runs on a
// safetensors folder) against the in-memory path (convert_to_mla + export_checkpoint, the baseline
// it replaced), same process, same random checkpoint, same f32 output. Prints seconds for each,
// the ratio (in-memory / streamed: above 1 is faster), the growth of this process's resident
// memory during each, and whether the two outputs are byte-identical; then one JSON line.
//
//   build/bench/convert [--preset llama2-7b] [--layers 1] [--dir /tmp/latte_bench_convert]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/base/file_io.h"
#include "core/base/process_memory.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/random_model.h"
#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/convert_streamed.h"
#include "trainer/planner/planner.h"
#include "core/backend/cpu/openblas_kernels.h"

using namespace latte;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool same_files(const std::string& a, const std::string& b) {
  for (const auto& e : fs::directory_iterator(a)) {
    const std::string other = (fs::path(b) / e.path().filename()).string();
    if (!file_exists(other) || read_text_file(e.path().string()) != read_text_file(other)) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  std::string preset = "llama2-7b", dir = "/tmp/latte_bench_convert";
  int64_t layers = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--preset")) preset = argv[i + 1];
    else if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: convert [--preset NAME] [--layers N] [--dir DIR]\n");
      return 2;
    }
  }
  try {
    ModelConfig c = planner::preset(preset);
    c.n_layers = layers;
    fs::remove_all(dir);
    const std::string src = dir + "/src";
    RandomModelOptions ro;
    ro.max_shard_bytes = size_t(1) << 30;
    write_random_model(src, c, ro);
    ConvertOptions co;
    co.strategy = RopeStrategy::uniform;  // no calibration: the conversion itself is measured
    co.source_name = "bench";
    const size_t shard = size_t(1) << 30;

    int64_t rss0 = resident_bytes();
    auto t0 = std::chrono::steady_clock::now();
    {
      Checkpoint ck = load_checkpoint(src);
      Checkpoint mla = convert_to_mla(ck, co, nullptr);
      ExportOptions eo;
      eo.max_shard_bytes = shard;
      export_checkpoint(mla, dir + "/memory", eo);
    }
    const double memory_s = seconds_since(t0);
    const double memory_peak_growth = double(peak_resident_bytes() - rss0) / double(1 << 20);

    rss0 = resident_bytes();
    const int64_t peak_before = peak_resident_bytes();
    t0 = std::chrono::steady_clock::now();
    {
      StreamedConvertOptions so;
      so.convert = co;
      so.keep_source_dtype = false;
      so.max_shard_bytes = shard;
      convert_to_mla_streamed(load_checkpoint(src, {.check_finite = false}), dir + "/streamed", so, nullptr);
    }
    const double streamed_s = seconds_since(t0);
    // The high-water mark only rises: what the streamed run adds above the in-memory run's peak is
    // 0 when it stayed below it (its own figure is printed by latte convert).
    const double streamed_peak_above = double(peak_resident_bytes() - peak_before) / double(1 << 20);
    const bool identical = same_files(dir + "/memory", dir + "/streamed");
    std::printf("%s, %lld layer(s), bf16 source, f32 output\n", preset.c_str(), (long long)layers);
    std::printf("in-memory  %8.2f s   peak resident growth %8.0f MiB\n", memory_s, memory_peak_growth);
    std::printf("streamed   %8.2f s   peak above the in-memory run's %5.0f MiB (resident at start %0.0f MiB)\n",
                streamed_s, streamed_peak_above, double(rss0) / double(1 << 20));
    std::printf("ratio (in-memory / streamed time) %.2f; outputs byte-identical: %s\n", memory_s / streamed_s,
                identical ? "yes" : "NO");
    std::printf("{\"bench\":\"convert\",\"preset\":\"%s\",\"layers\":%lld,\"memory_s\":%.3f,\"streamed_s\":%.3f,"
                "\"ratio\":%.3f,\"memory_peak_growth_mib\":%.0f,\"identical\":%s}\n",
                preset.c_str(), (long long)layers, memory_s, streamed_s, memory_s / streamed_s, memory_peak_growth,
                identical ? "true" : "false");
    fs::remove_all(dir);
    return identical ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "convert bench: %s\n", e.what());
    return 1;
  }
}
