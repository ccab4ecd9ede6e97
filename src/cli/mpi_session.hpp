// MPI for `mpirun -np N lrlab sweep`: initialised only when the process was started by an MPI
// launcher, so a plain `lrlab` run never touches MPI.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace lrlab::cli {

// The CPU threads for one of `local_ranks` ranks on a node of `cores` cores, where its own budget
// (OpenMP's: OMP_NUM_THREADS, or the cores mpirun bound it to) is `budget`: an unbound rank takes its
// share of the node rather than all of it.
inline int cpu_threads_per_rank(int budget, int cores, int local_ranks) {
  return std::max(1, std::min(budget, cores / std::max(1, local_ranks)));
}

// From the environment an MPI launcher (mpirun, mpiexec, srun over PMI or PMIx) gives each rank,
// before MPI is initialised: whether this process is one of its ranks, and which.
bool launched_by_mpi();
const char* launcher_rank();  // null outside a launcher

class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  bool active() const { return size_ > 1; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }  // ranks on this node
  // Every rank's text, on rank 0 (empty elsewhere).
  std::vector<std::string> gather(const std::string& text) const;
  // Every rank calls this once with its error ("" if none); true on every rank when all are "".
  // Otherwise rank 0 prints the errors, once if they are all the same, else each with its rank.
  bool agree(const std::string& error) const;
  // Ends every rank (after an error on one of them, so the others do not wait forever).
  [[noreturn]] void abort(int status) const;

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool initialised_ = false;
};

}  // namespace lrlab::cli
