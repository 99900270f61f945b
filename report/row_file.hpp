// A result row as a JSON file of its own: what a sweep cell leaves when it is done, so that a
// report can gather the cells that processes run apart (`sweep --cell`, then `sweep --report`).
#pragma once
#include <filesystem>

#include "report/repeats.hpp"

namespace upcycle {

// Writes the row to `file` under a temporary name, renamed when complete. Numbers read back
// exactly (NaN as null).
void write_row_file(const std::filesystem::path& file, const RepeatRow& row);

// The row write_row_file wrote; InputError naming the file and the key for anything else.
RepeatRow read_row_file(const std::filesystem::path& file);

}  // namespace upcycle
