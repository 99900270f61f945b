// OpenBLAS called from inside an OpenMP region must not start threads of its own: each OpenMP
// thread already has a core. OpenBLAS built for OpenMP sees the region and stays on the calling
// thread by itself (and its openblas_set_num_threads would change OpenMP's own thread count);
// the pthreads build needs this guard, which makes it single-threaded for the guard's lifetime.
#pragma once

extern "C" {
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);  // 0 sequential, 1 pthreads, 2 OpenMP
}

namespace upcycle::ops {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : active_(openblas_get_parallel() == 1), saved_(openblas_get_num_threads()) {
    if (active_) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (active_) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  bool active_;
  int saved_;
};

}  // namespace upcycle::ops
