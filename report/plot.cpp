#include "report/plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace upcycle {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kGlyph = 0.55;  // the average width of a sans-serif glyph in ems, for layout

// ---- text and numbers ----------------------------------------------------------------------

// s with XML's five special characters escaped and control characters (invalid in XML 1.0)
// replaced by spaces.
std::string esc(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
    }
  }
  return out;
}

// The number of characters in UTF-8 text (bytes that don't continue a character).
double glyphs(std::string_view s) {
  return double(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// The estimated width of text in pixels at a font size.
double text_width(std::string_view s, double size, bool bold = false) {
  return glyphs(s) * size * (bold ? 0.62 : kGlyph);
}

// A decimal number without trailing zeros after the point ("2.50" -> "2.5", "3.00" -> "3").
std::string trim(std::string s) {
  if (s.find('.') == std::string::npos) return s;
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s;
}

// A pixel coordinate or length: at most 2 decimals, never "-0".
std::string px(double v) {
  if (std::abs(v) < 0.005) v = 0;
  return trim(fmt::format("{:.2f}", v));
}

double pow10(int e) { return e >= 0 ? std::pow(10.0, e) : 1 / std::pow(10.0, -e); }

// A compact tick label: v with the decimals that steps of `res` need; thousands and above with
// a suffix (1.5k, 20M, 3G, 1T), magnitudes below 1e-3 or from 1e15 in e-notation (5e-5).
std::string tick_label(double v, double res) {
  const auto fixed = [](double x, double r) {
    const int decimals = std::clamp(int(std::ceil(-std::log10(r) - 1e-9)), 0, 9);
    return trim(fmt::format("{:.{}f}", x, decimals));
  };
  const double a = std::abs(v);
  if (a == 0) return "0";
  if (a < 1e-3 || a >= 1e15) {
    const int e = int(std::floor(std::log10(a)));
    return fixed(v / pow10(e), res / pow10(e)) + "e" + std::to_string(e);
  }
  static constexpr std::array<std::pair<double, const char*>, 4> kSuffixes{
      {{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}}};
  for (const auto& [unit, suffix] : kSuffixes)
    if (a >= unit) return fixed(v / unit, res / unit) + suffix;
  return fixed(v, res);
}

// A value in a heatmap's tooltip or colour bar: 4 significant digits.
std::string value_label(double v) { return fmt::format("{:.4g}", v); }

// ---- SVG elements --------------------------------------------------------------------------

struct TextStyle {
  double size = 12;
  std::string_view anchor = "middle";  // start | middle | end, along the text's direction
  double rotate = 0;                   // degrees about the anchor point; -90 reads upwards
  std::string_view fill = "#222222";
  bool bold = false;
};

// Text whose baseline starts, centres or ends (per the anchor) at (x, y); nothing for "".
std::string text(double x, double y, std::string_view s, const TextStyle& st = {}) {
  if (s.empty()) return "";
  const std::string place = st.rotate == 0
                                ? fmt::format("x=\"{}\" y=\"{}\"", px(x), px(y))
                                : fmt::format("transform=\"translate({},{}) rotate({})\"", px(x), px(y), px(st.rotate));
  return fmt::format("<text {} font-size=\"{}\" text-anchor=\"{}\" fill=\"{}\"{}>{}</text>\n", place, px(st.size),
                     st.anchor, st.fill, st.bold ? " font-weight=\"bold\"" : "", esc(s));
}

std::string line(double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1) {
  return fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>\n", px(x1),
                     px(y1), px(x2), px(y2), stroke, px(width));
}

std::string circle(double x, double y, double r, std::string_view fill) {
  return fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\"/>\n", px(x), px(y), px(r), fill);
}

// The document around `body`: a white page of w × h pixels (rounded up), sans-serif text.
std::string document(double w, double h, std::string_view title, const std::string& body) {
  w = std::ceil(w), h = std::ceil(h);
  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\">\n",
      px(w), px(h));
  if (!title.empty()) out += "<title>" + esc(title) + "</title>\n";
  out += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", px(w), px(h));
  return out + body + "</svg>\n";
}

// ---- axes ----------------------------------------------------------------------------------

// A tick step m × 10^e with m in {1, 2, 5}; at(k) is k steps, rounded once (so 3 × 0.2 is 0.6).
struct Step {
  int m, e;
  double at(double k) const { return e >= 0 ? k * m * pow10(e) : k * m / pow10(-e); }
};

// The smallest 1-2-5 step that cuts `span` into at most 5 intervals.
Step nice_step(double span) {
  const int e = int(std::floor(std::log10(span / 5)));
  const double norm = span / 5 / pow10(e);  // in [1, 10), up to rounding
  if (norm > 5 + 1e-9) return {1, e + 1};
  return {norm > 2 + 1e-9 ? 5 : norm > 1 + 1e-9 ? 2 : 1, e};
}

// One axis of a line plot: the range [lo, hi] (positive on a log axis) and its ticks.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  std::vector<std::string> labels;

  // Where v lies along the axis: 0 at lo, 1 at hi.
  double frac(double v) const {
    return log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
  }
};

// A linear axis over [min, max] widened to whole steps; equal ends are first padded apart.
Axis linear_axis(double min, double max) {
  if (min == max) {
    const double pad = min != 0 ? std::abs(min) / 10 : 1;
    min -= pad, max += pad;
  }
  const Step step = nice_step(max - min);
  const double k0 = std::floor(min / step.at(1) + 1e-9), k1 = std::ceil(max / step.at(1) - 1e-9);
  Axis a;
  a.lo = step.at(k0), a.hi = step.at(k1);
  for (int i = 0; i <= std::min(k1 - k0, 20.0); ++i) {  // at most 6 ticks, bounded against rounding
    a.ticks.push_back(step.at(k0 + i));
    a.labels.push_back(tick_label(a.ticks.back(), step.at(1)));
  }
  return a;
}

// A log axis over [min, max] (0 < min <= max) widened to decades, at least one. Ticks at the
// decades (every other one or sparser past 8 decades), plus 2 and 5 times them over 3 or fewer.
Axis log_axis(double min, double max) {
  int d0 = int(std::floor(std::log10(min) + 1e-9)), d1 = int(std::ceil(std::log10(max) - 1e-9));
  if (d0 == d1) --d0, ++d1;
  const int every = (d1 - d0 + 7) / 8;
  d1 = d0 + (d1 - d0 + every - 1) / every * every;
  Axis a;
  a.log = true;
  a.lo = pow10(d0), a.hi = pow10(d1);
  for (int d = d0; d <= d1; d += every) {
    for (const int m : {1, 2, 5}) {
      if (m > 1 && (d == d1 || d1 - d0 > 3)) continue;
      a.ticks.push_back(m * pow10(d));
      a.labels.push_back(tick_label(a.ticks.back(), a.ticks.back()));
    }
  }
  return a;
}

Axis make_axis(double min, double max, bool log) { return log ? log_axis(min, max) : linear_axis(min, max); }

// ---- line plots ----------------------------------------------------------------------------

constexpr PlotArea A = kLinePlotArea;

// Whether v can be placed on an axis: finite and, so that ranges and their logs stay finite, of
// a magnitude below 1e300 and, on a log axis, above 1e-300 and positive.
bool drawable(double v, bool log) { return std::abs(v) < 1e300 && (!log || v > 1e-300); }

// A series' drawable points, (x, y) in data units, as stretches of consecutive points.
using Run = std::vector<std::pair<double, double>>;
std::vector<Run> runs(const Series& s, bool log_x, bool log_y) {
  if (s.x.size() != s.y.size())
    throw std::invalid_argument(
        fmt::format("plot series '{}': {} x values but {} y values", s.name, s.x.size(), s.y.size()));
  std::vector<Run> out(1);
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (drawable(s.x[i], log_x) && drawable(s.y[i], log_y))
      out.back().emplace_back(s.x[i], s.y[i]);
    else if (!out.back().empty())
      out.emplace_back();
  }
  if (out.back().empty()) out.pop_back();
  return out;
}

// Grid lines, the frame, and the ticks with their labels.
std::string axes_svg(const Axis& ax, const Axis& ay) {
  std::string out;
  for (size_t i = 0; i < ax.ticks.size(); ++i) {
    const double x = A.left + ax.frac(ax.ticks[i]) * A.width, bottom = A.top + A.height;
    out += line(x, A.top, x, bottom, "#e6e6e6") + line(x, bottom, x, bottom + 5, "#444444");
    out += text(x, bottom + 18, ax.labels[i]);
  }
  for (size_t i = 0; i < ay.ticks.size(); ++i) {
    const double y = A.top + (1 - ay.frac(ay.ticks[i])) * A.height;
    out += line(A.left, y, A.left + A.width, y, "#e6e6e6") + line(A.left - 5, y, A.left, y, "#444444");
    out += text(A.left - 8, y + 4, ay.labels[i], {.anchor = "end"});
  }
  return out + fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444444\"/>\n",
                           px(A.left), px(A.top), px(A.width), px(A.height));
}

// One series: a polyline per stretch of two or more points, a dot for a lone point and, with
// markers, a dot at every point.
std::string series_svg(const std::vector<Run>& rs, std::string_view colour, bool markers, const Axis& ax,
                       const Axis& ay) {
  std::string out;
  const auto at = [&](const std::pair<double, double>& p) {
    return std::pair{A.left + ax.frac(p.first) * A.width, A.top + (1 - ay.frac(p.second)) * A.height};
  };
  for (const Run& r : rs) {
    if (r.size() < 2) continue;
    std::string points;
    for (const auto& p : r) {
      const auto [x, y] = at(p);
      points += (points.empty() ? "" : " ") + px(x) + "," + px(y);
    }
    out += fmt::format(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"/>\n",
        points, colour);
  }
  for (const Run& r : rs) {
    if (!markers && r.size() > 1) continue;
    for (const auto& p : r) {
      const auto [x, y] = at(p);
      out += circle(x, y, 3, colour);
    }
  }
  return out;
}

// The legend's width: a swatch and the longest name; 0 when no series has a name.
double legend_width(const std::vector<Series>& series) {
  double widest = 0;
  for (const Series& s : series) widest = std::max(widest, text_width(s.name, 12));
  return widest == 0 ? 0 : 50 + widest;
}

// The legend, right of the plot area: per named series a swatch in its colour and its name.
std::string legend_svg(const std::vector<Series>& series, bool markers) {
  std::string out;
  const double x = A.left + A.width + 24;
  double y = A.top + 10;
  for (size_t i = 0; i < series.size(); ++i) {
    if (series[i].name.empty()) continue;
    out += line(x, y, x + 20, y, series_colour(i), 2);
    if (markers) out += circle(x + 10, y, 3, series_colour(i));
    out += text(x + 26, y + 4, series[i].name, {.anchor = "start"});
    y += 18;
  }
  return out;
}

// ---- heatmaps ------------------------------------------------------------------------------

// Viridis at 10 evenly spaced points (R's viridis(10)); heat_colour interpolates linearly.
constexpr std::array<std::array<int, 3>, 10> kViridis{{{0x44, 0x01, 0x54},
                                                       {0x48, 0x28, 0x78},
                                                       {0x3e, 0x4a, 0x89},
                                                       {0x31, 0x68, 0x8e},
                                                       {0x26, 0x82, 0x8e},
                                                       {0x1f, 0x9e, 0x89},
                                                       {0x35, 0xb7, 0x79},
                                                       {0x6d, 0xcd, 0x59},
                                                       {0xb4, 0xde, 0x2c},
                                                       {0xfd, 0xe7, 0x25}}};
constexpr std::string_view kMissing = "#bbbbbb";  // NaN and infinite cells

std::array<int, 3> heat_rgb(double t) {
  const double pos = std::clamp(std::isnan(t) ? 0.0 : t, 0.0, 1.0) * (kViridis.size() - 1);
  const size_t i = std::min(size_t(pos), kViridis.size() - 2);
  std::array<int, 3> rgb{};
  for (size_t c = 0; c < 3; ++c)
    rgb[c] = int(std::lround(kViridis[i][c] + (kViridis[i + 1][c] - kViridis[i][c]) * (pos - double(i))));
  return rgb;
}

// Dark or light text, whichever contrasts more with the background (WCAG relative luminance).
std::string_view text_colour_on(const std::array<int, 3>& rgb) {
  const auto linear = [](int c) {
    const double s = c / 255.0;
    return s <= 0.04045 ? s / 12.92 : std::pow((s + 0.055) / 1.055, 2.4);
  };
  const double lum = 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2]);
  return lum > 0.179 ? "#000000" : "#ffffff";
}

// The colour scale: the finite extremes over the maps; NaN when there is no finite value.
struct Scale {
  double lo = kNaN, hi = kNaN;
  double t(double v) const { return hi > lo ? (v - lo) / (hi - lo) : 0.5; }
};

Scale scale_of(const std::vector<Heatmap>& maps) {
  Scale s;
  for (const Heatmap& h : maps)
    for (const auto& row : h.values)
      for (const double v : row) {
        if (!std::isfinite(v)) continue;
        s.lo = std::isnan(s.lo) ? v : std::min(s.lo, v);
        s.hi = std::isnan(s.hi) ? v : std::max(s.hi, v);
      }
  return s;
}

// Names for n rows (columns): the given ones, or 0 .. n-1 when none are given.
std::vector<std::string> names_or_numbers(const std::vector<std::string>& names, size_t n, std::string_view what,
                                          std::string_view title) {
  if (names.empty()) {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) out.push_back(std::to_string(i));
    return out;
  }
  if (names.size() != n)
    throw std::invalid_argument(
        fmt::format("heatmap '{}': {} {} names for {} {}s", title, names.size(), what, n, what));
  return names;
}

double longest(const std::vector<std::string>& names) {
  double n = 0;
  for (const auto& s : names) n = std::max(n, glyphs(s));
  return n;
}

constexpr double kLabelFont = 11, kCellFont = 10;

// One heatmap's layout. Offsets are from the panel's top-left corner: from the top, its title,
// the grid (row names left of it, the y label left of those), the column names, the x label.
struct Panel {
  const Heatmap* map = nullptr;
  std::vector<std::string> rows, cols;
  double cell = 0;
  double grid_x = 0, grid_y = 0;  // the grid's top-left corner
  double width = 0, height = 0;
  bool vertical_cols = false;  // column names read upwards when they don't fit a cell's width
  double col_band = 0;         // the height of the column names
  bool annotate = false;
  bool titled = false;     // the map's title above the grid
  size_t label_every = 1;  // label every n-th row (and column when they read upwards)
};

Panel layout(const Heatmap& h, double cell, bool titled) {
  Panel p;
  p.map = &h, p.cell = cell;
  const size_t n_cols = h.values.empty() ? 0 : h.values[0].size();
  for (const auto& row : h.values)
    if (row.size() != n_cols)
      throw std::invalid_argument(fmt::format("heatmap '{}': rows of {} and {} values", h.title, n_cols, row.size()));
  p.rows = names_or_numbers(h.row_names, h.values.size(), "row", h.title);
  p.cols = names_or_numbers(h.col_names, n_cols, "column", h.title);
  const double glyph = kGlyph * kLabelFont, grid_w = double(n_cols) * cell;
  const double half_title = titled ? text_width(h.title, 13, true) / 2 : 0;  // centred over the grid
  p.titled = titled;
  p.label_every = size_t(std::ceil((kLabelFont + 1) / cell));
  const double names_w = (h.y_label.empty() ? 0 : 20) + longest(p.rows) * glyph + 6;
  p.grid_x = std::ceil(std::max(names_w, half_title - grid_w / 2));  // whole pixels: no seams between cells
  p.grid_y = titled ? 22 : 0;
  p.vertical_cols = longest(p.cols) * glyph + 4 > cell;
  p.col_band = p.vertical_cols ? longest(p.cols) * glyph + 8 : 18;
  p.width = p.grid_x + std::max(grid_w, grid_w / 2 + half_title);
  p.height = p.grid_y + double(p.rows.size()) * cell + p.col_band + (h.x_label.empty() ? 0 : 20);
  double widest = 0;
  for (const auto& row : h.values)
    for (const double v : row)
      if (std::isfinite(v)) widest = std::max(widest, double(fmt::format("{:.2f}", v).size()));
  p.annotate = h.annotate && widest * kGlyph * kCellFont + 4 <= cell && 2 * kCellFont <= cell;
  return p;
}

// The cells (with a tooltip each), their values, and the labels of a panel placed at (x0, y0).
std::string panel_svg(const Panel& p, double x0, double y0, const Scale& scale) {
  const Heatmap& h = *p.map;
  const double gx = x0 + p.grid_x, gy = y0 + p.grid_y, c = p.cell;
  const double gw = double(p.cols.size()) * c, gh = double(p.rows.size()) * c;
  std::string out;
  if (p.titled) out += text(gx + gw / 2, y0 + 14, h.title, {.size = 13, .bold = true});
  for (size_t r = 0; r < p.rows.size(); ++r) {
    for (size_t k = 0; k < p.cols.size(); ++k) {
      const double v = h.values[r][k], x = gx + double(k) * c, y = gy + double(r) * c;
      const auto rgb = heat_rgb(scale.t(v));
      const std::string fill =
          std::isfinite(v) ? fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]) : std::string(kMissing);
      const std::string tip = esc(p.rows[r]) + " / " + esc(p.cols[k]) + ": " + value_label(v);
      out += fmt::format("<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
                         px(x), px(y), px(c), px(c), fill, tip);
      if (p.annotate && std::isfinite(v))
        out += text(x + c / 2, y + c / 2 + kCellFont * 0.35, fmt::format("{:.2f}", v),
                    {.size = kCellFont, .fill = text_colour_on(rgb)});
    }
  }
  for (size_t r = 0; r < p.rows.size(); r += p.label_every)
    out +=
        text(gx - 4, gy + (double(r) + 0.5) * c + kLabelFont * 0.35, p.rows[r], {.size = kLabelFont, .anchor = "end"});
  for (size_t k = 0; k < p.cols.size(); k += p.vertical_cols ? p.label_every : 1) {
    const double x = gx + (double(k) + 0.5) * c;
    out += p.vertical_cols ? text(x + kLabelFont * 0.35, gy + gh + 4, p.cols[k],
                                  {.size = kLabelFont, .anchor = "end", .rotate = -90})
                           : text(x, gy + gh + 14, p.cols[k], {.size = kLabelFont});
  }
  if (!h.x_label.empty()) out += text(gx + gw / 2, gy + gh + p.col_band + 14, h.x_label);
  if (!h.y_label.empty()) out += text(x0 + 12, gy + gh / 2, h.y_label, {.rotate = -90});
  return out;
}

// A vertical colour bar of the given height at (x, y): the scale's low end at the bottom, with
// the extremes written beside it.
std::string colour_bar_svg(double x, double y, double height, const Scale& s) {
  std::string out = "<defs><linearGradient id=\"heat\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n";
  for (size_t i = 0; i < kViridis.size(); ++i)
    out += fmt::format("<stop offset=\"{}\" stop-color=\"{}\"/>\n",
                       trim(fmt::format("{:.4f}", double(i) / (kViridis.size() - 1))),
                       heat_colour(double(i) / (kViridis.size() - 1)));
  out += "</linearGradient></defs>\n";
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"{}\" fill=\"url(#heat)\" stroke=\"#444444\"/>\n",
                     px(x), px(y), px(height));
  out += text(x + 18, y + 8, value_label(s.hi), {.size = kLabelFont, .anchor = "start"});
  return out + text(x + 18, y + height, value_label(s.lo), {.size = kLabelFont, .anchor = "start"});
}

// Heatmaps side by side with square cells of one size, the document title above them and, when
// some value is finite, one colour bar to their right.
std::string heatmaps_document(const std::vector<Heatmap>& maps, const std::string& title, bool titled) {
  size_t most = 0;
  for (const Heatmap& h : maps) most = std::max({most, h.values.size(), h.values.empty() ? 0 : h.values[0].size()});
  const double cell = std::clamp(std::floor(360.0 / double(std::max<size_t>(most, 1))), 4.0, 40.0);
  const double margin = 12, top = title.empty() ? margin : 36;
  std::vector<Panel> panels;
  for (const Heatmap& h : maps) panels.push_back(layout(h, cell, titled));
  const Scale scale = scale_of(maps);
  std::string body;
  double x = margin, height = 0, grid_h = 0;
  for (const Panel& p : panels) {
    body += panel_svg(p, x, top, scale);
    x += p.width + 28;
    height = std::max(height, p.height);
    grid_h = std::max(grid_h, double(p.rows.size()) * cell);
  }
  if (!std::isnan(scale.lo)) {
    const double bar_h = std::max(grid_h, 60.0);
    body += colour_bar_svg(x, top + (titled ? 22 : 0), bar_h, scale);
    x += 14 + 18 + kGlyph * kLabelFont * std::max(glyphs(value_label(scale.lo)), glyphs(value_label(scale.hi))) + 28;
    height = std::max(height, (titled ? 22 : 0) + bar_h + 4);
  }
  if (most == 0) {
    body += text(x + 60, top + 30, "no data", {.size = 14, .fill = "#888888"});
    x += 120, height = std::max(height, 50.0);
  }
  const double width = std::max({x - 28 + margin, text_width(title, 14, true) + 2 * margin, 200.0});
  body += text(width / 2, 22, title, {.size = 14, .bold = true});
  return document(width, top + height + margin, title, body);
}

}  // namespace

std::string_view series_colour(size_t i) {
  static constexpr std::array<std::string_view, 10> kTab10{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kTab10[i % kTab10.size()];
}

std::string heat_colour(double t) {
  const auto rgb = heat_rgb(t);
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

std::string line_plot_svg(const LinePlot& p) {
  std::vector<std::vector<Run>> all;
  double x0 = kNaN, x1 = kNaN, y0 = kNaN, y1 = kNaN;  // the data's extents
  for (const Series& s : p.series) {
    all.push_back(runs(s, p.log_x, p.log_y));
    for (const Run& r : all.back())
      for (const auto& [x, y] : r) {
        x0 = std::isnan(x0) ? x : std::min(x0, x), x1 = std::isnan(x1) ? x : std::max(x1, x);
        y0 = std::isnan(y0) ? y : std::min(y0, y), y1 = std::isnan(y1) ? y : std::max(y1, y);
      }
  }
  const bool empty = std::isnan(x0);
  const Axis ax = empty ? make_axis(1, 10, p.log_x) : make_axis(x0, x1, p.log_x);
  const Axis ay = empty ? make_axis(1, 10, p.log_y) : make_axis(y0, y1, p.log_y);
  std::string body = axes_svg(ax, ay);
  for (size_t i = 0; i < all.size(); ++i) body += series_svg(all[i], series_colour(i), p.markers, ax, ay);
  if (empty) body += text(A.left + A.width / 2, A.top + A.height / 2, "no data", {.size = 14, .fill = "#888888"});
  body += legend_svg(p.series, p.markers);
  body += text(A.left + A.width / 2, 24, p.title, {.size = 14, .bold = true});
  body += text(A.left + A.width / 2, A.top + A.height + 44, p.x_label);
  body += text(18, A.top + A.height / 2, p.y_label, {.rotate = -90});
  return document(A.left + A.width + 24 + legend_width(p.series), kLinePlotHeight, p.title, body);
}

std::string heatmap_svg(const Heatmap& h) { return heatmaps_document({h}, h.title, false); }

std::string heatmaps_svg(const std::vector<Heatmap>& maps, const std::string& title) {
  return heatmaps_document(maps, title, true);
}

}  // namespace upcycle
