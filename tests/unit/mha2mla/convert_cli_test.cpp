// `latte convert` as a user meets it: a run writes a loadable MLA folder with its tokenizer and
// prints the report; every malformed input exits non-zero with one line on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/unit/mha2mla/mha2mla_test_util.h"

namespace latte {
namespace {

const std::string kLatte = std::string(LATTE_BINARY_DIR) + "/bin/latte";

struct CliRun {
  int code;
  std::string out, err;
};

CliRun run(const std::string& args) {
  const std::string err_file =
      std::filesystem::temp_directory_path() / ("latte_convert_err_" + std::to_string(::getpid()));
  CliRun r{};
  FILE* p = ::popen((kLatte + " " + args + " 2>" + err_file).c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.err = read_file_bytes(err_file);
  std::filesystem::remove(err_file);
  return r;
}

void expect_one_line_error(const std::string& args, const std::string& must_contain) {
  const CliRun r = run(args);
  EXPECT_NE(r.code, 0) << args;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << args << "\n" << r.err;
}

TEST(ConvertCli, WritesAnMlaFolderWithTokenizerAndReport) {
  ScratchDir dir;
  const std::string out = dir / "mla";
  const CliRun r = run("convert -q --model " + stories_path() + " --out " + out + " --calib " + calib_text_path() +
                       " --calib-tokens 1000 --d-kv 4");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"2norm", "d_kv = 4", "SVD energy", "parameters", "KV cache bytes/token bf16", "-62.50 %"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " not in\n" << r.out;
  EXPECT_TRUE(file_exists(out + "/tokenizer.bin"));
  EXPECT_EQ(read_file_bytes(out + "/tokenizer.bin"), read_file_bytes(stories_tokenizer_path()));
  const Checkpoint mla = load_checkpoint(out);
  EXPECT_EQ(mla.config.architecture, "mla");
  EXPECT_EQ(mla.config.kv_rank_per_head, 4);
  EXPECT_EQ(mla.config.rope_pairs, 1);  // max(1, 8/16)
  EXPECT_NE(mla.config.mla_provenance.find("\"calib_tokens\":1000"), std::string::npos) << mla.config.mla_provenance;
  // The output is an MLA model: converting it again is refused.
  expect_one_line_error("convert --model " + out + " --out " + (dir / "again") + " --rope-strategy high",
                        "already an MLA model");
}

// --init pca: the report sets both methods' activation energies side by side and the provenance
// records the per-layer key scales; the same text with --init svd gives the svd weights of a run
// without it (the text only feeds the report).
TEST(ConvertCli, PcaInitReportsActivationEnergiesForBothMethods) {
  ScratchDir dir;
  const std::string calib = " --calib " + calib_text_path() + " --calib-tokens 1000";
  const CliRun r = run("convert -q --model " + stories_path() + " --out " + (dir / "pca") + calib +
                       " --rope-strategy uniform --d-kv 4 --init pca");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"balanced PCA", "svd keys", "pca values", "alpha", "the pca columns"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " not in\n" << r.out;
  const Checkpoint pca = load_checkpoint(dir / "pca");
  EXPECT_NE(pca.config.mla_provenance.find("\"init\":\"pca\""), std::string::npos) << pca.config.mla_provenance;
  EXPECT_NE(pca.config.mla_provenance.find("\"pca_key_scale\":["), std::string::npos) << pca.config.mla_provenance;

  ASSERT_EQ(run("convert -q --model " + stories_path() + " --out " + (dir / "pca1") + calib +
                " --rope-strategy uniform --d-kv 4 --init pca --pca-key-scale 1").code, 0);
  const Checkpoint pca1 = load_checkpoint(dir / "pca1");
  EXPECT_NE(pca1.config.mla_provenance.find("\"pca_key_scale\":[1.0,1.0,1.0,1.0,1.0]"), std::string::npos)
      << pca1.config.mla_provenance;
  ASSERT_EQ(run("convert -q --model " + stories_path() + " --out " + (dir / "svd_calib") + calib +
                " --rope-strategy uniform --d-kv 4").code, 0);
  ASSERT_EQ(run("convert -q --model " + stories_path() + " --out " + (dir / "svd") + " --rope-strategy uniform --d-kv 4")
                .code, 0);
  EXPECT_EQ(read_file_bytes(dir / "svd_calib/model.safetensors"), read_file_bytes(dir / "svd/model.safetensors"));
  EXPECT_NE(read_file_bytes(dir / "pca/model.safetensors"), read_file_bytes(dir / "svd/model.safetensors"));
}

// --rope-mode rorope: one shared RoPE key; every component kept (d_r = 4 KV heads x 8) with a
// full-rank latent is the source's perplexity; latte info reports the shared key's cache formula.
TEST(ConvertCli, RoropeWritesTheSharedKeyLayout) {
  ScratchDir dir;
  const std::string calib = " --calib " + calib_text_path() + " --calib-tokens 1000";
  const CliRun r = run("convert -q --model " + stories_path() + " --out " + (dir / "rorope") + calib +
                       " --rope-mode rorope --rope-dims 8 --d-kv 4 --init pca");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"RoRoPE: one shared RoPE key of d_r = 8 dims", "share of the keys' energy", "-62.50 %"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " not in\n" << r.out;
  const Checkpoint mla = load_checkpoint(dir / "rorope");
  EXPECT_TRUE(mla.config.shared_rope());
  EXPECT_EQ(mla.config.shared_rope_dim, 8);
  EXPECT_NE(mla.config.mla_provenance.find("\"rope_mode\":\"rorope\""), std::string::npos) << mla.config.mla_provenance;
  const CliRun info = run("info --model " + (dir / "rorope"));
  ASSERT_EQ(info.code, 0) << info.err;
  // d_r + n_kv*d_kv = 8 + 4*4 = 24 per layer; 5 layers -> 120 elements.
  EXPECT_NE(info.out.find("d_r + n_kv*d_kv = 8 + 4*4 = 24 elements"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("120 elements/token"), std::string::npos) << info.out;

  ASSERT_EQ(run("convert -q --model " + stories_path() + " --out " + (dir / "exact") + calib +
                " --rope-mode rorope --rope-dims 32 --d-kv 8").code, 0);
  const std::string text = " --text " + calib_text_path() + " --max-chars 3000 -q --json";
  const CliRun src = run("perplexity --model " + stories_path() + text), exact = run("perplexity --model " + (dir / "exact") + text);
  ASSERT_EQ(src.code, 0) << src.err;
  ASSERT_EQ(exact.code, 0) << exact.err;
  auto ppl = [](const std::string& json) { return std::stod(json.substr(json.find("\"perplexity\":") + 13)); };
  EXPECT_NEAR(ppl(exact.out), ppl(src.out), 1e-4 * ppl(src.out)) << exact.out << src.out;

  const std::string m = stories_path(), out = " --out " + (dir / "out");
  expect_one_line_error("convert --model " + m + out + " --rope-mode rorope", "--rope-mode rorope needs a calibration text");
  expect_one_line_error("convert --model " + m + out + calib + " --rope-mode rorope --rope-dims 33",
                        "--rope-dims d_r = 33 must be even and in [2, n_kv_heads*head_dim = 32]");
  expect_one_line_error("convert --model " + m + out + calib + " --rope-mode rorope --rope-strategy high",
                        "--rope-strategy applies to --rope-mode partial");
  expect_one_line_error("convert --model " + m + out + calib + " --rope-dims 8", "--rope-dims applies to --rope-mode rorope");
  expect_one_line_error("convert --model " + m + out + calib + " --rope-mode spiral", "rope-mode");
  EXPECT_FALSE(std::filesystem::exists(dir / "out")) << "a refused conversion wrote output";
}

TEST(ConvertCli, BpeTokenizerIsWrittenAsTokenizerJson) {
  if (!is_directory(smollm2_dir())) GTEST_SKIP() << smollm2_dir() << " is absent (bash launch/get-smollm2 fetches it)";
  ScratchDir dir;
  const CliRun r = run("convert -q --model " + smollm2_dir() + " --out " + (dir / "mla") +
                       " --rope-strategy high --rope-pairs 4 --d-kv 8");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("-87.50 %"), std::string::npos) << r.out;
  EXPECT_TRUE(file_exists(dir / "mla/tokenizer.json"));
  const Checkpoint mla = load_checkpoint(dir / "mla");
  ASSERT_NE(mla.tokenizer, nullptr);
  EXPECT_EQ(mla.tokenizer->vocab_size(), 49152);
}

// A sharded bf16 folder is converted layer by layer: per-layer progress on stderr, sharded output
// with an index, copied tensors still bf16, computed factors f32, the tokenizer beside it; --dtype
// f32 gives the same values all in f32.
TEST(ConvertCli, ShardedFolderIsConvertedLayerByLayer) {
  ScratchDir dir;
  {
    std::ofstream cfg(dir / "config.json");
    cfg << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": false})";
  }
  const CliRun made = run("make-model -q --config " + (dir / "config.json") + " -o " + (dir / "src") +
                          " --max-shard-gib 0.00003");
  ASSERT_EQ(made.code, 0) << made.err;
  ASSERT_TRUE(file_exists(dir / "src/model.safetensors.index.json"));
  const CliRun r = run("convert --model " + (dir / "src") + " --out " + (dir / "mla") +
                       " --rope-strategy uniform --shard-size 0.00002");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"layer 1/3 converted", "layer 3/3 converted", "ETA", "resident"})
    EXPECT_NE(r.err.find(s), std::string::npos) << s << " not in\n" << r.err;
  for (const char* s : {"model-*-of-*.safetensors + index", "source dtypes, factors f32", "tokenizer",
                        "peak resident memory"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " not in\n" << r.out;
  EXPECT_TRUE(file_exists(dir / "mla/model.safetensors.index.json"));
  EXPECT_TRUE(file_exists(dir / "mla/tokenizer.bin"));
  const Checkpoint mla = load_checkpoint(dir / "mla");
  EXPECT_EQ(mla.tensors.get("model.embed_tokens.weight").dtype(), DType::bf16);
  EXPECT_EQ(mla.tensors.get("model.layers.2.self_attn.q_proj.weight").dtype(), DType::bf16);
  EXPECT_EQ(mla.tensors.get("model.layers.2.self_attn.kv_a_proj.weight").dtype(), DType::f32);

  const CliRun f = run("convert -q --model " + (dir / "src") + " --out " + (dir / "mla32") +
                       " --rope-strategy uniform --dtype f32 --shard-size 0");
  ASSERT_EQ(f.code, 0) << f.err;
  EXPECT_TRUE(f.err.empty()) << f.err;  // -q: no progress
  EXPECT_TRUE(file_exists(dir / "mla32/model.safetensors"));
  const Checkpoint all_f32 = load_checkpoint(dir / "mla32");
  for (const auto& [name, e] : all_f32.tensors.entries()) {
    EXPECT_EQ(e.tensor.dtype(), DType::f32) << name;
    EXPECT_EQ(e.tensor.to_vector(), mla.tensors.get(name).to_vector()) << name;
  }
}

TEST(ConvertCli, HelpListsTheOptions) {
  const CliRun r = run("convert --help");
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"--model", "--out", "--rope-strategy", "--rope-pairs", "--d-kv", "--svd", "--calib",
                        "--calib-tokens", "--sigma-split", "--tokenizer", "--init", "--pca-key-scale", "--rope-mode",
                        "--rope-dims"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}

TEST(ConvertCli, MalformedInputsGiveOneLine) {
  ScratchDir dir;
  const std::string m = stories_path(), out = " --out " + (dir / "out");
  const std::string calib = " --calib " + calib_text_path();
  expect_one_line_error("convert" + out, "--model");
  expect_one_line_error("convert --model " + m, "--out");
  expect_one_line_error("convert --model /nonexistent/model.bin" + out + " --rope-strategy high", "/nonexistent/model.bin");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy middle", "rope-strategy");
  expect_one_line_error("convert --model " + m + out + " --svd qr --rope-strategy high", "svd");
  expect_one_line_error("convert --model " + m + out + " --sigma-split half --rope-strategy high", "sigma-split");
  expect_one_line_error("convert --model " + m + out, "--calib FILE");  // 2norm is the default
  expect_one_line_error("convert --model " + m + out + " --init qr --rope-strategy high", "init");
  expect_one_line_error("convert --model " + m + out + " --init pca --rope-strategy high",
                        "--init pca needs a calibration text (--calib FILE)");
  expect_one_line_error("convert --model " + m + out + " --init pca --svd split" + calib,
                        "--svd split applies to --init svd only");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --pca-key-scale 2",
                        "--pca-key-scale applies to --init pca only");
  expect_one_line_error("convert --model " + m + out + " --init pca --pca-key-scale -1" + calib, "pca-key-scale");
  write_file_bytes(dir / "short.txt", "Once upon a time");
  expect_one_line_error("convert --model " + m + out + " --init pca --rope-strategy high --calib " + (dir / "short.txt"),
                        "gives only 4 tokens (of at most 32768); --init pca with latent width D = 8 needs at least 8");
  expect_one_line_error("convert --model " + m + out + " --calib /nonexistent.txt", "/nonexistent.txt");
  expect_one_line_error("convert --model " + m + out + calib + " --calib-tokens 0", "calib-tokens");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --rope-pairs 9", "[0, head_dim/2 = 4]");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --d-kv 0", "at least 1");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --d-kv 99",
                        "larger than possible: at most 14 for r=1");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --svd split --d-kv 13",
                        "at most 12 for r=1");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy uniform --rope-pairs 3", "uniform");
  expect_one_line_error("convert --model " + m + out + " --rope-strategy high --tokenizer /nonexistent.bin",
                        "/nonexistent.bin");
  write_file_bytes(dir / "empty.txt", "");
  expect_one_line_error("convert --model " + m + out + " --calib " + (dir / "empty.txt"), "is empty");
  expect_one_line_error("convert --model " + m + " --out " + m + " --rope-strategy high", "is the source model");
  EXPECT_FALSE(std::filesystem::exists(dir / "out")) << "a refused conversion wrote output";
}

}  // namespace
}  // namespace latte

namespace latte {
namespace {

// latte info on an MLA conversion reports n_kv * (2r + d_kv) elements per layer per token.
TEST(ConvertCli, InfoReportsTheLatentCacheFormula) {
  const std::string latte = std::string(LATTE_BINARY_DIR) + "/bin/latte";
  const std::string out = (std::filesystem::temp_directory_path() / ("latte_info_mla_" + std::to_string(::getpid()))).string();
  const std::string model = std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin";
  ASSERT_EQ(std::system((latte + " convert --model " + model + " --out " + out +
                         " --rope-strategy high --rope-pairs 1 --d-kv 4 > /dev/null").c_str()), 0);
  FILE* p = ::popen((latte + " info --model " + out).c_str(), "r");
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  EXPECT_EQ(::pclose(p), 0);
  // 4 KV heads * (2*1 + 4) = 24 per layer; 5 layers -> 120 elements = 480 B in f32.
  EXPECT_NE(text.find("n_kv*(2r+d_kv) = 4*(2+4) = 24 elements"), std::string::npos) << text;
  EXPECT_NE(text.find("120 elements/token = 480 B/token f32"), std::string::npos) << text;
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace latte
