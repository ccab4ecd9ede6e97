// MPI for `mpirun -np N lrlab sweep`: initialised only when the process was started by an MPI
// launcher, so a plain `lrlab` run never touches MPI.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace lrlab::cli {

// The CPU threads for one of `local_ranks` ranks on a node of `cores` cores, where its own budget
// (OpenMP's: OMP_NUM_THREADS, or the cores mpirun bound it to) is `budget`: an unbound rank takes its
// share of the node rather than all of it.
inline int cpu_threads_per_rank(int budget, int cores, int local_ranks) {
  return std::max(1, std::min(budget, cores / std::max(1, local_ranks)));
}

// Rank 0's warning when ranks train on the same GPU, from each rank's GPU UUID ("" for a rank on the
// CPU), or "" when none share one. A node whose launcher gives each rank its own GPU
// (CUDA_VISIBLE_DEVICES) gets none, though each rank sees a single device 0.
inline std::string shared_gpu_warning(const std::vector<std::string>& gpu_of_rank) {
  std::map<std::string, std::vector<size_t>> ranks_of;
  for (size_t r = 0; r < gpu_of_rank.size(); ++r)
    if (!gpu_of_rank[r].empty()) ranks_of[gpu_of_rank[r]].push_back(r);
  std::vector<std::pair<std::vector<size_t>, std::string>> shared;  // by their lowest rank
  for (const auto& [gpu, ranks] : ranks_of)
    if (ranks.size() > 1) shared.push_back({ranks, gpu});
  if (shared.empty()) return "";
  std::sort(shared.begin(), shared.end());
  std::string text;
  for (size_t g = 0; g < shared.size() && g < 3; ++g) {  // the first three say enough
    const std::vector<size_t>& ranks = shared[g].first;
    std::vector<std::string> runs;  // "0-7" for ranks 0 to 7
    for (size_t i = 0; i < ranks.size();) {
      size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      runs.push_back(std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : ""));
      i = j + 1;
    }
    std::string list;
    for (size_t i = 0; i < runs.size(); ++i) list += (i == 0 ? "" : i + 1 == runs.size() ? " and " : ", ") + runs[i];
    text += (g == 0 ? "ranks " : "; ranks ") + list + " share " + shared[g].second;
  }
  if (shared.size() > 3)
    text += "; and " + std::to_string(shared.size() - 3) + " more GPU" + (shared.size() == 4 ? "" : "s");
  return text + " (one rank per GPU trains fastest)";
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
