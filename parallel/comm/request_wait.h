// Completing a nonblocking MPI call without burning a core while it waits.
//
// MPI_Wait in Open MPI polls: a rank blocked in a collective keeps one core at 100 % for as long
// as it waits. That is right inside a training step (the peers arrive within microseconds) and
// wrong for a serving follower, which waits in a broadcast for the next engine step for as long
// as no request comes (with TP 8, seven busy cores on an idle server). So there are two ways to
// wait:
//   busy:    MPI_Wait, the lowest latency;
//   patient: MPI_Test in a spin for the first kPatientSpin, then between polls a sleep that grows
//            by half each time up to kPatientMaxSleep. A message that arrives during a busy phase
//            is taken as fast as with MPI_Wait; after a long idle wait it is taken at most
//            kPatientMaxSleep late, and an idle rank costs about one poll per millisecond.
// Both sides of a collective must use the same kind of call (nonblocking collectives do not
// match blocking ones), which is why every call check and broadcast_ints are nonblocking calls
// completed here.
#pragma once
#include <mpi.h>

#include <chrono>

namespace latte {

enum class Waiting { busy, patient };

inline constexpr std::chrono::microseconds kPatientSpin{2000};
inline constexpr std::chrono::microseconds kPatientMaxSleep{1000};

// Completes `request` (MPI_REQUEST_NULL after), checking every MPI return code.
void wait_for(MPI_Request& request, Waiting waiting);

}  // namespace latte
