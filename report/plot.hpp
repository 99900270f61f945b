// Plots for reports, written as standalone SVG 1.1 documents (no fonts, scripts or files
// outside the document). The same input gives the same bytes: every number is printed with a
// fixed precision and nothing depends on time or addresses.
//
// Coordinates are SVG pixels: x to the right, y downwards, (0, 0) the top-left corner.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace upcycle {

// One line of a line plot: the points (x[i], y[i]). A point with a NaN or infinite coordinate,
// or a non-positive one on a log axis, is skipped and breaks the line there (so is one beyond
// ±1e300, or below 1e-300 on a log axis); a stretch of one point is drawn as a dot. x and y
// must have the same length.
struct Series {
  std::string name;  // its legend entry; a series with an empty name has none
  std::vector<double> x, y;
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // coloured series_colour(0), series_colour(1), ... in order
  bool log_x = false, log_y = false;
  bool markers = false;  // a dot at each point
};

// Where a line plot draws its data: a fixed rectangle, whatever the data. The axes' ranges
// are the data's extents widened to tick values (to decades on a log axis), so the lowest tick
// sits on the rectangle's left (bottom) edge and the highest on its right (top) edge. The legend
// lies to the right of the rectangle; the document is kLinePlotHeight high and as wide as the
// legend needs.
struct PlotArea {
  double left, top, width, height;
};
inline constexpr PlotArea kLinePlotArea{80, 40, 480, 300};
inline constexpr double kLinePlotHeight = 400;

// The whole SVG document; a plot without drawable points says "no data". Throws
// std::invalid_argument when a series' x and y differ in length.
std::string line_plot_svg(const LinePlot& p);

// A matrix of values as coloured cells, row 0 at the top, column 0 at the left.
struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> row_names, col_names;  // empty: the rows (columns) are numbered from 0
  std::vector<std::vector<double>> values;        // [rows][cols]; NaN or infinite cells are grey
  bool annotate = true;  // print each value (%.2f) in its cell when every value fits its cell
};

// The whole SVG document: the cells, their labels and a colour bar from the smallest finite
// value (heat_colour(0)) to the largest (heat_colour(1)). The cells are <rect class="cell">
// elements in row-major order. Throws std::invalid_argument on ragged values or name lists of
// the wrong length.
std::string heatmap_svg(const Heatmap& h);

// Several heatmaps side by side under one title, each with its own title and labels, sharing
// one colour scale (the extremes over all of them) and one colour bar; e.g. a distance matrix
// before and after a stage.
std::string heatmaps_svg(const std::vector<Heatmap>& maps, const std::string& title);

// The colour of series i: the 10 "tab10" colours as "#rrggbb", cycling after the tenth.
std::string_view series_colour(size_t i);

// The heatmap colour scale (viridis) at t in [0, 1] (clamped) as "#rrggbb": "#440154" at 0,
// "#fde725" at 1.
std::string heat_colour(double t);

}  // namespace upcycle
