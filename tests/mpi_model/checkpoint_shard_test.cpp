// Sharded load and merged save, bit-exact. Every rank loads the full checkpoint and keeps its
// shard (shard_store, what the loaders do under --tp); the shard is checked byte for byte against
// a slicing written out here from the config alone (not through tensor_slice), then each rank
// writes it with write_safetensors_file into a folder shared by its TP group; after a barrier the
// group's rank 0 reads every shard, merges them (merge_shards), saves a standard folder
// (save_safetensors_dir), loads it back (load_checkpoint) and compares every tensor's bytes and
// the config with the original. Models: stories260K (llama2.c .bin) and a random MLA config
// (saved first as a safetensors folder). No tolerance: nothing here does arithmetic.
#include <filesystem>

#include "core/checkpoint/safetensors_file.h"
#include "tests/mpi_model/model_test_util.h"

namespace latte::test {
namespace {

namespace fs = std::filesystem;

// Which rows or columns of `name` TP rank `rank` of `size` holds, from the config alone.
TensorSlice expected_slice(const ModelConfig& c, int64_t rank, int64_t size, const std::string& name,
                           const Shape& shape) {
  auto ends_with = [&](const std::string& leaf) {
    return name.size() >= leaf.size() && name.compare(name.size() - leaf.size(), leaf.size(), leaf) == 0;
  };
  auto rows = [&](int64_t per_rank) { return TensorSlice{TpSplit::rows, rank * per_rank, per_rank}; };
  auto cols = [&](int64_t per_rank) { return TensorSlice{TpSplit::cols, rank * per_rank, per_rank}; };
  EXPECT_EQ(c.n_kv_heads % size, 0) << "the test's slicing assumes whole KV heads per rank";
  const int64_t kv = c.n_kv_heads / size;
  if (ends_with("embed_tokens.weight") || name == "lm_head.weight") return rows(c.vocab_size / size);
  if (ends_with("q_proj.weight")) return rows(c.n_heads / size * c.head_dim);
  if (ends_with("k_proj.weight") || ends_with("v_proj.weight") || ends_with("v_b_proj.weight"))
    return rows(kv * c.head_dim);
  if (ends_with("k_rope_proj.weight")) return rows(kv * 2 * c.rope_pairs);
  if (ends_with("k_b_proj.weight")) return rows(kv * (c.head_dim - 2 * c.rope_pairs));
  if (ends_with("gate_proj.weight") || ends_with("up_proj.weight")) return rows(c.hidden_dim / size);
  if (ends_with("o_proj.weight")) return cols(c.n_heads / size * c.head_dim);
  if (ends_with("down_proj.weight")) return cols(c.hidden_dim / size);
  return TensorSlice{TpSplit::replicated, 0, shape[0]};  // norms, MLA's kv_a_proj (W_dkv)
}

void round_trip(const std::string& name, const std::string& checkpoint_path, const std::string& dir, int tp) {
  SCOPED_TRACE(name + " tp " + std::to_string(tp));
  ParallelRuntime rt(quiet(tp));
  Communicator& comm = rt.tp();
  const Checkpoint full = load_checkpoint(checkpoint_path);
  const ModelConfig& c = full.config;
  const TpLayout layout = tp_layout(c, comm.rank(), comm.size());
  const TensorStore local = shard_store(c, layout, full.tensors);

  // The sharded load: each tensor is exactly its slice of the full one.
  int replicated = 0, split = 0;
  for (const auto& [tname, shape] : model_tensor_shapes(c)) {
    const TensorSlice s = expected_slice(c, comm.rank(), comm.size(), tname, shape);
    const Tensor& t = full.tensors.get(tname);
    Tensor want = s.split == TpSplit::rows   ? t.slice(s.begin, s.begin + s.count).clone()
                  : s.split == TpSplit::cols ? t.narrow(1, s.begin, s.begin + s.count).clone()
                                             : t;
    if (!local.has(tname)) {  // no ASSERT between collectives: an early return would hang the peers
      ADD_FAILURE() << tname << " is missing from rank " << comm.rank() << "'s shard";
      continue;
    }
    EXPECT_TRUE(bytes_equal(local.get(tname), want))
        << tname << ": rank " << comm.rank() << "'s shard " << shape_str(local.get(tname).shape())
        << " is not its slice " << shape_str(want.shape()) << " of the full tensor";
    (s.split == TpSplit::replicated ? replicated : split)++;
  }
  EXPECT_EQ(local.entries().size(), model_tensor_shapes(c).size());
  EXPECT_GT(split, 0);
  // The shard is what the model takes (shapes checked against the rank's layout).
  EXPECT_NO_THROW(weights_from_store(c, local, layout));

  // The merged save: shards to disk, merged by the group's first rank, saved, loaded back.
  const std::string group_dir = dir + "/" + name + "-tp" + std::to_string(tp) + "-dp" + std::to_string(rt.dp_rank());
  if (comm.rank() == 0) fs::create_directories(group_dir);
  comm.barrier();
  write_safetensors_file(group_dir + "/model-tp" + std::to_string(comm.rank()) + ".safetensors", local, DType::f32);
  rt.world().barrier();
  if (comm.rank() == 0) {
    std::vector<TensorStore> shards;
    for (int r = 0; r < comm.size(); ++r)
      shards.push_back(read_safetensors_file(group_dir + "/model-tp" + std::to_string(r) + ".safetensors"));
    const TensorStore merged = merge_shards(c, shards);
    save_safetensors_dir(group_dir + "/merged", c, merged);
    const Checkpoint back = load_checkpoint(group_dir + "/merged");
    EXPECT_EQ(config_to_json_text(back.config), config_to_json_text(c));
    EXPECT_EQ(back.tensors.entries().size(), full.tensors.entries().size());
    int same = 0;
    for (const auto& [tname, entry] : full.tensors.entries()) {
      if (!back.tensors.has(tname)) {
        ADD_FAILURE() << tname << " is missing after the round trip";
        continue;
      }
      const bool eq = bytes_equal(back.tensors.get(tname), entry.tensor);
      EXPECT_TRUE(eq) << tname << " changed in the shard / merge / save / load round trip";
      same += eq;
    }
    measured("%s tp %d: %d split + %d replicated tensors sliced exactly; %d/%zu tensors bit-identical after "
             "write_safetensors_file x%d, merge_shards, save_safetensors_dir, load_checkpoint",
             name.c_str(), tp, split, replicated, same, full.tensors.entries().size(), tp);
  }
  rt.world().barrier();
}

TEST(CheckpointShardTest, ShardedLoadAndMergedSaveRoundTripBitExactly) {
  const std::string dir = shared_temp_dir("ckpt");
  // The random MLA model as a checkpoint folder (rank 0 writes it, everyone reads it).
  const std::string mla_dir = dir + "/mla-full";
  if (world_rank() == 0) {
    const ModelCase m = random_case("mla", mla_config(false), 51);
    save_safetensors_dir(mla_dir, m.config, weights_to_store(m.config, m.weights));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (int tp : tp_sizes()) {
    round_trip("stories260K", kStoriesBin, dir, tp);
    round_trip("mla", mla_dir, dir, tp);
  }
  remove_shared_temp_dir(dir);
}

}  // namespace
}  // namespace latte::test
