// Data parallelism: the batch's rows are split over the DP ranks (equal target counts per row, so
// the mean of the ranks' mean losses is the full batch's mean); each rank computes gradients on its
// rows, the all-reduce over DP divided by DP is the gradient of the mean loss. It must equal the
// full-batch gradient computed on one rank (every rank computes that reference itself, without a
// communicator). With TP > 1 each DP rank's model is a TP shard and the reference is sliced with
// shard_store. Grids: tp 1 x dp world, and at 4 ranks tp 2 x dp 2.
//
// Tolerance kTpRelTol (model_test_util.h): the DP sum adds the rows' contributions in another
// order than the single-rank backward (which sums all rows in one matmul), a float32 reordering.
#include "tests/mpi_model/model_test_util.h"

#include "core/backend/registry.h"

namespace latte::test {
namespace {

TEST(DpEquivalenceTest, MeanOfHalfBatchGradientsEqualsFullBatchGradient) {
  std::vector<int> grids{1};
  if (world_size() == 4) grids.push_back(2);
  std::vector<ModelCase> cases;
  cases.push_back(stories260k());
  cases.push_back(random_case("mla_untied", mla_config(false), 41));
  for (int tp : grids) {
    ParallelRuntime rt(quiet(tp));
    Communicator& tpc = rt.tp();
    Communicator& dp = rt.dp();
    ASSERT_EQ(dp.size(), world_size() / tp);
    ASSERT_GE(dp.size(), 2);
    for (const ModelCase& m : cases) {
      SCOPED_TRACE(m.name + " tp " + std::to_string(tp) + " dp " + std::to_string(dp.size()));
      const ModelConfig& c = m.config;
      const TpLayout layout = tp_layout(c, tpc.rank(), tpc.size());
      const int64_t rows = 4, per_rank = rows / dp.size();
      TokenBatch full = random_batch(c.vocab_size, rows, 16, 200);
      TokenBatch mine = full.rows_slice(dp.rank() * per_rank, per_rank);

      Transformer ref(c, m.weights, cpu_backend());
      Activations ra;
      const float ref_loss = ref.forward_train(full.tokens, full.targets, full.rows, ra);
      ModelWeights ref_grads = weights_zeros_like(c);
      ref.backward(ra, ref_grads);
      const TensorStore expected = shard_store(c, layout, weights_to_store(c, ref_grads));

      Transformer par(c, rank_weights(c, layout, m.weights), cpu_backend(), &tpc);
      Activations pa;
      const float my_loss = par.forward_train(mine.tokens, mine.targets, mine.rows, pa);
      Tensor loss = Tensor::from_vector({my_loss}, {1});
      dp.all_reduce(loss, ReduceOp::sum);
      EXPECT_NEAR(loss.f32()[0] / float(dp.size()), ref_loss, kTpRelTol * std::abs(ref_loss)) << "mean loss";
      // The rows' target counts are equal, so the DP mean is the full-batch mean.
      EXPECT_EQ(pa.n_targets * dp.size(), ra.n_targets);

      ModelWeights grads = weights_zeros_like(c, layout);
      par.backward(pa, grads);
      double worst = 0;
      int checked = 0;
      for_each_weight(c, layout, grads, [&](const std::string& name, const Shape& shape, Tensor& g) {
        dp.all_reduce(g, ReduceOp::sum);
        float* p = g.f32();
        for (int64_t i = 0; i < g.numel(); ++i) p[i] /= float(dp.size());
        worst = std::max(worst, expect_close(g, expected.get(name, shape), "DP-mean gradient of " + name));
        ++checked;
      });
      EXPECT_EQ(checked, int(model_tensor_shapes(c).size()));
      worst = world_max(worst);
      measured("tp %d dp %d %-11s mean loss %.7f vs full batch %.7f, worst gradient rel %.2e", tp, dp.size(),
               m.name.c_str(), double(loss.f32()[0]) / dp.size(), double(ref_loss), worst);
    }
  }
}

}  // namespace
}  // namespace latte::test
