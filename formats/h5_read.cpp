// HDF5 checkpoints, read (layout in formats/h5.hpp and README "HDF5 layout"): every dataset's type,
// shape and stored size is checked against the file before anything is allocated for it.
#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/mapped_file.hpp"
#include "core/tensor_names.hpp"
#include "formats/h5.hpp"
#include "formats/h5_common.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using namespace h5;

namespace {

// Deflate cannot inflate more than 1032:1, so a chunked dataset claiming more data than that per
// stored byte is lying (or missing chunks).
constexpr uint64_t kDeflateMaxRatio = 1032;

// The file being read: its path names every error, its size bounds every length.
struct Source {
  fs::path path;
  uint64_t size;
};

// Attribute `name` of `obj` holding exactly one value, or nullopt when absent.
std::optional<Id> open_attribute(hid_t obj, const char* name, const Source& src, const std::string& where) {
  const htri_t exists = H5Aexists(obj, name);
  check(exists >= 0, src.path, where, "cannot look it up");
  if (exists == 0) return std::nullopt;
  Id attr = checked(H5Aopen(obj, name, H5P_DEFAULT), src.path, where, "cannot open it");
  Id space = checked(H5Aget_space(attr.get()), src.path, where, "cannot read its dataspace");
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  require(n == 1, src.path, where, "holds " + std::to_string(n) + " values: expected one");
  return attr;
}

std::string read_variable_string(hid_t attr, hid_t file_type, const Source& src, const std::string& where) {
  Id memory = string_type(H5T_VARIABLE, H5Tget_cset(file_type), src.path, where);
  char* text = nullptr;
  check(H5Aread(attr, memory.get(), &text) >= 0, src.path, where, "cannot read it");
  std::unique_ptr<char, void (*)(char*)> owner(text, [](char* p) { H5free_memory(p); });
  return text ? std::string(text) : std::string();
}

std::string read_fixed_string(hid_t attr, hid_t file_type, const Source& src, const std::string& where) {
  const size_t size = H5Tget_size(file_type);
  require(size > 0 && size <= src.size, src.path, where,
          "string of " + std::to_string(size) + " bytes in a file of " + std::to_string(src.size));
  std::string text(size, '\0');
  check(H5Aread(attr, file_type, text.data()) >= 0, src.path, where, "cannot read it");  // bytes as stored
  if (size_t end = text.find('\0'); end != std::string::npos) text.resize(end);
  if (H5Tget_strpad(file_type) == H5T_STR_SPACEPAD) text.erase(text.find_last_not_of(' ') + 1);
  return text;
}

// A string attribute's text, variable- or fixed-length; nullopt when absent.
std::optional<std::string> read_string_attribute(hid_t obj, const char* name, const Source& src,
                                                 const std::string& where) {
  std::optional<Id> attr = open_attribute(obj, name, src, where);
  if (!attr) return std::nullopt;
  Id type = checked(H5Aget_type(attr->get()), src.path, where, "cannot read its type");
  require(H5Tget_class(type.get()) == H5T_STRING, src.path, where,
          "has type " + type_name(type.get()) + ": expected a string");
  const htri_t variable = H5Tis_variable_str(type.get());
  check(variable >= 0, src.path, where, "cannot read its type");
  return variable ? read_variable_string(attr->get(), type.get(), src, where)
                  : read_fixed_string(attr->get(), type.get(), src, where);
}

std::optional<int64_t> read_int_attribute(hid_t obj, const char* name, const Source& src, const std::string& where) {
  std::optional<Id> attr = open_attribute(obj, name, src, where);
  if (!attr) return std::nullopt;
  Id type = checked(H5Aget_type(attr->get()), src.path, where, "cannot read its type");
  require(H5Tget_class(type.get()) == H5T_INTEGER, src.path, where,
          "has type " + type_name(type.get()) + ": expected an integer");
  int64_t value = 0;
  check(H5Aread(attr->get(), H5T_NATIVE_INT64, &value) >= 0, src.path, where, "cannot read it");
  return value;
}

// "format" and "format_version" are checked when present (files made by hand may omit them).
void check_format(hid_t root, const Source& src) {
  if (auto format = read_string_attribute(root, "format", src, "root attribute 'format'"))
    require(*format == kFormat, src.path, "root attribute 'format'",
            "'" + *format + "': expected '" + kFormat + "'");
  if (auto version = read_int_attribute(root, "format_version", src, "root attribute 'format_version'"))
    require(*version == kFormatVersion, src.path, "root attribute 'format_version'",
            std::to_string(*version) + ": this tool reads version " + std::to_string(kFormatVersion));
}

ModelConfig read_config(hid_t root, const Source& src) {
  const std::string where = "root attribute 'config'";
  std::optional<std::string> text = read_string_attribute(root, "config", src, where);
  require(text.has_value(), src.path, "missing root attribute 'config' (the model's config.json)");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(src.path, where, std::string("not valid JSON: ") + e.what());
  }
  return ModelConfig::from_json(j, src.path);
}

struct Link {
  std::string name;
  H5L_type_t type;
  std::optional<int64_t> creation_order;  // when the group tracks it
};

// The root's links in the order HDF5 finds them fastest. Any other order makes libhdf5 1.10
// build a table first, and on a corrupted file it then frees pointers it never set.
std::vector<Link> root_links(hid_t root, const Source& src) {
  std::vector<Link> links;
  auto collect = [](hid_t, const char* name, const H5L_info_t* info, void* out) -> herr_t {
    try {
      auto order = info->corder_valid ? std::optional<int64_t>(info->corder) : std::nullopt;
      static_cast<std::vector<Link>*>(out)->push_back({name, info->type, order});
      return 0;
    } catch (...) {
      return -1;
    }
  };
  check(H5Literate(root, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, collect, &links) >= 0, src.path, "root group",
        "cannot list its members");
  return links;
}

// The tensors' names in the file's creation order, or canonical order when it records none.
std::vector<std::string> dataset_names(hid_t root, const Source& src) {
  std::vector<Link> links = root_links(root, src);
  const bool tracked = std::all_of(links.begin(), links.end(), [](const Link& l) { return l.creation_order; });
  std::vector<std::string> names;
  for (const Link& link : links) {
    // Soft and external links are never followed: an external one could point at any file.
    require(link.type == H5L_TYPE_HARD, src.path, "root member '" + link.name + "'",
            "is a soft or external link: expected a dataset");
    names.push_back(link.name);
  }
  std::vector<size_t> order;
  if (tracked) {
    for (size_t i = 0; i < links.size(); ++i) order.push_back(i);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return *links[a].creation_order < *links[b].creation_order; });
  } else {
    order = canonical_order(names);
  }
  std::vector<std::string> ordered;
  for (size_t i : order) ordered.push_back(names[i]);
  return ordered;
}

bool is_ieee_half(hid_t type) {
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  return H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 2 && H5Tget_order(type) == H5T_ORDER_LE &&
         H5Tget_precision(type) == 16 && H5Tget_offset(type) == 0 && H5Tget_ebias(type) == 15 &&
         H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == 15 && epos == 10 &&
         esize == 5 && mpos == 0 && msize == 10;
}

// What the element type alone says. u16 needs the "dtype" attribute to say what its bits are.
enum class Stored { F32, F64, Half, U16, Other };

Stored classify(hid_t type) {
  auto is = [type](hid_t other) { return H5Tequal(type, other) > 0; };
  if (is(H5T_IEEE_F32LE) || is(H5T_IEEE_F32BE)) return Stored::F32;
  if (is(H5T_IEEE_F64LE) || is(H5T_IEEE_F64BE)) return Stored::F64;
  if (is(H5T_STD_U16LE) || is(H5T_STD_U16BE)) return Stored::U16;
  if (is_ieee_half(type)) return Stored::Half;
  return Stored::Other;
}

// The dtype a dataset loads as, from its element type and its optional "dtype" attribute.
DType element_dtype(hid_t type, const std::optional<std::string>& attr, const Source& src,
                    const std::string& where) {
  const Stored stored = classify(type);
  require(stored != Stored::Other, src.path, where,
          "has type " + type_name(type) + ": expected f32/f64 or u16 with a dtype attribute");
  require(stored != Stored::U16 || attr.has_value(), src.path, where,
          "has type uint16 but no 'dtype' attribute saying what its bits hold (bf16 or f16)");
  if (!attr) return stored == Stored::F32 ? DType::F32 : stored == Stored::F64 ? DType::F64 : DType::F16;

  const std::optional<DType> named = dtype_from_name(*attr);
  require(named.has_value(), src.path, where, "dtype attribute '" + *attr + "' unknown");
  const bool fits = stored == Stored::U16    ? *named == DType::BF16 || *named == DType::F16
                    : stored == Stored::F32  ? *named == DType::F32
                    : stored == Stored::F64  ? *named == DType::F64
                                             : *named == DType::F16;
  require(fits, src.path, where, "dtype attribute '" + *attr + "' does not fit its type " + type_name(type));
  return *named;
}

Shape read_shape(hid_t dataset, const Source& src, const std::string& where) {
  Id space = checked(H5Dget_space(dataset), src.path, where, "cannot read its dataspace");
  const int rank = H5Sget_simple_extent_ndims(space.get());  // 0 for scalar and null dataspaces
  check(rank >= 0, src.path, where, "cannot read its dataspace");
  require(rank >= 1 && size_t(rank) <= kMaxRank, src.path, where,
          "rank " + std::to_string(rank) + ": expected 1 to " + std::to_string(kMaxRank) + " dimensions");
  hsize_t dims[kMaxRank] = {};
  check(H5Sget_simple_extent_dims(space.get(), dims, nullptr) >= 0, src.path, where, "cannot read its dimensions");
  Shape shape;
  for (int i = 0; i < rank; ++i) {
    require(dims[i] <= uint64_t(std::numeric_limits<int64_t>::max()), src.path, where,
            "dimension " + std::to_string(dims[i]) + " is too large");
    shape.push_back(int64_t(dims[i]));
  }
  return shape;
}

// How many bytes of data a chunked dataset may hold per stored byte: 1 unfiltered, deflate's limit
// per deflate stage. Filters without such a bound (szip, scale-offset, n-bit, plugins) are refused.
uint64_t max_inflation(hid_t dcpl, const Source& src, const std::string& where) {
  uint64_t ratio = 1;
  const int filters = H5Pget_nfilters(dcpl);
  check(filters >= 0, src.path, where, "cannot read its filters");
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0, filter_config = 0;
    size_t values = 0;
    char name[64] = {};
    const H5Z_filter_t filter =
        H5Pget_filter2(dcpl, unsigned(i), &flags, &values, nullptr, sizeof name, name, &filter_config);
    if (filter == H5Z_FILTER_DEFLATE) {
      constexpr uint64_t saturated = std::numeric_limits<uint64_t>::max();
      ratio = ratio > saturated / kDeflateMaxRatio ? saturated : ratio * kDeflateMaxRatio;
      continue;
    }
    require(filter == H5Z_FILTER_SHUFFLE || filter == H5Z_FILTER_FLETCHER32, src.path, where,
            "compressed with filter " + std::to_string(filter) + " ('" + name +
                "'): only deflate (gzip), shuffle and fletcher32 are read");
  }
  return ratio;
}

// Refuses a dataset whose stored bytes cannot hold what its shape claims, before anything is
// allocated for it. Contiguous and compact data must be exactly the shape's bytes (and lie
// inside the file: HDF5 reads past the end as zeros); chunked data may be compressed.
void check_storage(hid_t dataset, const TensorInfo& info, uint64_t nbytes, const Source& src,
                   const std::string& where) {
  Id dcpl = checked(H5Dget_create_plist(dataset), src.path, where, "cannot read its properties");
  require(H5Pget_external_count(dcpl.get()) == 0, src.path, where, "keeps its data in external files: not read");
  const uint64_t stored = H5Dget_storage_size(dataset);
  require(stored <= src.size, src.path, where,
          "claims " + std::to_string(stored) + " bytes of data in a file of " + std::to_string(src.size));
  const std::string needs = "shape " + shape_string(info.shape) + " of " + std::string(dtype_name(info.dtype)) +
                            " needs " + std::to_string(nbytes);
  const std::string mismatch = "stores " + std::to_string(stored) + " bytes of data but " + needs;
  switch (H5Pget_layout(dcpl.get())) {
    case H5D_COMPACT: require(stored == nbytes, src.path, where, mismatch); return;
    case H5D_CONTIGUOUS: {
      require(stored == nbytes, src.path, where, mismatch);
      const haddr_t offset = H5Dget_offset(dataset);
      require(nbytes == 0 || (offset != HADDR_UNDEF && offset <= src.size - nbytes), src.path, where,
              "its data lies outside the file");
      return;
    }
    case H5D_CHUNKED:
      require(nbytes / max_inflation(dcpl.get(), src, where) <= stored, src.path, where,
              "stores " + std::to_string(stored) + " bytes of chunked data, too few even compressed: " + needs);
      return;
    case H5D_VIRTUAL: throw InputError(src.path, where, "is a virtual dataset: not read");
    default: throw InputError(src.path, where, "has an unknown storage layout");
  }
}

// An open, validated dataset, with its element type (half floats are read in it).
struct Dataset {
  Id id;
  Id file_type;
  TensorInfo info;
};

// Opens and validates one tensor's dataset: type, shape and stored size.
Dataset open_dataset(hid_t file, const std::string& name, const Source& src) {
  const std::string where = "dataset '" + name + "'";
  Id obj = checked(H5Oopen(file, name.c_str(), H5P_DEFAULT), src.path, where, "cannot open it");
  require(H5Iget_type(obj.get()) == H5I_DATASET, src.path, where,
          "is a group or a named type: expected one dataset per tensor at the root");
  Id type = checked(H5Dget_type(obj.get()), src.path, where, "cannot read its type");
  const auto tag = read_string_attribute(obj.get(), "dtype", src, where + " attribute 'dtype'");
  const DType dtype = element_dtype(type.get(), tag, src, where);
  TensorInfo info{name, dtype, read_shape(obj.get(), src, where)};
  const auto numel = shape_elements(info.shape);
  const auto nbytes = numel ? dtype_bytes(dtype, *numel) : std::nullopt;
  require(nbytes.has_value(), src.path, where, "shape " + shape_string(info.shape) + " is too large");
  check_storage(obj.get(), info, *nbytes, src, where);
  return {std::move(obj), std::move(type), std::move(info)};
}

// The memory type HDF5 hands a dtype's bytes over in (converting from big endian when stored so).
hid_t memory_type(DType dtype, hid_t file_type) {
  switch (dtype) {
    case DType::F32: return H5T_NATIVE_FLOAT;
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::BF16: return H5T_NATIVE_UINT16;
    case DType::F16:  // h5py's half floats are little endian only (is_ieee_half): read as stored
      return H5Tget_class(file_type) == H5T_FLOAT ? file_type : H5T_NATIVE_UINT16;
    default: throw std::logic_error("HDF5 layout: no memory type for " + std::string(dtype_name(dtype)));
  }
}

Id open_file(const Source& src) {
  require(H5Fis_hdf5(src.path.c_str()) > 0, src.path, "not an HDF5 file");
  return checked(H5Fopen(src.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), src.path, "", "damaged HDF5 file");
}

// Keeps the file open; each load() takes the HDF5 lock, so threads may share it (one at a time).
class H5Checkpoint final : public Checkpoint {
 public:
  H5Checkpoint(Source src, ModelConfig config, std::vector<TensorInfo> tensors, Id file)
      : Checkpoint(src.path, std::move(config), std::move(tensors)), src_(std::move(src)), file_(std::move(file)) {}

  Tensor load(const std::string& name) const override {
    const TensorInfo* info = find(name);
    require(info != nullptr, path(), "tensor '" + name + "'", "not in this checkpoint");
    auto lock = lock_hdf5();
    Dataset ds = open_dataset(file_.get(), name, src_);  // validated again before the allocation
    require(ds.info.shape == info->shape && ds.info.dtype == info->dtype, path(), "dataset '" + name + "'",
            "changed since the file was opened");
    Tensor t = Tensor::zeros(info->dtype, info->shape);
    check(H5Dread(ds.id.get(), memory_type(info->dtype, ds.file_type.get()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  t.mutable_bytes().data()) >= 0,
          path(), "dataset '" + name + "'", "cannot read its data");
    return t;
  }
  std::string_view format() const override { return "hdf5"; }

 private:
  Source src_;
  Id file_;
};

}  // namespace

std::unique_ptr<Checkpoint> open_h5(const fs::path& path) {
  Source src{path, ReadOnlyFile::open(path)->size()};
  auto lock = lock_hdf5();
  Id file = open_file(src);
  Id root = checked(H5Gopen2(file.get(), "/", H5P_DEFAULT), src.path, "root group", "cannot open it");
  check_format(root.get(), src);
  ModelConfig config = read_config(root.get(), src);
  std::vector<TensorInfo> tensors;
  for (const std::string& name : dataset_names(root.get(), src))
    tensors.push_back(open_dataset(file.get(), name, src).info);
  return std::make_unique<H5Checkpoint>(std::move(src), std::move(config), std::move(tensors), std::move(file));
}

}  // namespace upcycle
