#!/usr/bin/env bash
# mpirun-local.sh: run a Latte command as N MPI ranks on this machine.
#
#   launch/mpirun-local.sh N COMMAND [ARGS...]
#   launch/mpirun-local.sh 2 build/bin/latte perplexity --tp 2 --model M --text T
#   launch/mpirun-local.sh 4 build/bin/latte train --tp 2 --model M --data D --out O   # dp 2 x tp 2
#
# Defaults (each one only if not already set in the environment; launch/README.md explains them):
#   OMPI_MCA_btl=self,vader               shared memory between the ranks, no network transport
#   OMPI_MCA_oob_tcp_if_include=lo        mpirun's own control traffic on loopback
#   NCCL_SOCKET_IFNAME=lo                 NCCL's bootstrap on loopback (it picks eth0 otherwise)
#   OMP_NUM_THREADS=cores/N (at least 1)  so N ranks do not each start one thread per core
#   OPENBLAS_NUM_THREADS=1                Latte runs OpenBLAS inside its own OpenMP tiles
#   LATTE_COLLECTIVE_TIMEOUT_S=600        the collective watchdog (0 turns it off)
# mpirun flags added:
#   --bind-to none                        OpenMPI binds each rank to one core by default at
#                                         np <= 2, which would put all its OpenMP threads there
#   --oversubscribe                       only when N exceeds the cores
#   --allow-run-as-root                   only when run as root (mpirun refuses root otherwise)
#   $LATTE_MPIRUN_FLAGS                   anything else, e.g. "--tag-output"
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N COMMAND [ARGS...]   (N = number of MPI ranks on this machine)" >&2
  exit 2
fi
n=$1
shift
command -v mpirun >/dev/null || { echo "$0: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 1; }

cores=$(nproc)
threads=$(( cores / n ))
[ "$threads" -ge 1 ] || threads=1
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-lo}
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export LATTE_COLLECTIVE_TIMEOUT_S=${LATTE_COLLECTIVE_TIMEOUT_S:-600}

flags=(--bind-to none)
[ "$n" -le "$cores" ] || flags+=(--oversubscribe)
[ "$(id -u)" -ne 0 ] || flags+=(--allow-run-as-root)
# shellcheck disable=SC2206  # LATTE_MPIRUN_FLAGS is a list of words on purpose
flags+=(${LATTE_MPIRUN_FLAGS:-})
exec mpirun -np "$n" "${flags[@]}" "$@"
