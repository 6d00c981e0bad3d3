// NcclCommunicator on device tensors: the collectives of mpi_communicator_test.cpp with the same
// hand-computed oracles, on one GPU per rank (registered at np 1; at np N it needs N GPUs on the
// host). Without a usable CUDA device every test skips with the reason ("no CUDA device: ...").
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "parallel/comm/nccl_communicator.h"
#include "tests/mpi/mpi_test_util.h"

namespace latte {
namespace {

using test::expect_error;

// Why there is no device for this rank, or "" if there is one.
std::string no_device_reason(int local_rank) {
  int count = 0;
  cudaError_t rc = cudaGetDeviceCount(&count);  // no driver: an error, and count left alone
  if (rc != cudaSuccess) return str_cat("no CUDA device: ", cudaGetErrorName(rc), " (", cudaGetErrorString(rc), ")");
  if (count == 0) return "no CUDA device: cudaGetDeviceCount found none";
  if (local_rank >= count) return str_cat("no CUDA device for local rank ", local_rank, ": ", count, " visible");
  return "";
}

// A device tensor holding `values`, freed with cudaFree.
Tensor device_tensor(const std::vector<float>& values, const Shape& shape, int device) {
  EXPECT_EQ(int64_t(values.size()), shape_numel(shape));
  cudaSetDevice(device);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, values.size() * 4), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, values.data(), values.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  std::shared_ptr<void> owner(p, [](void* q) { cudaFree(q); });
  return Tensor::borrow(p, shape, DType::f32, Device::cuda(device), owner);
}

std::vector<float> host_values(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  EXPECT_EQ(cudaMemcpy(v.data(), t.raw(), v.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

class NcclCommunicatorTest : public testing::Test {
 protected:
  void SetUp() override {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::string why = no_device_reason(rank);  // one host: local rank = world rank
    // Every rank must skip alike, or the others would wait in the runtime's collectives.
    int skip = why.empty() ? 0 : 1;
    MPI_Allreduce(MPI_IN_PLACE, &skip, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (skip) GTEST_SKIP() << (why.empty() ? "another rank has no CUDA device" : why);
    rt_ = std::make_unique<ParallelRuntime>(ParallelOptions{
        .device = Device::cuda(0), .collective_timeout_s = 60, .announce = false});
  }
  std::unique_ptr<ParallelRuntime> rt_;
};

TEST_F(NcclCommunicatorTest, CollectivesMatchHandComputedValues) {
  Communicator& c = rt_->world();
  const int r = c.rank(), n = c.size(), dev = rt_->device().index;
  const int S = n * (n - 1) / 2;
  EXPECT_EQ(c.name(), "nccl world");

  std::vector<float> v(15);
  for (int i = 0; i < 15; ++i) v[size_t(i)] = float(100 * r + i);
  Tensor t = device_tensor(v, {3, 5}, dev);
  c.all_reduce(t, ReduceOp::sum);
  auto got = host_values(t);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(got[size_t(i)], float(100 * S + n * i));

  for (int i = 0; i < 7; ++i) v[size_t(i)] = i % n == r ? float(1000 + i) : float(-(r + 1) * (i + 1));
  Tensor m = device_tensor(std::vector<float>(v.begin(), v.begin() + 7), {7}, dev);
  c.all_reduce(m, ReduceOp::max);
  got = host_values(m);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(got[size_t(i)], float(1000 + i));

  std::vector<float> in_v(6);
  for (int j = 0; j < 6; ++j) in_v[size_t(j)] = float(10 * r + j);
  Tensor in = device_tensor(in_v, {2, 3}, dev);
  Tensor out = device_tensor(std::vector<float>(size_t(6 * n), -1), {2 * n, 3}, dev);
  c.all_gather(out, in);
  got = host_values(out);
  for (int q = 0; q < n; ++q)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(got[size_t(q * 6 + j)], float(10 * q + j));

  std::vector<float> rs(size_t(6 * n));
  for (int k = 0; k < 6 * n; ++k) rs[size_t(k)] = float(r + k);
  Tensor rs_in = device_tensor(rs, {2 * n, 3}, dev);
  Tensor rs_out = device_tensor(std::vector<float>(6, 0), {2, 3}, dev);
  c.reduce_scatter(rs_out, rs_in);
  got = host_values(rs_out);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(got[size_t(i)], float(S + n * (6 * r + i)));

  std::vector<float> b(5);
  for (int i = 0; i < 5; ++i) b[size_t(i)] = r == n - 1 ? float(7 * i) + 0.5f : float(r);
  Tensor bt = device_tensor(b, {5}, dev);
  c.broadcast(bt, n - 1);
  got = host_values(bt);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[size_t(i)], float(7 * i) + 0.5f);

  c.barrier();
}

TEST_F(NcclCommunicatorTest, HostTensorsAndMismatchesAreRefused) {
  Communicator& c = rt_->world();
  Tensor host = Tensor::zeros({4});
  expect_error([&] { c.all_reduce(host, ReduceOp::sum); }, ErrorCode::invalid_argument,
               str_cat("t is on cpu, this communicator's tensors are on cuda:", rt_->device().index));
  if (c.size() > 1) {
    Tensor t = device_tensor(std::vector<float>(size_t(c.rank() == 0 ? 4 : 5)), {c.rank() == 0 ? 4 : 5},
                             rt_->device().index);
    expect_error([&] { c.all_reduce(t, ReduceOp::sum); }, ErrorCode::shape_mismatch, "this rank has");
  }
}

TEST_F(NcclCommunicatorTest, HostCommunicatorsStayAvailable) {
  EXPECT_EQ(rt_->comm(Group::tp, DeviceKind::cpu).name().rfind("mpi ", 0), 0u);
  EXPECT_EQ(rt_->tp().name().rfind("nccl ", 0), 0u);
}

}  // namespace
}  // namespace latte
