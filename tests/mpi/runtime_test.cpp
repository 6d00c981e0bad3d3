// ParallelRuntime: the TP x DP grid (TP innermost), its sub-communicators, the host-local group,
// the start-up lines and the one-line errors. Runs at np 2 and np 4; the np-4 tp-2 case is
// spelled out with its groups written by hand.
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>

#include "latte_build_config.h"
#include "tests/mpi/mpi_test_util.h"

namespace latte {
namespace {

using test::expect_error;
using test::quiet;

float sum_of_world_ranks(Communicator& c, int world_rank) {
  Tensor t = Tensor::from_vector({float(world_rank)}, {1});
  c.all_reduce(t, ReduceOp::sum);
  return t.f32()[0];
}

TEST(ParallelRuntime, GridIsTpInnermostForEveryTpThatDividesTheWorld) {
  int world = 0;
  {
    ParallelRuntime probe(quiet());
    world = probe.world_size();
  }
  for (int tp = 1; tp <= world; ++tp) {
    if (world % tp != 0) continue;
    SCOPED_TRACE(str_cat("tp ", tp));
    ParallelRuntime rt(quiet(tp));
    const int w = rt.world_rank(), dp = world / tp;
    EXPECT_EQ(rt.tp_size(), tp);
    EXPECT_EQ(rt.dp_size(), dp);
    EXPECT_EQ(rt.tp_rank(), w % tp);
    EXPECT_EQ(rt.dp_rank(), w / tp);
    EXPECT_EQ(rt.tp().size(), tp);
    EXPECT_EQ(rt.tp().rank(), rt.tp_rank());
    EXPECT_EQ(rt.dp().size(), dp);
    EXPECT_EQ(rt.dp().rank(), rt.dp_rank());
    EXPECT_EQ(rt.tp().name(), str_cat("mpi tp[dp=", rt.dp_rank(), "]"));
    EXPECT_EQ(rt.dp().name(), str_cat("mpi dp[tp=", rt.tp_rank(), "]"));
    // TP group d holds ranks d*tp .. d*tp+tp-1; DP group t holds ranks t, t+tp, ...
    const int d = rt.dp_rank(), t = rt.tp_rank();
    EXPECT_EQ(sum_of_world_ranks(rt.tp(), w), float(d * tp * tp + tp * (tp - 1) / 2));
    EXPECT_EQ(sum_of_world_ranks(rt.dp(), w), float(tp * dp * (dp - 1) / 2 + dp * t));
    EXPECT_EQ(sum_of_world_ranks(rt.world(), w), float(world * (world - 1) / 2));
  }
}

TEST(ParallelRuntime, FourRanksTpTwoByHand) {
  ParallelRuntime rt(quiet(2));
  if (rt.world_size() != 4) GTEST_SKIP() << "the np-4 case; this run has " << rt.world_size() << " ranks";
  const int w = rt.world_rank();
  // tp groups {0,1} {2,3}; dp groups {0,2} {1,3}.
  const int tp_rank[4] = {0, 1, 0, 1}, dp_rank[4] = {0, 0, 1, 1};
  const float tp_sum[4] = {1, 1, 5, 5}, dp_sum[4] = {2, 4, 2, 4};
  EXPECT_EQ(rt.tp_rank(), tp_rank[w]);
  EXPECT_EQ(rt.dp_rank(), dp_rank[w]);
  EXPECT_EQ(sum_of_world_ranks(rt.tp(), w), tp_sum[w]);
  EXPECT_EQ(sum_of_world_ranks(rt.dp(), w), dp_sum[w]);

  // all_gather over tp: each group sees its own two ranks, in tp-rank order.
  Tensor mine = Tensor::from_vector({float(w), float(10 * w)}, {1, 2});
  Tensor both = Tensor::empty({2, 2});
  rt.tp().all_gather(both, mine);
  const int first = w / 2 * 2;
  EXPECT_EQ(both.to_vector(), (std::vector<float>{float(first), float(10 * first), float(first + 1),
                                                  float(10 * (first + 1))}));
  // reduce_scatter over dp: in = [w, w+100] on each member; dp rank k keeps the sum of element k.
  Tensor in = Tensor::from_vector({float(w), float(w + 100)}, {2});
  Tensor out = Tensor::empty({1});
  rt.dp().reduce_scatter(out, in);
  const int t = w % 2;  // dp group {t, t+2}: sums 2t+2 and 2t+202
  EXPECT_EQ(out.f32()[0], rt.dp_rank() == 0 ? float(2 * t + 2) : float(2 * t + 202));
  // broadcast over tp from tp rank 1.
  Tensor b = Tensor::from_vector({float(w)}, {1});
  rt.tp().broadcast(b, 1);
  EXPECT_EQ(b.f32()[0], float(first + 1));
  // send/recv inside a tp group: rank 0 of each pair sends to rank 1.
  Tensor p = Tensor::from_vector({float(w) + 0.5f}, {1});
  if (rt.tp_rank() == 0) rt.tp().send(p, 1, 11);
  else {
    rt.tp().recv(p, 0, 11);
    EXPECT_EQ(p.f32()[0], float(w - 1) + 0.5f);
  }
}

TEST(ParallelRuntime, MismatchOnASubCommunicatorNamesIt) {
  ParallelRuntime rt(quiet(2));
  if (rt.world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  // Only tp group 1 disagrees; group 0 completes normally.
  Tensor t = Tensor::zeros({rt.world_rank() == 3 ? 6 : 5});
  if (rt.dp_rank() == 1)
    expect_error([&] { rt.tp().all_reduce(t, ReduceOp::sum); }, ErrorCode::shape_mismatch,
                 str_cat("rank ", rt.world_rank(), ": all_reduce on mpi tp[dp=1]: this rank has "));
  else
    rt.tp().all_reduce(t, ReduceOp::sum);
}

TEST(ParallelRuntime, LocalRanksOnOneHost) {
  ParallelRuntime rt(quiet());
  // ctest runs every rank on this machine.
  EXPECT_EQ(rt.n_hosts(), 1);
  EXPECT_EQ(rt.local_rank(), rt.world_rank());
  EXPECT_EQ(rt.local_size(), rt.world_size());
  EXPECT_FALSE(rt.host().empty());
}

TEST(ParallelRuntime, StartupAndPlanLines) {
  const int tp = 2;
  ParallelRuntime rt(quiet(tp));
  EXPECT_EQ(rt.startup_line(), str_cat("latte: rank ", rt.world_rank(), "/", rt.world_size(), " tp ", rt.tp_rank(),
                                       "/", tp, " dp ", rt.dp_rank(), "/", rt.dp_size(), " host ", rt.host(),
                                       " device cpu"));
  std::string plan = rt.plan_line();
  EXPECT_NE(plan.find(str_cat("latte: plan: ", rt.world_size(), " ranks on 1 host = dp ", rt.dp_size(), " x tp 2, "
                              "tp innermost (tp groups within a host)")),
            std::string::npos)
      << plan;
  EXPECT_NE(plan.find("watchdog 60 s"), std::string::npos) << plan;
  EXPECT_NE(plan.find("MPI threads multiple"), std::string::npos) << plan;
  EXPECT_EQ(plan.find('\n'), std::string::npos);
}

TEST(ParallelRuntime, TpThatDoesNotDivideTheWorldIsAOneLineError) {
  int world = 0;
  {
    ParallelRuntime probe(quiet());
    world = probe.world_size();
  }
  std::string message = expect_error([&] { ParallelRuntime rt(quiet(world + 1)); }, ErrorCode::invalid_argument,
                                     str_cat("--tp ", world + 1, " does not divide the ", world, " MPI ranks"));
  EXPECT_EQ(message.find('\n'), std::string::npos);
  expect_error([&] { ParallelRuntime rt(quiet(0)); }, ErrorCode::invalid_argument, "--tp 0 must be at least 1");
  if (world == 4)
    expect_error([&] { ParallelRuntime rt(quiet(3)); }, ErrorCode::invalid_argument,
                 "--tp 3 does not divide the 4 MPI ranks (dp = ranks / tp must be a whole number)");
}

TEST(ParallelRuntime, TimeoutComesFromTheEnvironment) {
  ASSERT_EQ(setenv("LATTE_COLLECTIVE_TIMEOUT_S", "2.5", 1), 0);
  {
    ParallelRuntime rt({.announce = false});
    EXPECT_EQ(rt.collective_timeout_s(), 2.5);
  }
  ASSERT_EQ(setenv("LATTE_COLLECTIVE_TIMEOUT_S", "ten", 1), 0);
  expect_error([] { ParallelRuntime rt({.announce = false}); }, ErrorCode::invalid_argument,
               "LATTE_COLLECTIVE_TIMEOUT_S='ten' is not a number of seconds >= 0");
  ASSERT_EQ(unsetenv("LATTE_COLLECTIVE_TIMEOUT_S"), 0);
  ParallelRuntime rt({.announce = false});
  EXPECT_EQ(rt.collective_timeout_s(), 600);
}

TEST(ParallelRuntime, HostRuntimeHasNoDeviceCommunicators) {
  ParallelRuntime rt(quiet());
  EXPECT_EQ(rt.device(), Device::cpu());
  expect_error([&] { rt.comm(Group::tp, DeviceKind::cuda); }, ErrorCode::unsupported,
               "no tp communicator for cuda tensors: this runtime was started with device cpu");
}

#if !LATTE_HAVE_CUDA
TEST(ParallelRuntime, CudaDeviceInABuildWithoutCudaIsRefused) {
  expect_error([] { ParallelRuntime rt({.device = Device::cuda(0), .announce = false}); }, ErrorCode::unsupported,
               "--device cuda: this build has no CUDA");
}
#else
TEST(ParallelRuntime, CudaDeviceWithoutAUsableGpuNamesTheReason) {
  try {
    ParallelRuntime rt({.device = Device::cuda(0), .collective_timeout_s = 60, .announce = false});
    GTEST_SKIP() << "this machine has a CUDA device (" << device_name(rt.device()) << "); test_nccl covers it";
  } catch (const Error& e) {
    // No driver here gives cudaErrorInsufficientDriver; a build without NCCL says so instead.
    EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
    const std::string m = e.what();
    EXPECT_TRUE(m.find("no CUDA device: ") != std::string::npos || m.find("not NCCL") != std::string::npos ||
                m.find("NCCL needs one device per rank") != std::string::npos)
        << m;
  }
}
#endif

TEST(ParallelRuntime, TwoRuntimesInOneProcessAreIndependent) {
  // No global state: a TP=1 and a TP=N runtime side by side, as a TP=1-vs-TP=N test needs.
  ParallelRuntime a(quiet(1));
  ParallelRuntime b(quiet(2));
  EXPECT_EQ(a.tp().size(), 1);
  EXPECT_EQ(b.tp().size(), 2);
  EXPECT_EQ(sum_of_world_ranks(a.tp(), a.world_rank()), float(a.world_rank()));
  EXPECT_EQ(sum_of_world_ranks(b.tp(), b.world_rank()), float(b.world_rank() / 2 * 4 + 1));
}

}  // namespace
}  // namespace latte
