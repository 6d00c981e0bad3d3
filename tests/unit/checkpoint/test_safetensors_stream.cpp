// The streaming safetensors writers: tensor by tensor they give the same bytes as a whole-model
// save, they refuse tensors out of plan, and nothing appears until a file is complete.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_stream_writer.h"
#include "tests/unit/checkpoint/test_util.h"

namespace latte {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> weight_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SafetensorsStream, TensorByTensorEqualsTheWholeSaveByteForByte) {
  for (size_t max_shard : {size_t(0), size_t(300000)}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      ScratchDir dir;
      Checkpoint src = load_llama2c(stories_path());
      SaveOptions opts;
      opts.dtype = dtype;
      opts.max_shard_bytes = max_shard;
      save_safetensors_dir(dir / "whole", src.config, src.tensors, opts);

      SafetensorsDirWriter w(dir / "streamed", model_write_plan(src.config), dtype, max_shard);
      for (const PlannedTensor& t : model_write_plan(src.config)) w.write(t.name, src.tensors.get(t.name));
      w.finish(src.config);

      const auto files = weight_files(dir / "whole");
      ASSERT_EQ(files, weight_files(dir / "streamed"));
      EXPECT_EQ(files.size(), max_shard ? w.shard_count() + 2 : 2u);  // + index + config / + config
      for (const std::string& f : files)
        EXPECT_EQ(read_file_bytes(dir / ("whole/" + f)), read_file_bytes(dir / ("streamed/" + f))) << f;
    }
  }
}

TEST(SafetensorsStream, RefusesATensorOutOfPlanNamingBoth) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  const auto plan = model_write_plan(src.config);
  SafetensorsDirWriter w(dir.str(), plan, DType::f32, 0);
  expect_error([&] { w.write(plan[1].name, src.tensors.get(plan[1].name)); }, ErrorCode::invalid_argument,
               {plan[1].name, plan[0].name, "next"});
  const Tensor wrong = Tensor::zeros({3, 5});
  expect_error([&] { w.write(plan[0].name, wrong); }, ErrorCode::shape_mismatch, {plan[0].name, "[3, 5]"});
}

TEST(SafetensorsStream, AnUnfinishedSaveLeavesNoWeightFile) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  const auto plan = model_write_plan(src.config);
  {
    SafetensorsDirWriter w(dir.str(), plan, DType::f32, 300000);
    for (size_t i = 0; i + 1 < plan.size(); ++i) w.write(plan[i].name, src.tensors.get(plan[i].name));
    expect_error([&] { w.finish(src.config); }, ErrorCode::invalid_argument, {"not written", plan.back().name});
  }
  // The complete shards were committed; the last one, the index and config.json never appeared,
  // so the folder does not load as a model, and no temp file is left.
  EXPECT_FALSE(file_exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(dir / "config.json"));
  for (const std::string& f : weight_files(dir.str())) EXPECT_EQ(f.find(".tmp."), std::string::npos) << f;
  EXPECT_THROW(load_safetensors_dir(dir.str()), Error);
}

// A save killed mid-write (SIGKILL: no destructor runs) leaves "<shard>.tmp.<pid>"; the next save
// into the folder removes it once that process is gone, and leaves a live process's temp file and
// files that are not its own alone.
TEST(SafetensorsStream, ASaveRemovesTheTempFilesOfKilledSaves) {
  ScratchDir dir;
  Checkpoint src = load_llama2c(stories_path());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    AtomicFile f(dir / "model-00001-of-00002.safetensors");
    f.write("partial", 7);
    ::raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  const std::string orphan = "model-00001-of-00002.safetensors.tmp." + std::to_string(child);
  ASSERT_TRUE(file_exists(dir / orphan));
  const std::string live = "model.safetensors.tmp.1";  // pid 1 runs as long as the machine does
  const std::string not_ours = "notes.txt.tmp.999999999";
  atomic_write_string(dir / live, "x");
  atomic_write_string(dir / not_ours, "x");

  SafetensorsDirWriter w(dir.str(), model_write_plan(src.config), DType::f32, 0);
  for (const PlannedTensor& t : model_write_plan(src.config)) w.write(t.name, src.tensors.get(t.name));
  w.finish(src.config);
  EXPECT_FALSE(file_exists(dir / orphan));
  EXPECT_TRUE(file_exists(dir / live));
  EXPECT_TRUE(file_exists(dir / not_ours));
  EXPECT_NO_THROW(load_safetensors_dir(dir.str()));
}

TEST(AtomicFile, AppearsOnlyOnCommit) {
  ScratchDir dir;
  const std::string path = dir / "f.bin";
  {
    AtomicFile f(path);
    f.write("abc", 3);
    EXPECT_FALSE(file_exists(path));
    EXPECT_EQ(f.bytes_written(), 3u);
  }
  EXPECT_FALSE(file_exists(path));
  EXPECT_TRUE(weight_files(dir.str()).empty());  // the temp file went with it
  AtomicFile f(path);
  f.write("abcd", 4);
  f.commit();
  EXPECT_EQ(read_file_bytes(path), "abcd");
  expect_error([&] { f.write("x", 1); }, ErrorCode::internal, {"after it was committed"});
}

}  // namespace
}  // namespace latte
