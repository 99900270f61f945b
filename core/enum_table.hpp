// Tables with a row per enumerator (tensor roles, merge methods), looked up by index.
#pragma once
#include <cstddef>

namespace upcycle {

// Whether `rows` holds one row per enumerator up to `last`, row i's `key` being enumerator i:
// for a static_assert beside the table, so that rows[size_t(e)] is e's row.
template <class Row, size_t N, class Enum>
constexpr bool one_row_per_enumerator(const Row (&rows)[N], Enum Row::*key, Enum last) {
  if (N != size_t(last) + 1) return false;
  for (size_t i = 0; i < N; ++i)
    if (rows[i].*key != Enum(i)) return false;
  return true;
}

}  // namespace upcycle
