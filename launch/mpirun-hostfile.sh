#!/usr/bin/env bash
# mpirun-hostfile.sh: run a Latte command as N MPI ranks over the hosts of an OpenMPI hostfile.
#
#   HOSTFILE=hosts.txt NET_IF=eth0 launch/mpirun-hostfile.sh N COMMAND [ARGS...]
#   HOSTFILE=hosts.txt launch/mpirun-hostfile.sh 16 /opt/latte/bin/latte train --tp 8 ...
#
# A hostfile names each host and how many ranks it takes (one per GPU once the CUDA backend lands; one per socket on CPU):
#   # hosts.txt
#   gpu-a slots=8
#   gpu-b slots=8
# Every host needs the same Latte build at the same path, and password-less ssh from this one.
#
# Placement: --map-by slot fills gpu-a with ranks 0-7 before gpu-b gets 8-15. Latte's grid is
# TP innermost (a TP group is tp consecutive ranks), so with --tp <= slots per host every TP
# group stays inside one host, where its all-reduces are fastest; the plan line that rank 0
# prints says "tp groups within a host" or "tp groups span hosts".
#
# Network: NET_IF (default eth0) is the interface the hosts reach each other on. It is given to
#   OpenMPI (btl self,vader,tcp; btl_tcp_if_include, oob_tcp_if_include) and to NCCL
#   (NCCL_SOCKET_IFNAME, its bootstrap and its socket transport; NCCL still uses InfiniBand or
#   NVLink where it finds them).
# Exported to every rank with -x: NCCL_SOCKET_IFNAME, LATTE_COLLECTIVE_TIMEOUT_S, OMP_NUM_THREADS,
#   OPENBLAS_NUM_THREADS, PATH, LD_LIBRARY_PATH, and NCCL_DEBUG when set.
# As root, --allow-run-as-root is added. Extra mpirun flags: LATTE_MPIRUN_FLAGS.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: HOSTFILE=hosts.txt [NET_IF=eth0] $0 N COMMAND [ARGS...]" >&2
  exit 2
fi
n=$1
shift
hostfile=${HOSTFILE:?set HOSTFILE to an OpenMPI hostfile (lines like: gpu-a slots=8)}
[ -r "$hostfile" ] || { echo "$0: cannot read hostfile '$hostfile'" >&2; exit 1; }
net_if=${NET_IF:-eth0}

export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-$net_if}
export LATTE_COLLECTIVE_TIMEOUT_S=${LATTE_COLLECTIVE_TIMEOUT_S:-600}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}

flags=(--hostfile "$hostfile" --map-by slot --bind-to none
       --mca btl "self,vader,tcp" --mca btl_tcp_if_include "$net_if" --mca oob_tcp_if_include "$net_if"
       -x NCCL_SOCKET_IFNAME -x LATTE_COLLECTIVE_TIMEOUT_S -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS
       -x PATH -x LD_LIBRARY_PATH)
[ -z "${NCCL_DEBUG:-}" ] || flags+=(-x NCCL_DEBUG)
[ "$(id -u)" -ne 0 ] || flags+=(--allow-run-as-root)
# shellcheck disable=SC2206
flags+=(${LATTE_MPIRUN_FLAGS:-})
exec mpirun -np "$n" "${flags[@]}" "$@"
