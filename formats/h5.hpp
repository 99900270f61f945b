// HDF5 checkpoints, our own layout (README "HDF5 layout"), read and written with the HDF5 C API:
// - one dataset per tensor at the root group, named by its Hugging Face name; nothing else
//   there (groups, soft or external links are errors);
// - root attributes "config" (the config.json text, a string), "format" = "upcycle-checkpoint"
//   (a string) and "format_version" = 1 (an integer); the reader requires "config" and checks the
//   other two when present, so a file made by hand needs only "config". Strings are written
//   fixed length (NUL padded, UTF-8) and read fixed or variable length;
// - f32 and f64 as H5T_IEEE_F32LE / H5T_IEEE_F64LE; bf16 and f16 as H5T_STD_U16LE with a string
//   attribute "dtype" = "bf16" or "f16" on the dataset (HDF5 1.10 has no half type), so the bits
//   are kept exactly. The reader also takes big-endian variants and h5py's IEEE half floats (f16);
// - tensors in canonical order (core/tensor_names.hpp); the root group tracks and indexes link
//   creation order, and readers present datasets in it. A file whose root does not (h5py's
//   default) is presented in canonical order;
// - written contiguous, in the HDF5 1.8 file format (checksummed object headers), with the root's
//   links kept in its object header and no timestamps (the same input gives the same bytes). The
//   reader also takes compact and chunked datasets (deflate, shuffle, fletcher32), never data in
//   external files or virtual datasets.
//
// libhdf5 is thread-safe only when built so (Debian's is; a default build is not): every HDF5
// call made here runs under one process-wide lock, so checkpoints may be shared between threads
// whatever the build, their calls running one at a time.
#pragma once
#include <filesystem>
#include <memory>

#include "core/checkpoint.hpp"

namespace upcycle {

// Validates the attributes and every dataset's type, shape and stored size (against the shape
// and the file size); tensors load lazily as owned tensors. Does not check tensors against the
// config: open_checkpoint() does. InputError naming the file (and dataset or attribute).
std::unique_ptr<Checkpoint> open_h5(const std::filesystem::path& path);

}  // namespace upcycle
