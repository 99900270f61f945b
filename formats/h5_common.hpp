// What the HDF5 reader and writer share (internal to core/h5_*.cpp): the layout's constants,
// the process-wide lock around libhdf5, an owning handle for HDF5 identifiers, and errors that
// carry HDF5's own detail.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <utility>

namespace upcycle::h5 {

namespace fs = std::filesystem;

inline constexpr const char* kFormat = "upcycle-checkpoint";
inline constexpr int64_t kFormatVersion = 1;
inline constexpr size_t kMaxRank = 8;

// libhdf5 is thread-safe only when built so (Debian's is; a default build is not): every HDF5
// call runs under this lock, whatever the build. Recursive, because handles close (and lock)
// inside locked sections.
std::unique_lock<std::recursive_mutex> lock_hdf5();

// Owns one HDF5 identifier and closes it with the matching call, so error paths leak nothing.
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  Id(Id&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  Id& operator=(Id&& other) noexcept {
    if (this != &other) {
      close();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~Id() { close(); }

  hid_t get() const { return id_; }
  // Closes now; false when that failed (for a file: its final flush).
  bool close() {
    if (id_ < 0) return true;
    auto lock = lock_hdf5();
    return close_id(std::exchange(id_, H5I_INVALID_HID)) >= 0;
  }

 private:
  static herr_t close_id(hid_t id) {
    switch (H5Iget_type(id)) {
      case H5I_FILE: return H5Fclose(id);
      case H5I_GROUP: return H5Gclose(id);
      case H5I_DATASET: return H5Dclose(id);
      case H5I_ATTR: return H5Aclose(id);
      case H5I_DATASPACE: return H5Sclose(id);
      case H5I_DATATYPE: return H5Tclose(id);
      case H5I_GENPROP_LST: return H5Pclose(id);
      default: return H5Idec_ref(id);
    }
  }
  hid_t id_ = H5I_INVALID_HID;
};

// The most specific message on HDF5's error stack ("truncated file: eof = ..."); clears it.
std::string hdf5_error();
// InputError carrying HDF5's own detail when a call failed.
void check(bool ok, const fs::path& file, const std::string& where, const std::string& what);
Id checked(hid_t id, const fs::path& file, const std::string& where, const std::string& what);
// A string type of `size` bytes (or H5T_VARIABLE) in a character set.
Id string_type(size_t size, H5T_cset_t cset, const fs::path& file, const std::string& where);
// A type as numpy would name it ("int32", "uint16", "float64"), for messages.
std::string type_name(hid_t type);

}  // namespace upcycle::h5
