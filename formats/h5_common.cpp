#include "formats/h5_common.hpp"

#include "core/error.hpp"

namespace upcycle::h5 {

std::unique_lock<std::recursive_mutex> lock_hdf5() {
  static std::recursive_mutex mutex;
  std::unique_lock lock(mutex);
  // libhdf5's exit handler closes the files still registered with it, and crashes (SIGSEGV) on
  // one whose close failed, as on a full disk: every handle here closes itself (Id), so the
  // handler is switched off before the library first starts.
  static const bool no_exit_handler = H5dont_atexit() >= 0;
  (void)no_exit_handler;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our one-line errors, not HDF5's stack dumps
  return lock;
}

std::string hdf5_error() {
  std::string detail;
  auto innermost = [](unsigned n, const H5E_error2_t* err, void* out) -> herr_t {
    try {
      if (n == 0 && err->desc) static_cast<std::string*>(out)->assign(err->desc);
      return 0;
    } catch (...) {
      return -1;
    }
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &detail);
  H5Eclear2(H5E_DEFAULT);
  return detail.empty() ? std::string("HDF5 gave no detail") : detail;
}

void check(bool ok, const fs::path& file, const std::string& where, const std::string& what) {
  if (ok) return;
  std::string detail = what;
  detail.append(" (").append(hdf5_error()).append(")");
  throw InputError(file, where, detail);
}

Id checked(hid_t id, const fs::path& file, const std::string& where, const std::string& what) {
  check(id >= 0, file, where, what);
  return Id(id);
}

Id string_type(size_t size, H5T_cset_t cset, const fs::path& file, const std::string& where) {
  Id type = checked(H5Tcopy(H5T_C_S1), file, where, "cannot make a string type");
  check(H5Tset_size(type.get(), size) >= 0 && H5Tset_cset(type.get(), cset) >= 0, file, where,
        "cannot make a string type");
  return type;
}

std::string type_name(hid_t type) {
  const std::string bits = std::to_string(8 * H5Tget_size(type));
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + bits;
    case H5T_FLOAT: return "float" + bits;
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    case H5T_OPAQUE: return "opaque";
    case H5T_BITFIELD: return "bitfield";
    case H5T_REFERENCE: return "reference";
    default: return "unknown type";
  }
}

}  // namespace upcycle::h5
