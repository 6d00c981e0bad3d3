// LATTE_MPI_CHECK(call): every MPI call in parallel/ goes through it. The communicators set
// MPI_ERRORS_RETURN, so a failed call comes back here instead of aborting inside the library,
// and the message names the call, its file:line, the world rank and MPI's own explanation:
//   rank 1: MPI_Recv(...) failed at parallel/comm/mpi_communicator.cpp:210: MPI_ERR_TRUNCATE: message truncated
#pragma once
#include <mpi.h>

#include <string>

#include "core/base/error.h"

namespace latte {

// This process's rank in MPI_COMM_WORLD, or -1 outside MPI_Init .. MPI_Finalize. Asked on the
// error path only, so messages name the rank without any global holding it.
int mpi_world_rank();
// MPI_Error_string's text for an MPI error code.
std::string mpi_error_text(int code);

}  // namespace latte

#define LATTE_MPI_CHECK(call)                                                                  \
  do {                                                                                         \
    int latte_mpi_rc_ = (call);                                                                \
    if (latte_mpi_rc_ != MPI_SUCCESS)                                                          \
      ::latte::fail(::latte::ErrorCode::io, "rank ", ::latte::mpi_world_rank(), ": ", #call,   \
                    " failed at ", __FILE__, ":", __LINE__, ": ",                              \
                    ::latte::mpi_error_text(latte_mpi_rc_));                                   \
  } while (0)
