// MpiCommunicator: every collective against values computed by hand, on the world group at
// np 2 and np 4, then the ways a caller can get it wrong, each of which must end with the same
// clear error on every rank (a hang here would be caught by the watchdog after 60 s).
//
// Oracle: closed forms in the rank r and the size n, with S = n(n-1)/2 = sum of ranks; every
// value is a small integer (or x.5), so float arithmetic is exact and EXPECT_EQ is the check.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/comm/mpi_check.h"
#include "parallel/comm/mpi_communicator.h"
#include "tests/mpi/mpi_test_util.h"

namespace latte {
namespace {

using test::expect_error;
using test::quiet;

TEST(MpiCommunicator, NameRankAndSize) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  EXPECT_EQ(c.name(), "mpi world");
  EXPECT_EQ(c.rank(), rt.world_rank());
  EXPECT_EQ(c.size(), rt.world_size());
  EXPECT_GE(c.size(), 2) << "run under mpiexec -n 2 or more";
}

TEST(MpiCommunicator, AllReduceSum) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor t = Tensor::empty({3, 5});  // 15 elements, not a power of two
  for (int i = 0; i < 15; ++i) t.f32()[i] = float(100 * r + i);
  c.all_reduce(t, ReduceOp::sum);
  const int S = n * (n - 1) / 2;
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t.f32()[i], float(100 * S + n * i)) << "element " << i;
}

TEST(MpiCommunicator, AllReduceMax) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  // Element i is owned by rank i % n, which holds 1000 + i; the others hold negatives.
  Tensor t = Tensor::empty({7});
  for (int i = 0; i < 7; ++i) t.f32()[i] = i % n == r ? float(1000 + i) : float(-(r + 1) * (i + 1));
  c.all_reduce(t, ReduceOp::max);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(t.f32()[i], float(1000 + i)) << "element " << i;
  // All negative: the maximum is rank 0's -(1 + i), not 0.
  Tensor u = Tensor::empty({4});
  for (int i = 0; i < 4; ++i) u.f32()[i] = float(-(r + 1) - i);
  c.all_reduce(u, ReduceOp::max);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(u.f32()[i], float(-1 - i)) << "element " << i;
}

TEST(MpiCommunicator, AllGather) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor in = Tensor::empty({2, 3});
  for (int j = 0; j < 6; ++j) in.f32()[j] = float(10 * r + j);
  Tensor out = Tensor::empty({2 * n, 3});
  out.fill(-1);
  c.all_gather(out, in);
  for (int q = 0; q < n; ++q)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(out.f32()[q * 6 + j], float(10 * q + j)) << "block " << q;
}

TEST(MpiCommunicator, AllGatherInPlaceFromOwnBlock) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor out = Tensor::empty({2 * n, 3});
  out.fill(-1);
  Tensor mine = out.slice(2 * r, 2 * r + 2);
  for (int j = 0; j < 6; ++j) mine.f32()[j] = float(10 * r + j);
  c.all_gather(out, mine);
  for (int q = 0; q < n; ++q)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(out.f32()[q * 6 + j], float(10 * q + j)) << "block " << q;
}

TEST(MpiCommunicator, ReduceScatter) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor in = Tensor::empty({2 * n, 3});
  for (int k = 0; k < 6 * n; ++k) in.f32()[k] = float(r + k);
  Tensor out = Tensor::empty({2, 3});
  c.reduce_scatter(out, in);
  // out[i] = sum over q of (q + 6r + i) = S + n (6r + i)
  const int S = n * (n - 1) / 2;
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out.f32()[i], float(S + n * (6 * r + i))) << "element " << i;
}

TEST(MpiCommunicator, BroadcastFromLastRank) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor t = Tensor::empty({5});
  for (int i = 0; i < 5; ++i) t.f32()[i] = r == n - 1 ? float(7 * i) + 0.5f : float(r);
  c.broadcast(t, n - 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(t.f32()[i], float(7 * i) + 0.5f) << "element " << i;
}

TEST(MpiCommunicator, BroadcastIntsCarriesEveryBitPattern) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  // Values a float transport could alter: above 2^24, negative, and the bit patterns of NaNs and
  // denormals.
  const std::vector<int32_t> sent = {0, -1, INT32_MIN, INT32_MAX, (1 << 24) + 1, 0x7FC00001, 0x00000001, -123456789};
  std::vector<int32_t> v = r == n - 1 ? sent : std::vector<int32_t>(sent.size(), r);
  c.broadcast_ints(v, n - 1);
  EXPECT_EQ(v, sent);
  std::vector<int32_t> shorter(r == 0 ? 3 : 4);
  expect_error([&] { c.broadcast_ints(shorter, 0); }, ErrorCode::shape_mismatch,
               "broadcast_ints on mpi world: this rank has");
}

TEST(MpiCommunicator, Barrier) {
  ParallelRuntime rt(quiet());
  rt.world().barrier();
  rt.world().barrier();
}

TEST(MpiCommunicator, SendRecvRing) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  ASSERT_EQ(n % 2, 0) << "the ring alternates send-first and recv-first ranks";
  Tensor out = Tensor::empty({4}), in = Tensor::empty({4});
  for (int i = 0; i < 4; ++i) out.f32()[i] = float(4 * r + i);
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  if (r % 2 == 0) {
    c.send(out, next, 7);
    c.recv(in, prev, 7);
  } else {
    c.recv(in, prev, 7);
    c.send(out, next, 7);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(in.f32()[i], float(4 * prev + i));
}

TEST(MpiCommunicator, RecvOfWrongSizeIsAnErrorNotATruncation) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  if (c.rank() == 0) c.send(Tensor::from_vector({1, 2, 3, 4, 5}, {5}), 1, 3);
  if (c.rank() == 1) {
    Tensor t = Tensor::zeros({4});
    expect_error([&] { c.recv(t, 0, 3); }, ErrorCode::shape_mismatch,
                 "rank 1: recv on mpi world from rank 0 tag 3: expected 4 elements, the message has 5");
    EXPECT_EQ(t.to_vector(), std::vector<float>(4, 0.0f)) << "t must be left as it was";
  }
  c.barrier();  // and the communicator still works
}

TEST(MpiCommunicator, SendToSelfOrOutOfRangeIsRefused) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  Tensor t = Tensor::zeros({2});
  expect_error([&] { c.send(t, c.rank(), 0); }, ErrorCode::invalid_argument, "is this rank");
  expect_error([&] { c.recv(t, c.size(), 0); }, ErrorCode::invalid_argument, "is not a rank of this");
  expect_error([&] { c.send(t, (c.rank() + 1) % c.size(), -1); }, ErrorCode::invalid_argument, "tag -1");
}

TEST(MpiCommunicator, FailedMpiCallsComeBackAsErrorsNamingCallLineAndRank) {
  ParallelRuntime rt(quiet());
  // The communicator's MPI_Comm returns errors (MPI_ERRORS_RETURN) instead of aborting the job.
  MPI_Comm comm = dynamic_cast<MpiCommunicator&>(rt.world()).mpi_comm();
  float x = 0;
  std::string message = expect_error([&] { LATTE_MPI_CHECK(MPI_Send(&x, 1, MPI_FLOAT, 99, 0, comm)); },
                                     ErrorCode::io,
                                     str_cat("rank ", rt.world_rank(), ": MPI_Send(&x, 1, MPI_FLOAT, 99, 0, comm) failed at "));
  EXPECT_NE(message.find("mpi_communicator_test.cpp:"), std::string::npos) << message;
  EXPECT_NE(message.find("MPI_ERR_RANK"), std::string::npos) << message;
}

// --- Mismatches across ranks: every rank must throw, none may hang. -------------------------

TEST(MpiCommunicator, MismatchedCountsEndWithAClearErrorOnEveryRank) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank();
  Tensor t = Tensor::zeros({r == 0 ? 4 : 5});
  std::string expected = r == 0 ? "rank 0: all_reduce on mpi world: this rank has 4 elements, another rank has 5"
                                : str_cat("rank ", r, ": all_reduce on mpi world: this rank has 5 elements, "
                                          "another rank has 4");
  expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::shape_mismatch, expected);
  // The same for the other collectives' counts.
  Tensor out = Tensor::zeros({c.size() * (r == 0 ? 4 : 5)});
  expect_error([&] { c.all_gather(out, t); }, ErrorCode::shape_mismatch, "all_gather on mpi world: this rank has");
  expect_error([&] { c.reduce_scatter(t, out); }, ErrorCode::shape_mismatch,
               "reduce_scatter on mpi world: this rank has");
  expect_error([&] { c.broadcast(t, 0); }, ErrorCode::shape_mismatch, "broadcast on mpi world: this rank has");
  // Nothing was left half-done: a matching call afterwards works.
  Tensor ok = Tensor::from_vector({1, 2}, {2});
  c.all_reduce(ok, ReduceOp::sum);
  EXPECT_EQ(ok.to_vector(), (std::vector<float>{float(c.size()), float(2 * c.size())}));
}

TEST(MpiCommunicator, DifferentCollectivesEndWithAClearError) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  Tensor t = Tensor::zeros({3});
  if (c.rank() == 0)
    expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::invalid_argument,
                 "rank 0: all_reduce on mpi world: this rank is in all_reduce, another rank is in broadcast");
  else
    expect_error([&] { c.broadcast(t, 0); }, ErrorCode::invalid_argument,
                 "this rank is in broadcast, another rank is in all_reduce");
}

TEST(MpiCommunicator, DifferentRootsOrOpsEndWithAClearError) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int r = c.rank();
  Tensor t = Tensor::zeros({3});
  expect_error([&] { c.broadcast(t, r == 0 ? 0 : 1); }, ErrorCode::invalid_argument,
               r == 0 ? "this rank uses root 0, another rank uses root 1"
                      : "this rank uses root 1, another rank uses root 0");
  expect_error([&] { c.all_reduce(t, r == 0 ? ReduceOp::max : ReduceOp::sum); }, ErrorCode::invalid_argument,
               r == 0 ? "this rank reduces with max, another rank reduces with sum"
                      : "this rank reduces with sum, another rank reduces with max");
}

TEST(MpiCommunicator, ArgumentsRefusedOnOneRankEndTheCallOnEveryRank) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  Tensor t = c.rank() == 1 ? Tensor::zeros({3}, DType::bf16) : Tensor::zeros({3});
  if (c.rank() == 1)
    expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::invalid_argument,
                 "rank 1: all_reduce on mpi world: t is bf16, expected f32");
  else
    expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::invalid_argument,
                 "another rank refused its arguments to this call (see that rank's message)");
}

TEST(MpiCommunicator, DeviceTensorsAreRefusedBecauseMpiIsNotCudaAware) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  std::vector<float> host(4);
  // Labelled cuda:0 but never dereferenced: the check must come before any MPI call touches it.
  Tensor t = Tensor::borrow(host.data(), {4}, DType::f32, Device::cuda(0));
  expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::invalid_argument,
               "t is on cuda:0; this communicator takes host tensors only (Debian's OpenMPI is not CUDA-aware)");
  expect_error([&] { c.send(t, (c.rank() + 1) % c.size(), 0); }, ErrorCode::invalid_argument, "not CUDA-aware");
}

TEST(MpiCommunicator, BadShapesAndViewsAreRefused) {
  ParallelRuntime rt(quiet());
  Communicator& c = rt.world();
  const int n = c.size();
  Tensor in = Tensor::zeros({2, 3});
  Tensor wrong = Tensor::zeros({2 * n + 1, 3});
  expect_error([&] { c.all_gather(wrong, in); }, ErrorCode::invalid_argument,
               str_cat("out [", 2 * n + 1, ", 3] is not ", n, " blocks along dim 0 of in [2, 3]"));
  Tensor wide = Tensor::zeros({4, 6});
  Tensor strided = wide.narrow(1, 0, 3);  // [4, 3] with row stride 6
  expect_error([&] { c.all_reduce(strided, ReduceOp::sum); }, ErrorCode::invalid_argument,
               "t [4, 3] is not contiguous");
  Tensor out = Tensor::zeros({2 * n, 3});
  Tensor other_block = out.slice((c.rank() + 1) % n * 2, (c.rank() + 1) % n * 2 + 2);
  expect_error([&] { c.all_gather(out, other_block); }, ErrorCode::invalid_argument,
               "in overlaps out but is not this rank's block of it");
  expect_error([&] { c.broadcast(in, n); }, ErrorCode::invalid_argument,
               str_cat("root ", n, " is not a rank of this ", n, "-rank communicator"));
}

TEST(MpiCommunicator, UncheckedModeGivesTheSameResults) {
  ParallelRuntime rt(quiet(1, /*verify=*/false));
  Communicator& c = rt.world();
  const int r = c.rank(), n = c.size();
  Tensor t = Tensor::empty({3});
  for (int i = 0; i < 3; ++i) t.f32()[i] = float(r + i);
  c.all_reduce(t, ReduceOp::sum);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(t.f32()[i], float(n * (n - 1) / 2 + n * i));
  // Locally refused arguments still throw, on that rank only (the others did not call).
  Tensor bad = Tensor::zeros({3}, DType::f16);
  expect_error([&] { c.all_reduce(bad, ReduceOp::sum); }, ErrorCode::invalid_argument, "t is f16, expected f32");
}

}  // namespace
}  // namespace latte
