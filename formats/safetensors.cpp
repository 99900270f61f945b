#include "formats/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/checkpoint_writer.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A header this large is no model's; refusing it bounds what a lying length can make us read.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// safetensors dtypes that are valid in the format but hold no float weights we compute with.
constexpr std::array<std::string_view, 16> kUnsupportedDtypes = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
    "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};

// Bytes of a shape in a dtype; nullopt when a dimension is negative or the product overflows.
std::optional<uint64_t> shape_bytes(DType dtype, const Shape& shape) {
  auto elements = shape_elements(shape);
  if (!elements) return std::nullopt;
  return dtype_bytes(dtype, *elements);
}

// ---- reading ----

uint64_t read_header_length(const ReadOnlyFile& file) {
  const fs::path& path = file.path();
  require(file.size() > 0, path, "empty file, not safetensors");
  require(file.size() >= 8, path,
          "file is " + std::to_string(file.size()) + " bytes, shorter than the 8-byte header length");
  std::array<std::byte, 8> raw{};
  file.read(0, raw);
  uint64_t n = 0;
  for (size_t i = 0; i < raw.size(); ++i) n |= uint64_t(raw[i]) << (8 * i);  // little endian
  require(n <= file.size() - 8, path,
          "header length " + std::to_string(n) + " exceeds the " + std::to_string(file.size() - 8) +
              " bytes after the length field");
  require(n <= kMaxHeaderBytes, path,
          "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
              " bytes");
  return n;
}

// Entries' shape and data_offsets arrays are the deepest containers a header has.
constexpr int kMaxContainerDepth = 2;

// Parses the header, with a callback for two things the plain parser would not do: report a
// repeated key (nlohmann keeps the last, so a repeated tensor name would silently win), and drop
// containers nested deeper than a header has as they come, so "[[[[..." costs no memory.
json parse_header(const std::string& text, const fs::path& path) {
  std::vector<std::set<std::string>> open_objects;  // keys seen, per object being parsed
  std::string repeated;
  bool too_deep = false;
  auto watch = [&](int depth, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth > kMaxContainerDepth) {
      too_deep = true;
      return false;  // dropped: no events for its end, nor keys we track
    }
    if (event == E::object_start) open_objects.emplace_back();
    else if (event == E::object_end) open_objects.pop_back();
    else if (event == E::key && depth == int(open_objects.size()) && repeated.empty() &&
             !open_objects.back().insert(parsed.get<std::string>()).second)
      repeated = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text, watch);
  } catch (const json::exception& e) {
    std::string why = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    throw InputError(path, "header is not valid JSON: " + why.substr(why.find(']') + 2));
  }
  require(!too_deep, path, "header nests arrays or objects deeper than a safetensors header has");
  require(repeated.empty(), path, "key '" + repeated + "'", "appears twice in the header");
  require(header.is_object(), path, "header is not a JSON object");
  return header;
}

// A value for an error message: scalars shortened, containers named rather than dumped.
std::string describe(const json& v) {
  if (v.is_structured()) return std::string("an ") + v.type_name();
  std::string text = v.dump();
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

std::optional<uint64_t> non_negative_integer(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return uint64_t(v.get<int64_t>());
  return std::nullopt;
}

const json& field(const json& entry, const char* key, const fs::path& path, const std::string& where) {
  auto it = entry.find(key);
  require(it != entry.end(), path, where, std::string("'") + key + "' is missing");
  return *it;
}

DType parse_dtype(const json& v, const fs::path& path, const std::string& where) {
  require(v.is_string(), path, where, "dtype must be a string");
  const std::string name = v.get<std::string>();
  if (auto t = dtype_from_safetensors(name)) return *t;
  bool valid = std::find(kUnsupportedDtypes.begin(), kUnsupportedDtypes.end(), name) != kUnsupportedDtypes.end();
  throw InputError(path, where,
                   valid ? "dtype " + name + " is not supported (only F32, F16, BF16, F64)"
                         : "unknown dtype '" + name + "'");
}

Shape parse_shape(const json& v, const fs::path& path, const std::string& where) {
  require(v.is_array(), path, where, "shape must be an array");
  Shape shape;
  shape.reserve(v.size());
  for (const json& d : v) {
    auto n = non_negative_integer(d);
    require(n && *n <= uint64_t(INT64_MAX), path, where, "shape must hold non-negative integers, found " + describe(d));
    shape.push_back(int64_t(*n));
  }
  return shape;
}

// data_offsets [begin, end), relative to the data area.
std::pair<uint64_t, uint64_t> parse_offsets(const json& v, const fs::path& path, const std::string& where) {
  require(v.is_array() && v.size() == 2, path, where, "data_offsets must be an array [begin, end]");
  auto begin = non_negative_integer(v[0]), end = non_negative_integer(v[1]);
  require(begin && end, path, where, "data_offsets must hold non-negative integers");
  require(*begin <= *end, path, where, "data_offsets begin " + std::to_string(*begin) + " lies after end " +
                                           std::to_string(*end));
  return {*begin, *end};
}

// One tensor's entry, checked on its own and against the data area; offset is still relative.
SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t data_size, const fs::path& path) {
  const std::string where = "tensor '" + name + "'";
  require(v.is_object(), path, where, "entry is not an object");
  DType dtype = parse_dtype(field(v, "dtype", path, where), path, where);
  Shape shape = parse_shape(field(v, "shape", path, where), path, where);
  auto [begin, end] = parse_offsets(field(v, "data_offsets", path, where), path, where);
  const std::optional<uint64_t> bytes = shape_bytes(dtype, shape);
  if (!bytes) throw InputError(path, where, "shape " + shape_string(shape) + " overflows a 64-bit byte count");
  const uint64_t nbytes = *bytes;
  require(nbytes == end - begin, path, where,
          "shape " + shape_string(shape) + " of " + std::string(dtype_info(dtype).safetensors) + " needs " +
              std::to_string(nbytes) + " bytes but data_offsets span " + std::to_string(end - begin));
  require(end <= data_size, path, where,
          "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + ") lie outside the data area (" +
              std::to_string(data_size) + " bytes)");
  return {{name, dtype, std::move(shape)}, begin, end - begin};
}

std::map<std::string, std::string> parse_metadata(const json& v, const fs::path& path) {
  require(v.is_object(), path, "__metadata__", "must be an object of strings");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    require(value.is_string(), path, "__metadata__ '" + key + "'", "value must be a string, found " + describe(value));
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

void sort_and_check_overlaps(std::vector<SafetensorsEntry>& entries, const fs::path& path) {
  std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return std::pair(a.offset, a.nbytes) < std::pair(b.offset, b.nbytes);
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    const SafetensorsEntry &prev = entries[i - 1], &cur = entries[i];
    require(cur.offset >= prev.offset + prev.nbytes, path, "tensor '" + cur.info.name + "'",
            "data overlaps tensor '" + prev.info.name + "'");
  }
}

// ---- writing ----

uint64_t tensor_bytes(const TensorInfo& t) {
  auto bytes = shape_bytes(t.dtype, t.shape);
  if (!bytes) throw std::invalid_argument("tensor '" + t.name + "' has an invalid shape " + shape_string(t.shape));
  return *bytes;
}

std::string_view safetensors_dtype(DType t) {
  std::string_view name = dtype_info(t).safetensors;
  if (name.empty()) throw std::invalid_argument("dtype " + std::string(dtype_name(t)) + " has no safetensors type");
  return name;
}

// "name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}: one member of the header.
std::string entry_text(const TensorInfo& t, uint64_t begin) {
  uint64_t end = begin + tensor_bytes(t);
  nlohmann::ordered_json v = {
      {"dtype", safetensors_dtype(t.dtype)}, {"shape", t.shape}, {"data_offsets", {begin, end}}};
  return json(t.name).dump() + ":" + v.dump();
}

// "{" and the __metadata__ member when there is one: the start of every header.
std::string header_start(const std::map<std::string, std::string>& metadata) {
  return metadata.empty() ? "{" : "{\"__metadata__\":" + json(metadata).dump();
}

uint64_t round_up_to_8(uint64_t n) { return (n + 7) / 8 * 8; }

// The padded JSON text (without the length field) the writer emits.
std::string header_text(const std::vector<TensorInfo>& tensors, const std::map<std::string, std::string>& metadata) {
  std::string text = header_start(metadata);
  uint64_t offset = 0;
  for (const TensorInfo& t : tensors) {
    if (text.size() > 1) text += ',';
    text += entry_text(t, offset);
    offset += tensor_bytes(t);
  }
  text += '}';
  text.resize(round_up_to_8(text.size()), ' ');
  return text;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  SafetensorsFile f;
  f.file_ = ReadOnlyFile::open(path);
  const uint64_t header_size = read_header_length(*f.file_);
  std::string text(header_size, '\0');
  f.file_->read(8, std::as_writable_bytes(std::span(text)));
  const json header = parse_header(text, path);

  const uint64_t data_start = 8 + header_size, data_size = f.file_->size() - data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      f.metadata_ = parse_metadata(value, path);
      continue;
    }
    f.entries_.push_back(parse_entry(name, value, data_size, path));
  }
  sort_and_check_overlaps(f.entries_, path);
  for (SafetensorsEntry& e : f.entries_) e.offset += data_start;
  return f;
}

Tensor SafetensorsFile::load(const SafetensorsEntry& entry) const {
  const uint64_t element_bytes = dtype_info(entry.info.dtype).block_bytes;
  if (entry.offset % element_bytes == 0)
    return Tensor::view(entry.info.dtype, entry.info.shape, file_->map(entry.offset, entry.nbytes))
        .with_file_span({file_, entry.offset});
  // Writers that do not pad leave tensors unaligned; typed access needs aligned elements.
  Tensor t = Tensor::zeros(entry.info.dtype, entry.info.shape);
  file_->read(entry.offset, t.mutable_bytes());
  return t;
}

SafetensorsWriter::SafetensorsWriter(const fs::path& path, std::vector<TensorInfo> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tensors_(std::move(tensors)) {
  const std::string text = header_text(tensors_, metadata);
  std::array<std::byte, 8> length{};
  for (size_t i = 0; i < length.size(); ++i) length[i] = std::byte(uint64_t(text.size()) >> (8 * i));
  total_ = 8 + text.size();
  for (const TensorInfo& t : tensors_) {
    at_.push_back(total_);
    total_ += tensor_bytes(t);
  }
  written_.assign(tensors_.size(), 0);

  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw InputError(path_, std::string("cannot create: ") + std::strerror(errno));
  out_ = std::make_unique<BackgroundWriter>(fd_, path_, true);
  out_->write(length, 0);
  out_->write(std::as_bytes(std::span(text)), 8);
}

SafetensorsWriter::~SafetensorsWriter() {
  out_.reset();  // its queue finished before the file closes
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo& SafetensorsWriter::check(size_t i, const Tensor& t) const {
  if (i >= tensors_.size()) throw std::logic_error(path_.string() + ": more tensors written than the header lists");
  const TensorInfo& want = tensors_[i];
  if (written_[i]) throw std::logic_error(path_.string() + ": tensor '" + want.name + "' written twice");
  if (t.shape() != want.shape || (is_quantized(t.dtype()) && want.dtype != DType::F32))
    throw std::logic_error(path_.string() + ": tensor '" + want.name + "' is " + std::string(dtype_name(t.dtype())) +
                           " " + shape_string(t.shape()) + " but the header says " +
                           std::string(dtype_name(want.dtype)) + " " + shape_string(want.shape));
  return want;
}

void SafetensorsWriter::claim(size_t i) {
  written_[i] = 1;
  ++count_;
  next_ = std::max(next_, i + 1);
}

void SafetensorsWriter::write(size_t i, const Tensor& t) {
  const TensorInfo& want = check(i, t);
  claim(i);
  const uint64_t bytes = tensor_bytes(want), at = at_[i];
  if (t.dtype() == want.dtype && t.file_span()) {
    // Unchanged bytes from a file go file to file in the kernel, at the speed of a plain copy.
    out_->copy(t.file_span()->file, t.file_span()->offset, bytes, at);
  } else if (t.segments() > 1) {
    const uint64_t count = t.numel() / t.segments(), part_bytes = bytes / t.segments();
    std::vector<Part> parts;
    for (uint64_t s = 0; s < t.segments(); ++s) parts.push_back({&t, s * count, at + s * part_bytes, want.dtype});
    write_interleaved(parts, count);
  } else {
    write_converted(t, want.dtype, [&](std::span<const std::byte> piece, uint64_t first) {
      out_->write(piece, at + first * dtype_info(want.dtype).block_bytes);
    }, at);
  }
}

void SafetensorsWriter::write_group(size_t first, std::span<const Tensor> tensors) {
  std::vector<Part> parts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& want = check(first + i, tensors[i]);
    if (!tensors[i].is_computed() || tensors[i].group() != tensors[0].group() || tensors[i].numel() != tensors[0].numel())
      throw std::logic_error(path_.string() + ": '" + want.name + "' is not of the group written with it");
    parts.push_back({&tensors[i], 0, at_[first + i], want.dtype});
  }
  for (size_t i = 0; i < tensors.size(); ++i) claim(first + i);
  write_interleaved(parts, tensors.empty() ? 0 : tensors[0].numel());
}

void SafetensorsWriter::write_interleaved(const std::vector<Part>& parts, uint64_t count) {
  // A range of each part in turn: about 16 MB of f32 across the parts, at least 256K elements, a
  // multiple of 4096. Each part's first range is longer by its page_cut, so that its later ones
  // start on pages of the file: OutputFile writes them past the page cache without assembling.
  const uint64_t piece = std::max<uint64_t>(uint64_t(1) << 18, (uint64_t(16) << 20) / (sizeof(float) * parts.size())) /
                         OutputFile::kPage * OutputFile::kPage;
  std::vector<uint64_t> done(parts.size(), 0);  // per part: elements written
  for (bool more = count > 0; more;) {
    more = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      const Part& p = parts[i];
      if (done[i] == count) continue;
      const uint64_t element_bytes = dtype_info(p.dtype).block_bytes;  // output types are plain
      const uint64_t lead = done[i] == 0 ? page_cut(p.at, element_bytes) : 0;
      const uint64_t from = done[i], to = std::min(count, from + lead + piece);
      write_computed_range(*p.tensor, p.dtype, p.first + from, to - from,
                           [&](std::span<const std::byte> bytes, uint64_t element) {
                             out_->write(bytes, p.at + (element - p.first) * element_bytes);
                           }, p.at + from * element_bytes);
      done[i] = to;
      more = more || to < count;
    }
  }
}

void SafetensorsWriter::finish() {
  if (fd_ < 0) throw std::logic_error(path_.string() + ": finished twice");
  if (count_ != tensors_.size())
    throw std::logic_error(path_.string() + ": finished after " + std::to_string(count_) + " of " +
                           std::to_string(tensors_.size()) + " tensors");
  out_->drain();
  out_.reset();
  // fsync before the caller renames the output into place, so a crash cannot leave a complete
  // name over incomplete data.
  if (::fsync(fd_) != 0) throw InputError(path_, std::string("cannot flush: ") + std::strerror(errno));
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw InputError(path_, std::string("cannot close: ") + std::strerror(errno));
}

SafetensorsSizer::SafetensorsSizer(const std::map<std::string, std::string>& metadata)
    : json_bytes_(header_start(metadata).size()), has_members_(!metadata.empty()) {}

uint64_t SafetensorsSizer::file_size_with(const TensorInfo& t) const {
  uint64_t json_bytes = json_bytes_ + (has_members_ ? 1 : 0) + entry_text(t, data_bytes_).size();
  return 8 + round_up_to_8(json_bytes + 1) + data_bytes_ + tensor_bytes(t);
}

void SafetensorsSizer::add(const TensorInfo& t) {
  json_bytes_ += (has_members_ ? 1 : 0) + entry_text(t, data_bytes_).size();
  data_bytes_ += tensor_bytes(t);
  has_members_ = true;
}

uint64_t SafetensorsSizer::header_bytes() const { return 8 + round_up_to_8(json_bytes_ + 1); }

uint64_t safetensors_header_bytes(const std::vector<TensorInfo>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  SafetensorsSizer sizer(metadata);
  for (const TensorInfo& t : tensors) sizer.add(t);
  return sizer.header_bytes();
}

}  // namespace upcycle
