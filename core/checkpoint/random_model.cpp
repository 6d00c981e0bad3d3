#include "core/checkpoint/random_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/file_io.h"
#include "core/checkpoint/safetensors_stream_writer.h"
#include "core/model/model_tensors.h"

namespace latte {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Elements per independently seeded chunk: the unit of parallel work.
constexpr int64_t kChunk = 1 << 16;

}  // namespace

Tensor random_model_tensor(const std::string& name, const Shape& shape, const RandomModelOptions& o) {
  LATTE_REQUIRE(o.dtype == DType::bf16 || o.dtype == DType::f32, ErrorCode::unsupported, "random model: dtype ",
                dtype_name(o.dtype), " (use bf16 or f32)");
  Tensor t = Tensor::empty(shape, o.dtype);
  const int64_t n = t.numel();
  const bool is_norm = shape.size() == 1;  // RMSNorm gains: 1, as a fresh model has them
  // Uniform on [-a, a] has standard deviation a / sqrt(3).
  const float a = o.init_std * std::sqrt(3.0f);
  const uint64_t tensor_seed = o.seed ^ fnv1a(name);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    uint64_t state = tensor_seed + uint64_t(c) * 0xd1b54a32d192ed03ULL;
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    for (int64_t i = begin; i < end; ++i) {
      // 24 random bits -> [0, 1) exactly representable in f32.
      const float u = float(splitmix64(state) >> 40) * (1.0f / 16777216.0f);
      const float v = is_norm ? 1.0f : a * (2.0f * u - 1.0f);
      if (o.dtype == DType::bf16)
        static_cast<uint16_t*>(t.raw())[i] = f32_to_bf16(v);
      else
        static_cast<float*>(t.raw())[i] = v;
    }
  }
  return t;
}

void write_random_model(const std::string& dir, const ModelConfig& config, const RandomModelOptions& o) {
  config.validate("random model");
  const std::vector<PlannedTensor> plan = model_write_plan(config);
  uint64_t total = 0, done = 0;
  for (const PlannedTensor& p : plan) {
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;
    total += uint64_t(n) * dtype_size(o.dtype);
  }
  SafetensorsDirWriter w(dir, plan, o.dtype, o.max_shard_bytes);
  for (size_t i = 0; i < plan.size(); ++i) {
    const Tensor t = random_model_tensor(plan[i].name, plan[i].shape, o);
    w.write(plan[i].name, t);
    done += uint64_t(t.numel()) * dtype_size(o.dtype);
    if (o.progress) o.progress(i + 1, plan.size(), done, total);
  }
  write_synthetic_llama2c_tokenizer((std::filesystem::path(dir) / "tokenizer.bin").string(), config.vocab_size);
  w.finish(config);  // config.json last: the folder is a model only once everything is there
}

void write_synthetic_llama2c_tokenizer(const std::string& path, int64_t vocab_size) {
  LATTE_REQUIRE(vocab_size >= 3 + 256, ErrorCode::invalid_argument, "synthetic tokenizer: vocab_size ", vocab_size,
                " is below the 259 pieces it needs (<unk>, <s>, </s> and 256 bytes)");
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.push_back(buf);
  }
  while (int64_t(pieces.size()) < vocab_size) pieces.push_back(" w" + std::to_string(pieces.size()));
  int32_t max_len = 0;
  for (const std::string& p : pieces) max_len = std::max(max_len, int32_t(p.size()));
  atomic_write(path, [&](FileWriter& f) {
    f.write(&max_len, 4);
    for (size_t i = 0; i < pieces.size(); ++i) {
      // Fillers rank below everything so that no merge of real text ever reaches one.
      const float score = i < 259 ? 0.0f : -1e6f - float(i);
      const int32_t len = int32_t(pieces[i].size());
      f.write(&score, 4);
      f.write(&len, 4);
      f.write(pieces[i].data(), pieces[i].size());
    }
  });
}

}  // namespace latte
