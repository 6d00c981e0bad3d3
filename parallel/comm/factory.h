// The one place that picks a Communicator implementation: the communicator follows the tensors.
// Host tensors go to MPI; CUDA tensors go to NCCL (bootstrapped over the same MPI group), since
// Debian's OpenMPI is not CUDA-aware. factory.cpp is the only file in parallel/ that branches on
// what the build contains (LATTE_HAVE_CUDA, and whether NCCL was found).
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "core/comm/communicator.h"
#include "parallel/comm/call_check.h"

namespace latte {

// Collective over comm. name is the group's name ("tp[dp=0]"). Throws unsupported, naming the
// reason, when the build cannot serve `device` (no CUDA, or no NCCL).
std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const std::string& name, Device device,
                                                const CommContext& ctx);

// Whether make_communicator can serve CUDA tensors in this build; if not, *why says why.
bool device_communicators_built(std::string* why);

// The device this rank computes on when asked for `kind`: cpu, or cuda:<local_rank>, or cuda:0
// when each rank sees exactly one device through CUDA_VISIBLE_DEVICES (as SLURM's GPU binding
// sets it). Throws unsupported with the reason when no device can serve this rank.
Device pick_device(DeviceKind kind, int local_rank, int local_size, int world_rank);

// "mpi" or "mpi + nccl": for the runtime's plan line.
std::string communicator_backends();

}  // namespace latte
