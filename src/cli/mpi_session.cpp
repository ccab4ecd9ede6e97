#include "mpi_session.hpp"

#include <cstdio>
#include <cstdlib>

#include "lrlab/error.hpp"

#ifdef LRLAB_HAVE_MPI
#include <mpi.h>
#endif

namespace lrlab::cli {

bool launched_by_mpi() {
  if (launcher_rank()) return true;
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

const char* launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
    if (const char* rank = std::getenv(v)) return rank;
  return nullptr;
}

MpiSession::MpiSession() {
  if (!launched_by_mpi()) return;
#ifdef LRLAB_HAVE_MPI
  // Worker threads train, only this thread calls MPI.
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  initialised_ = true;
  if (provided < MPI_THREAD_FUNNELED)
    std::fprintf(stderr, "warning: this MPI promises no support for threaded processes; lrlab's worker threads "
                         "never call MPI, which works with common MPIs\n");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_free(&local);
#else
  LRLAB_FAIL("started by an MPI launcher, but this lrlab was built without MPI");
#endif
}

MpiSession::~MpiSession() {
#ifdef LRLAB_HAVE_MPI
  if (initialised_) MPI_Finalize();
#endif
}

std::vector<std::string> MpiSession::gather(const std::string& text) const {
  if (!active()) return {text};
#ifdef LRLAB_HAVE_MPI
  int len = static_cast<int>(text.size());
  std::vector<int> lens(rank_ == 0 ? size_ : 0), offsets(rank_ == 0 ? size_ : 0);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string all;
  if (rank_ == 0) {
    int total = 0;
    for (int i = 0; i < size_; ++i) {
      offsets[i] = total;
      total += lens[i];
    }
    all.resize(total);
  }
  MPI_Gatherv(text.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (rank_ == 0)
    for (int i = 0; i < size_; ++i) out.push_back(all.substr(offsets[i], lens[i]));
  return out;
#else
  return {text};
#endif
}

bool MpiSession::agree(const std::string& error) const {
  const std::vector<std::string> errors = gather(error);
  int ok = error.empty() ? 1 : 0, all = ok;
#ifdef LRLAB_HAVE_MPI
  if (active()) MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
#endif
  if (rank_ == 0 && !all) {
    std::string first;
    bool same = true;
    for (const std::string& e : errors) {
      if (e.empty()) same = false;
      else if (first.empty()) first = e;
      else same = same && e == first;
    }
    if (same) std::fprintf(stderr, "error: %s\n", first.c_str());
    else
      for (size_t r = 0; r < errors.size(); ++r)
        if (!errors[r].empty()) std::fprintf(stderr, "error: rank %zu: %s\n", r, errors[r].c_str());
  }
  return all != 0;
}

void MpiSession::abort(int status) const {
#ifdef LRLAB_HAVE_MPI
  if (initialised_) MPI_Abort(MPI_COMM_WORLD, status);
#endif
  std::exit(status);
}

}  // namespace lrlab::cli
