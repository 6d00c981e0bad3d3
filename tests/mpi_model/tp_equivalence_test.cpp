// Tensor parallelism inside the model against the single-rank model: every rank builds the whole
// model without a communicator (the reference) and its TP shard (shard_store of the same weights)
// on the same tokens, then
//  - the TP model's gathered logits (KV-cache forward, all positions) and its training loss equal
//    the reference's within kTpRelTol (model_test_util.h says why that tolerance);
//  - every local gradient shard equals the matching slice of the reference's gradients,
//    shard_store(config, layout, weights_to_store(config, full_grads));
//  - in an MLA TP group the latent cache is bit-identical on every rank after a prefill and 16
//    decode steps (absorbed form), and each step's logits match the reference's.
// Models: the shipped stories260K (GQA 8/4, tied), a random MLA config (8 heads, 4 KV heads, r 1,
// d_kv 6; tied and untied), the same in DeepSeek's layout (one shared RoPE key of 6 dims, its W_kr
// and cache replicated on every rank) and random llama MHA configs (tied and untied). TP = world
// size, and TP = 2 at 4 ranks (two TP groups side by side).
#include "tests/mpi_model/model_test_util.h"

#include "core/backend/registry.h"

namespace latte::test {
namespace {

std::vector<ModelCase> tp_cases() {
  std::vector<ModelCase> out;
  out.push_back(stories260k());
  out.push_back(random_case("mla_untied", mla_config(false), 11));
  out.push_back(random_case("mla_tied", mla_config(true), 12));
  out.push_back(random_case("mla_shared_rope", mla_shared_rope_config(false), 15));
  out.push_back(random_case("mla_shared_tied", mla_shared_rope_config(true), 16));
  out.push_back(random_case("llama_mha_untied", llama_mha_config(false), 13));
  out.push_back(random_case("llama_mha_tied", llama_mha_config(true), 14));
  return out;
}

TEST(TpEquivalenceTest, LogitsLossAndEveryGradientMatchTpOne) {
  for (int tp : tp_sizes()) {
    ParallelRuntime rt(quiet(tp));
    Communicator& comm = rt.tp();
    ASSERT_EQ(comm.size(), tp);
    for (const ModelCase& m : tp_cases()) {
      SCOPED_TRACE(m.name + " tp " + std::to_string(tp));
      const ModelConfig& c = m.config;
      const TpLayout layout = tp_layout(c, comm.rank(), comm.size());
      Transformer ref(c, m.weights, cpu_backend());
      Transformer par(c, rank_weights(c, layout, m.weights), cpu_backend(), &comm);
      ASSERT_EQ(par.tp().size, tp);

      // Inference logits: two rows of 12 tokens through the KV-cache path, every position.
      TokenBatch b = random_batch(c.vocab_size, 2, 12, 100 + uint32_t(tp));
      KvCache rc = ref.make_cache(b.rows, 16), pc = par.make_cache(b.rows, 16);
      Tensor ref_logits = ref.forward(b.tokens, b.rows, rc, LogitsFor::all_positions);
      Tensor par_logits = par.forward(b.tokens, b.rows, pc, LogitsFor::all_positions);
      double worst_logits = expect_close(par_logits, ref_logits, "logits");

      // Training: loss, then every gradient.
      Activations ra, pa;
      const float ref_loss = ref.forward_train(b.tokens, b.targets, b.rows, ra);
      const float par_loss = par.forward_train(b.tokens, b.targets, b.rows, pa);
      EXPECT_NEAR(par_loss, ref_loss, kTpRelTol * std::abs(ref_loss)) << "loss";
      ModelWeights ref_grads = weights_zeros_like(c), par_grads = weights_zeros_like(c, layout);
      ref.backward(ra, ref_grads);
      par.backward(pa, par_grads);
      const TensorStore expected = shard_store(c, layout, weights_to_store(c, ref_grads));
      double worst_grad = 0;
      std::string worst_name;
      int checked = 0;
      for_each_weight(c, layout, par_grads, [&](const std::string& name, const Shape& shape, Tensor& g) {
        const double rel = expect_close(g, expected.get(name, shape), "gradient of " + name);
        if (rel > worst_grad) {
          worst_grad = rel;
          worst_name = name;
        }
        ++checked;
      });
      EXPECT_EQ(checked, int(model_tensor_shapes(c).size()));
      worst_logits = world_max(worst_logits);
      worst_grad = world_max(worst_grad);
      measured("tp %d %-17s logits rel %.2e, loss %.7f vs %.7f, worst gradient rel %.2e (%s on rank 0)", tp,
               m.name.c_str(), worst_logits, par_loss, ref_loss, worst_grad, worst_name.c_str());
    }
  }
}

// The decode loop of generation on an MLA TP group: a prefill of 7 tokens (expanded form), then 16
// single-token steps (absorbed form). The latent is replicated by design (W_dkv replicated, the
// layer input replicated after the all-reduces), so every rank must hold the same bytes; a rank
// whose latent drifts would decode against a different cache than its peers.
// In DeepSeek's layout the one shared RoPE key is replicated as well: every rank caches all of it.
TEST(TpEquivalenceTest, MlaLatentCacheIsBitIdenticalAcrossTheGroupAndLogitsMatch) {
  for (const ModelCase& m : {random_case("mla", mla_config(false), 21),
                             random_case("mla_shared_rope", mla_shared_rope_config(false), 22)}) {
    const ModelConfig& c = m.config;
    for (int tp : tp_sizes()) {
      SCOPED_TRACE(m.name + " tp " + std::to_string(tp));
      ParallelRuntime rt(quiet(tp));
      Communicator& comm = rt.tp();
      const TpLayout layout = tp_layout(c, comm.rank(), comm.size());
      Transformer ref(c, m.weights, cpu_backend());
      Transformer par(c, rank_weights(c, layout, m.weights), cpu_backend(), &comm);
      const int64_t B = 2, prefill = 7, steps = 16, max_seq = prefill + steps;
      TokenBatch b = random_batch(c.vocab_size, B, max_seq, 31);
      auto row_tokens = [&](int64_t t0, int64_t n) {
        std::vector<int32_t> out;
        for (int64_t r = 0; r < B; ++r)
          for (int64_t t = t0; t < t0 + n; ++t) out.push_back(b.tokens[size_t(r * max_seq + t)]);
        return out;
      };
      KvCache rc = ref.make_cache(B, max_seq), pc = par.make_cache(B, max_seq);
      double worst = 0;
      {
        std::vector<int32_t> p = row_tokens(0, prefill);
        worst = std::max(worst, expect_close(par.forward(p, B, pc, LogitsFor::last_position),
                                             ref.forward(p, B, rc, LogitsFor::last_position), "prefill logits"));
      }
      for (int64_t s = 0; s < steps; ++s) {
        std::vector<int32_t> t = row_tokens(prefill + s, 1);
        worst = std::max(worst, expect_close(par.forward(t, B, pc, LogitsFor::last_position, MlaForm::absorbed),
                                             ref.forward(t, B, rc, LogitsFor::last_position, MlaForm::absorbed),
                                             "decode step " + std::to_string(s) + " logits"));
      }
      EXPECT_EQ(pc.length, max_seq);
      ASSERT_EQ(int64_t(pc.latent.size()), c.n_layers);
      double latent_vs_ref = 0;
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const Tensor& lat = pc.latent[size_t(l)];
        ASSERT_EQ(shape_str(lat.shape()), shape_str(Shape{B, max_seq, c.kv_lora_rank()}));
        Tensor flat = lat.reshape({lat.numel()});
        Tensor all = Tensor::empty({comm.size() * lat.numel()});
        comm.all_gather(all, flat);
        for (int r = 0; r < comm.size(); ++r) {
          EXPECT_EQ(std::memcmp(all.f32() + r * lat.numel(), flat.f32(), flat.nbytes()), 0)
              << "layer " << l << ": the latent cache of TP rank " << r << " differs from TP rank " << comm.rank()
              << "'s";
        }
        latent_vs_ref = std::max(latent_vs_ref, expect_close(lat, rc.latent[size_t(l)], "latent of layer " + std::to_string(l)));
        // This rank's RoPE keys are its KV heads' slice of the reference's; a shared key is all of it,
        // the same bytes on every rank.
        const Tensor& kr = rc.k_rope[size_t(l)];
        if (c.shared_rope()) {
          const Tensor& mine = pc.k_rope[size_t(l)];
          ASSERT_EQ(shape_str(mine.shape()), shape_str(Shape{B, max_seq, 1, c.shared_rope_dim}));
          expect_close(mine, kr, "shared RoPE key of layer " + std::to_string(l));
          Tensor flat = mine.reshape({mine.numel()});
          Tensor all = Tensor::empty({comm.size() * mine.numel()});
          comm.all_gather(all, flat);
          for (int r = 0; r < comm.size(); ++r)
            EXPECT_EQ(std::memcmp(all.f32() + r * mine.numel(), flat.f32(), flat.nbytes()), 0)
                << "layer " << l << ": the shared RoPE key cache of TP rank " << r << " differs";
        } else {
          expect_close(pc.k_rope[size_t(l)], kr.narrow(2, layout.kv_heads0, layout.kv_heads0 + layout.kv_heads).clone(),
                       "RoPE keys of layer " + std::to_string(l));
        }
      }
      worst = world_max(worst);
      latent_vs_ref = world_max(latent_vs_ref);
      measured("tp %d %s decode: latent bit-identical across the TP group; prefill + 16 steps logits rel %.2e, "
               "latent vs tp 1 rel %.2e", tp, m.name.c_str(), worst, latent_vs_ref);
    }
  }
}

}  // namespace
}  // namespace latte::test
