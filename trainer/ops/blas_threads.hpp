// OpenBLAS called from inside an OpenMP region must not start threads of its own: each OpenMP
// thread already has a core. This guard makes OpenBLAS single-threaded for its lifetime.
#pragma once

extern "C" {
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
}

namespace upcycle::ops {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(saved_); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace upcycle::ops
