// HDF5 checkpoints, written (layout in formats/h5.hpp): HDF5 makes the metadata, and each tensor's
// bytes go straight to its contiguous dataset's place in a staged file, tensor by tensor.
#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/background_writer.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "core/staged_path.hpp"
#include "core/tensor_names.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/h5.hpp"
#include "formats/h5_common.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using namespace h5;

// Tensors' bytes go into the file as they are in memory, and the layout is little endian.
static_assert(std::endian::native == std::endian::little);

namespace {

// How a dtype is stored: its file type and whether it needs the "dtype" attribute.
struct Storage {
  hid_t file_type;
  bool tagged;
};

Storage storage_for(DType dtype) {
  switch (dtype) {
    case DType::F32: return {H5T_IEEE_F32LE, false};
    case DType::F64: return {H5T_IEEE_F64LE, false};
    case DType::BF16:
    case DType::F16: return {H5T_STD_U16LE, true};
    default: throw std::logic_error("HDF5 layout: cannot store " + std::string(dtype_name(dtype)));
  }
}

// A scalar fixed-length, NUL-padded UTF-8 string attribute. Fixed rather than variable length:
// variable-length strings live in HDF5's global heap, whose reader in libhdf5 1.10 trusts object
// indices and crashes on a corrupted one; fixed-length text is stored with the attribute itself.
void write_string_attribute(hid_t obj, const char* name, const std::string& value, const fs::path& out,
                            const std::string& where) {
  const std::string padded = value.empty() ? std::string(1, '\0') : value;  // HDF5 strings have size >= 1
  Id type = string_type(padded.size(), H5T_CSET_UTF8, out, where);
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD) >= 0, out, where, "cannot make a string type");
  Id space = checked(H5Screate(H5S_SCALAR), out, where, "cannot create it");
  Id attr = checked(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), out, where,
                    "cannot create it");
  check(H5Awrite(attr.get(), type.get(), padded.data()) >= 0, out, where, "cannot write it");
}

void write_int_attribute(hid_t obj, const char* name, int64_t value, const fs::path& out, const std::string& where) {
  Id space = checked(H5Screate(H5S_SCALAR), out, where, "cannot create it");
  Id attr = checked(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), out, where,
                    "cannot create it");
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) >= 0, out, where, "cannot write it");
}

// A new file whose root group tracks and indexes link creation order (the tensors' order; the
// index lets h5py iterate in it too), in the HDF5 1.8 format: its metadata carries checksums, so
// corruption is reported rather than misread, and attributes (the config) may exceed 64 KiB.
// No timestamps: the same checkpoint always gives the same bytes.
Id create_file(const fs::path& temp, const fs::path& out) {
  Id fcpl = checked(H5Pcreate(H5P_FILE_CREATE), out, "", "cannot create the file");
  Id fapl = checked(H5Pcreate(H5P_FILE_ACCESS), out, "", "cannot create the file");
  check(H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0 &&
            H5Pset_obj_track_times(fcpl.get(), false) >= 0 &&
            H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18) >= 0,
        out, "", "cannot create the file");
  return checked(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), out, "",
                 "cannot create " + temp.string());
}

// A contiguous dataset for a tensor, its space allocated now and never filled (the bytes come
// next); returns where its data starts in the file.
uint64_t create_dataset(hid_t file, const std::string& name, const Shape& shape, DType dtype, const fs::path& out) {
  const std::string where = "dataset '" + name + "'";
  const Storage storage = storage_for(dtype);
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  Id space = checked(H5Screate_simple(int(dims.size()), dims.data(), nullptr), out, where, "cannot create it");
  Id dcpl = checked(H5Pcreate(H5P_DATASET_CREATE), out, where, "cannot create it");
  check(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS) >= 0 && H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY) >= 0 &&
            H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) >= 0 && H5Pset_obj_track_times(dcpl.get(), false) >= 0,
        out, where, "cannot create it");
  Id ds = checked(H5Dcreate2(file, name.c_str(), storage.file_type, space.get(), H5P_DEFAULT, dcpl.get(),
                             H5P_DEFAULT),
                  out, where, "cannot create it");
  if (storage.tagged) write_string_attribute(ds.get(), "dtype", std::string(dtype_name(dtype)), out, where);
  const haddr_t offset = H5Dget_offset(ds.get());
  const bool empty = *shape_elements(shape) == 0;  // nothing allocated, no offset
  check(empty || offset != HADDR_UNDEF, out, where, "has no place in the file");
  return empty ? 0 : uint64_t(offset);
}

// The file being written: HDF5 writes the metadata; the tensors' bytes go through a plain
// descriptor straight to each contiguous dataset's range of the file (which is all such a
// dataset's data is), in pieces from write_converted, so no tensor is ever held converted in full.
class H5Writer {
 public:
  H5Writer(const fs::path& temp, const fs::path& out, const ModelConfig& config) : out_(out) {
    {
      auto lock = lock_hdf5();
      file_ = create_file(temp, out);
      write_string_attribute(file_.get(), "format", kFormat, out, "root attribute 'format'");
      write_int_attribute(file_.get(), "format_version", kFormatVersion, out, "root attribute 'format_version'");
      write_string_attribute(file_.get(), "config", config.to_json().dump(), out, "root attribute 'config'");
    }
    fd_ = ::open(temp.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) throw InputError(out, std::string("cannot open for writing: ") + std::strerror(errno));
    data_ = std::make_unique<BackgroundWriter>(fd_, out, false);  // HDF5 writes its metadata through the page cache
  }
  ~H5Writer() {
    data_.reset();  // its queue finished before the file closes
    if (fd_ >= 0) ::close(fd_);
  }
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  void write(const std::string& name, const Tensor& t, DType dtype) {
    uint64_t offset = 0;
    {
      auto lock = lock_hdf5();
      offset = create_dataset(file_.get(), name, t.shape(), dtype, out_);
    }
    // Unchanged bytes from a file go file to file in the kernel, at the speed of a plain copy.
    if (t.dtype() == dtype && t.file_span()) return data_->copy(t.file_span()->file, t.file_span()->offset, t.nbytes(), offset);
    const uint64_t element_bytes = dtype_info(dtype).block_bytes;
    write_converted(t, dtype, [&](std::span<const std::byte> bytes, uint64_t first_element) {
      data_->write(bytes, offset + first_element * element_bytes);
    }, offset);
  }

  // HDF5's metadata out, then everything on disk before the caller renames the file into place.
  void finish() {
    data_->drain();
    data_.reset();
    {
      auto lock = lock_hdf5();
      check(file_.close(), out_, "", "cannot finish writing the file");
    }
    const bool synced = ::fsync(fd_) == 0;
    const bool closed = ::close(std::exchange(fd_, -1)) == 0;
    if (!synced || !closed) throw InputError(out_, std::string("cannot flush: ") + std::strerror(errno));
  }

 private:
  fs::path out_;
  Id file_;
  int fd_ = -1;
  std::unique_ptr<BackgroundWriter> data_;  // the tensors' bytes, on a thread of their own
};

// Refuses, before anything is written, tensors the layout cannot hold.
void check_writable(const Checkpoint& in) {
  for (const TensorInfo& t : in.tensors()) {
    const std::string where = "tensor '" + t.name + "'";
    require(!t.name.empty() && t.name.find('/') == std::string::npos, in.path(), where,
            "the HDF5 layout needs a non-empty name without '/' (HDF5 reads '/' as a group path)");
    require(!t.shape.empty() && t.shape.size() <= kMaxRank, in.path(), where,
            "rank " + std::to_string(t.shape.size()) + ": the HDF5 layout holds 1 to " + std::to_string(kMaxRank) +
                " dimensions");
  }
}

uint64_t output_bytes(const Checkpoint& in, const WriteOptions& opts) {
  uint64_t total = 0;
  for (const TensorInfo& t : in.tensors()) total += *dtype_bytes(output_dtype(t.dtype, opts), *shape_elements(t.shape));
  return total;
}

}  // namespace

void write_h5(const Checkpoint& in, const fs::path& out, const WriteOptions& opts) {
  check_writable(in);
  std::vector<std::string> names;
  for (const TensorInfo& t : in.tensors()) names.push_back(t.name);

  StagedPath staged(out, opts.overwrite);
  Progress progress("writing " + out.filename().string(), output_bytes(in, opts), "B", opts.progress);
  H5Writer writer(staged.temp(), out, in.config());
  for (size_t i : canonical_order(names)) {
    const TensorInfo& info = in.tensors()[i];
    // Loaded outside the HDF5 lock: a computed source may read other HDF5 files on other threads.
    const Tensor t = in.load(info.name);
    require(t.shape() == info.shape, in.path(), "tensor '" + info.name + "'",
            "loaded with shape " + shape_string(t.shape()) + " but listed as " + shape_string(info.shape));
    const DType dtype = output_dtype(t.dtype(), opts);
    writer.write(info.name, t, dtype);
    progress.advance(*dtype_bytes(dtype, t.numel()));
  }
  writer.finish();
  staged.commit();
  progress.finish();
}

}  // namespace upcycle
