// Checks that every rank of a communicator is making the same collective call, before the call.
//
// A collective whose ranks disagree on the element count corrupts memory or hangs; one whose
// ranks call different collectives hangs. So, unless the caller turned verification off, each
// collective first does one MPI_Allreduce(MAX) of eight int64s over the communicator:
// (kind, -kind, count, -count, param, -param, refused, 0). From the maxima every rank learns the
// smallest and largest value each field takes anywhere, and all ranks throw the same way or not
// at all, so a mismatch ends with a message on every rank instead of a hang:
//   rank 1: all_reduce on mpi world: this rank has 4 elements, another rank has 5
// A rank whose own arguments are refused (wrong dtype, device tensor, bad root) joins the check
// with `refused` set, so its peers throw too rather than wait in a call it will never make.
//
// The check is an MPI_Iallreduce completed by wait_for (request_wait.h), so that a rank can wait
// in it patiently; every check is one, so checks always match each other across ranks.
// Cost: one 64-byte MPI_Allreduce per collective; NCCL calls pay it over MPI on the host.
// Measured on the 2-core development machine, np 2 over shared memory (vader), mean of 20,000
// MpiCommunicator::all_reduce calls, 3 runs: 1 float 0.84-1.00 us unchecked, 1.40-1.49 us
// checked; 1536 floats 4.5-4.9 us unchecked, 5.0-5.6 us checked (with a blocking MPI_Allreduce).
// The nonblocking form costs about 1 us more: the 8-int64 reduction alone, np 2, 20,000 calls,
// 3 runs, 0.47 us as MPI_Allreduce and 1.15-1.61 us as MPI_Iallreduce + MPI_Wait; the price of
// an idle serving follower not spinning a core. ParallelOptions::verify_collectives turns it off.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/tensor/tensor.h"
#include "parallel/comm/request_wait.h"

namespace latte {

enum class CallKind : int64_t { all_reduce = 1, all_gather, reduce_scatter, broadcast, barrier, broadcast_ints };
const char* call_kind_name(CallKind kind);

struct CallSignature {
  CallKind kind;
  int64_t count;      // elements per rank (all_gather: in; reduce_scatter: out); 0 for barrier
  int64_t param = 0;  // all_reduce: the ReduceOp; broadcast: the root
};

class Watchdog;

// What a communicator needs besides its MPI_Comm, from the runtime that makes it.
struct CommContext {
  int world_rank = -1;            // for messages
  bool verify = true;             // check every collective across ranks first (agree_on_call)
  Watchdog* watchdog = nullptr;   // may be null: calls are then unwatched
};

// Collective over comm when ctx.verify: throws latte::Error on every rank if any rank refused
// its arguments (`problem` non-empty on that rank) or the signatures differ. Without verify it
// only throws `problem` on the rank that has one. `where` is "all_reduce on mpi world". `waiting`:
// how this rank waits for the others (patient for a call it may wait in for long).
void agree_on_call(MPI_Comm comm, const CommContext& ctx, const std::string& where,
                   const CallSignature& sig, const std::string& problem, Waiting waiting = Waiting::busy);

// "" if t is a defined, contiguous f32 tensor on `device`; else what is wrong, naming `name`.
std::string tensor_problem(const Tensor& t, const char* name, Device device);

// The first non-empty problem of a list, or "" when there is none.
std::string first_problem(std::initializer_list<std::string> problems);

// Whether the byte ranges of two tensors intersect (an in-place gather/scatter must use the
// rank's own block of `out` as `in`, nothing else).
bool overlaps(const Tensor& a, const Tensor& b);

}  // namespace latte
